package api

import (
	"reflect"
	"strings"
	"testing"
)

const v1Equivalent = `{"device":{"id":"img","backend":{"type":"registry","config":{"scheme":"http","host":"127.0.0.1:5000","repo":"library/app","auth":"dXNlcjpwYXNz","timeout":5,"connect_timeout":5,"retry_limit":2,"proxy":{"fallback":false}}},
"cache":{"type":"blobcache","config":{"work_dir":"/var/cache/nydus","disable_indexed_map":false}}},
"mode":"direct","digest_validate":true,"enable_xattr":true,"iostats_files":true,"amplify_io":1048576,
"fs_prefetch":{"enable":true,"threads_count":4,"merging_size":131072,"bandwidth_rate":1000000,"prefetch_all":true}}`

// v2TOML is upstream's v2 layout (api/src/config.rs ConfigV2 names).
const v2TOML = `
version = 2
id = "img"

[backend]
type = "registry"

[backend.registry]
scheme = "http"
host = "127.0.0.1:5000"
repo = "library/app"
auth = "dXNlcjpwYXNz"
timeout = 5
connect_timeout = 5
retry_limit = 2
mirrors_future = 1

[backend.registry.proxy]
fallback = false

[cache]
type = "blobcache"

[cache.filecache]
work_dir = "/var/cache/nydus"

[rafs]
mode = "direct"
batch_size = 1048576
validate = true
enable_xattr = true
iostats_files = true

[rafs.prefetch]
enable = true
threads = 4
batch_size = 131072
bandwidth_limit = 1000000
prefetch_all = true

[overlay]
upper = "x"
`

const v2JSON = `{"version":2,"id":"img","backend":{"type":"registry","registry":{"scheme":"http","host":"127.0.0.1:5000","repo":"library/app","auth":"dXNlcjpwYXNz","timeout":5,"connect_timeout":5,"retry_limit":2,"proxy":{"fallback":false}}},
"cache":{"type":"blobcache","filecache":{"work_dir":"/var/cache/nydus"}},
"rafs":{"mode":"direct","batch_size":1048576,"validate":true,"enable_xattr":true,"iostats_files":true,"prefetch":{"enable":true,"threads":4,"batch_size":131072,"bandwidth_limit":1000000,"prefetch_all":true}}}`

func TestV2ConfigsMatchV1(t *testing.T) {
	want, _, err := ParseConfig([]byte(v1Equivalent))
	if err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string]string{"toml": v2TOML, "json": v2JSON} {
		got, unknown, err := ParseConfig([]byte(in))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: got %+v\nwant %+v", name, got, want)
		}
		if name == "toml" && strings.Join(unknown, ",") != "backend.registry.mirrors_future,overlay,overlay.upper" {
			t.Fatalf("unknown fields: %v", unknown)
		}
	}
}

func TestV2ConfigErrorsNameTheField(t *testing.T) {
	for in, want := range map[string]string{
		"version = 2\n[backend]\ntype = \"registry\"\n[backend.registry]\ntimeout = \"soon\"\n": "device.backend.config.timeout",
		"version = 2\n[backend]\ntype = \"s3\"\n":                                               "unsupported backend \"s3\"",
		"version = 2\n[backend\n":                                                               "invalid nydusd config (TOML)",
		"version = 3\n":                                                                         "field version: want 2",
		`{"version":2,"backend":{"type":"localfs","localfs":{"dir":7}}}`:                        "device.backend.config.dir",
	} {
		_, _, err := ParseConfig([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %v, want one line containing %q", in, err, want)
		}
	}
}
