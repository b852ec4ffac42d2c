package api

import (
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"testing"
)

// fieldStatus classifies every v1 config field ParseConfig knows: either
// nydusd implements it (docs/nydusd.md says how), or setting it to a
// non-default value makes Unimplemented name it (with the value that
// does so here). A field added to structKeys without a status fails the
// audit, so nothing new is silently accepted.
var fieldStatus = map[string]string{
	"device": "section", "device.id": "implemented", "device.backend": "section",
	"device.backend.type": "implemented", "device.backend.config": "section",
	"device.backend.config.host": "implemented", "device.backend.config.repo": "implemented",
	"device.backend.config.scheme": "implemented", "device.backend.config.auth": "implemented",
	"device.backend.config.registry_token": "implemented", "device.backend.config.skip_verify": "implemented",
	"device.backend.config.timeout": "implemented", "device.backend.config.connect_timeout": "implemented",
	"device.backend.config.retry_limit":                        "implemented",
	"device.backend.config.ca_cert_files":                      "implemented",
	"device.external_backends":                                 "device:" + `{"external_backends": [{"type": "modelfs", "patch": {}, "config": {}}]}`,
	"device.cache.validate":                                    "implemented",
	"device.cache.config.enable_encryption":                    "refused",
	"device.cache.config.enable_convergent_encryption":         "refused",
	"device.cache.config.encryption_key":                       "refused",
	"device.backend.config.blob_url_scheme":                    "implemented",
	"device.backend.config.blob_redirected_host":               "implemented",
	"device.backend.config.proxy":                              "section",
	"device.backend.config.proxy.url":                          "implemented",
	"device.backend.config.proxy.ping_url":                     `{"proxy": {"ping_url": "http://127.0.0.1:40901/server/ping"}}`,
	"device.backend.config.proxy.fallback":                     "implemented",
	"device.backend.config.proxy.check_interval":               `{"proxy": {"check_interval": 5}}`,
	"device.backend.config.proxy.check_pause_elapsed":          `{"proxy": {"check_pause_elapsed": 60}}`,
	"device.backend.config.proxy.use_http":                     `{"proxy": {"use_http": true}}`,
	"device.backend.config.proxy.dragonfly_scheduler_endpoint": `{"proxy": {"url": "http://127.0.0.1:65001", "dragonfly_scheduler_endpoint": "http://s"}}`,
	"device.backend.config.mirrors":                            "section",
	"device.backend.config.mirrors.host":                       "implemented",
	"device.backend.config.mirrors.ping_url":                   "implemented",
	"device.backend.config.mirrors.headers":                    "implemented",
	"device.backend.config.mirrors.auth_through":               "implemented",
	"device.backend.config.mirrors.health_check_interval":      "implemented",
	"device.backend.config.mirrors.failure_limit":              "implemented",
	"device.backend.config.mirrors.health_check_pause_elapsed": "implemented",
	"device.backend.config.dir":                                "implemented",
	"device.backend.config.blob_file":                          "implemented",
	"device.backend.config.alt_dirs":                           "implemented",
	"device.backend.config.readahead":                          `{"readahead": true}`,
	"device.backend.config.addr":                               "http-proxy backend: refused by type",
	"device.backend.config.path":                               "http-proxy backend: refused by type",
	"device.cache":                                             "section", "device.cache.type": "implemented",
	"device.cache.compressed": "cache:" + `{"compressed": true}`, "device.cache.config": "section",
	"device.cache.config.work_dir":            "implemented",
	"device.cache.config.disable_indexed_map": "cache:" + `{"config": {"disable_indexed_map": true}}`,
	"mode":            "top:" + `{"mode": "mmap"}`,
	"digest_validate": "implemented", "iostats_files": "implemented",
	"enable_xattr": "top:" + `{"enable_xattr": false}`, "access_pattern": "implemented",
	"latest_read_files": "top:" + `{"latest_read_files": true}`, "amplify_io": "implemented",
	"fs_prefetch": "section", "fs_prefetch.enable": "implemented", "fs_prefetch.threads_count": "implemented",
	"fs_prefetch.merging_size":   "implemented",
	"fs_prefetch.bandwidth_rate": "implemented", "fs_prefetch.prefetch_all": "implemented",
}

func TestConfigFieldAudit(t *testing.T) {
	known := structKeys()
	sort.Strings(known)
	for _, k := range known {
		st, ok := fieldStatus[k]
		if !ok {
			t.Errorf("config field %s has no status: implement it (and document it) or make Unimplemented warn about it", k)
			continue
		}
		var cfg string
		switch {
		case strings.HasPrefix(st, "{"):
			cfg = `{"device": {"backend": {"type": "registry", "config": ` + st + `}}}`
		case strings.HasPrefix(st, "cache:"):
			cfg = `{"device": {"backend": {"type": "localfs", "config": {}}, "cache": ` + strings.TrimPrefix(st, "cache:") + `}}`
		case strings.HasPrefix(st, "device:"):
			var dev map[string]any
			json.Unmarshal([]byte(strings.TrimPrefix(st, "device:")), &dev)
			dev["backend"] = map[string]any{"type": "localfs"}
			b, _ := json.Marshal(map[string]any{"device": dev, "enable_xattr": true})
			cfg = string(b)
		case strings.HasPrefix(st, "top:"):
			var top map[string]any
			json.Unmarshal([]byte(strings.TrimPrefix(st, "top:")), &top)
			top["device"] = map[string]any{"backend": map[string]any{"type": "localfs"}}
			b, _ := json.Marshal(top)
			cfg = string(b)
		default:
			continue
		}
		c, unknown, err := ParseConfig([]byte(cfg))
		if err != nil || len(unknown) > 0 {
			t.Errorf("%s: %s: %v, unknown %v", k, cfg, err, unknown)
			continue
		}
		found := false
		for _, u := range c.Unimplemented() {
			found = found || strings.HasPrefix(u, k+": ")
		}
		if !found {
			t.Errorf("%s set (%s) is accepted silently: Unimplemented gives %q", k, cfg, c.Unimplemented())
		}
	}
	for k := range fieldStatus {
		if !slices.Contains(known, k) {
			t.Errorf("fieldStatus lists %s, which ParseConfig does not know", k)
		}
	}
	// What nydus-snapshotter writes by default warns about nothing.
	snap := `{"device":{"backend":{"type":"registry","config":{"host":"h","repo":"r","scheme":"http","proxy":{"fallback":false}}},"cache":{"type":"blobcache","config":{"work_dir":"/w"}}},"mode":"direct","digest_validate":false,"iostats_files":true,"enable_xattr":true,"fs_prefetch":{"enable":true,"threads_count":4,"prefetch_all":false}}`
	c, _, err := ParseConfig([]byte(snap))
	if err != nil || len(c.Unimplemented()) != 0 {
		t.Fatalf("snapshotter config: %v, %q", err, c.Unimplemented())
	}
	// A mirror's fields are known in every element of the list; its
	// headers are data; a field upstream does not define is reported.
	mir := `{"device":{"backend":{"type":"registry","config":{"host":"h","repo":"r","mirrors":[
		{"host":"http://m1","headers":{"X-Dragonfly-Registry":"https://h"},"auth_through":true,"failure_limit":3},
		{"host":"http://m2","health_check_interval":2,"bogus":1}]}}},"enable_xattr":true}`
	c, unknown, err := ParseConfig([]byte(mir))
	if err != nil || !slices.Equal(unknown, []string{"device.backend.config.mirrors.bogus"}) || len(c.Unimplemented()) != 0 {
		t.Fatalf("mirrors: %v, unknown %q, unimplemented %q", err, unknown, c.Unimplemented())
	}
	if m := c.Device.Backend.Config.Mirrors; len(m) != 2 || m[0].Headers["X-Dragonfly-Registry"] != "https://h" || !m[0].AuthThrough || m[0].FailureLimit != 3 || m[1].HealthCheckInterval != 2 {
		t.Fatalf("mirrors parsed as %+v", m)
	}
	// The cache's validate means digest_validate, in v1 and v2.
	for _, v := range []string{`{"device":{"backend":{"type":"localfs"},"cache":{"type":"blobcache","validate":true}}}`,
		"version = 2\n[backend]\ntype = \"localfs\"\n[cache]\ntype = \"blobcache\"\nvalidate = true\n"} {
		c, _, err := ParseConfig([]byte(v))
		if err != nil || !c.Validate() {
			t.Errorf("%s: %v, Validate() = %v, want true", v, err, c != nil && c.Validate())
		}
	}
	for _, bad := range []struct{ cfg, want string }{
		{`{"device":{"backend":{"type":"http-proxy","config":{"addr":"/run/x.sock"}}}}`, "http-proxy backend is not supported"},
		{`{"device":{"backend":{"type":"localfs"},"cache":{"type":"fscache"}}}`, "fscache is not supported"},
		{`{"device":{"backend":{"type":"localfs"},"cache":{"type":"blobcache","config":{"enable_encryption":true}}}}`, "cache encryption is not supported"},
		{`{"device":{"backend":{"type":"localfs"},"cache":{"type":"blobcache","config":{"encryption_key":"k"}}}}`, "cache encryption is not supported"},
		{"version = 2\n[backend]\ntype = \"localfs\"\n[cache]\ntype = \"blobcache\"\n[cache.filecache]\nenable_encryption = true\n", "cache encryption is not supported"},
	} {
		if _, _, err := ParseConfig([]byte(bad.cfg)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v, want %q", bad.cfg, err, bad.want)
		}
	}
}
