package api

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// v2Keys are the dotted paths of nydusd's v2 configuration this daemon
// reads (upstream's ConfigV2 names); backend.<type>.* is checked by the
// v1 rules after translation.
var v2Keys = map[string]bool{
	"version": true, "id": true,
	"backend": true, "backend.type": true,
	"cache": true, "cache.type": true, "cache.compressed": true, "cache.validate": true,
	"cache.filecache": true, "cache.filecache.work_dir": true, "cache.filecache.disable_indexed_map": true,
	"cache.filecache.enable_encryption": true, "cache.filecache.enable_convergent_encryption": true,
	"cache.filecache.encryption_key": true, "external_backends": true,
	"cache.prefetch": true, "cache.prefetch.enable": true, "cache.prefetch.threads": true, "cache.prefetch.batch_size": true,
	"cache.prefetch.bandwidth_limit": true, "cache.prefetch.prefetch_all": true,
	"rafs": true, "rafs.mode": true, "rafs.batch_size": true, "rafs.validate": true, "rafs.enable_xattr": true,
	"rafs.iostats_files": true, "rafs.access_pattern": true, "rafs.latest_read_files": true,
	"rafs.prefetch": true, "rafs.prefetch.enable": true, "rafs.prefetch.threads": true, "rafs.prefetch.batch_size": true,
	"rafs.prefetch.bandwidth_limit": true, "rafs.prefetch.prefetch_all": true,
}

// parseTOML parses a v2 TOML configuration.
func parseTOML(b []byte) (*ConfigV1, []string, error) {
	var m map[string]any
	if err := toml.Unmarshal(b, &m); err != nil {
		return nil, nil, fmt.Errorf("invalid nydusd config (TOML): %w", err)
	}
	return parseV2(m)
}

// parseV2 translates a v2 configuration (JSON or TOML, decoded) into v1
// terms and validates it with the v1 rules. Unknown v2 fields are
// returned like v1's.
func parseV2(m map[string]any) (*ConfigV1, []string, error) {
	if v, ok := m["version"]; ok && fmt.Sprint(v) != "2" {
		return nil, nil, fmt.Errorf("invalid nydusd config: field version: want 2, got %v", v)
	}
	obj := func(parent map[string]any, key string) map[string]any {
		o, _ := parent[key].(map[string]any)
		if o == nil {
			o = map[string]any{}
		}
		return o
	}
	var unknown []string
	backend := obj(m, "backend")
	btype, _ := backend["type"].(string)
	walkKeys(m, "", func(p string) {
		if v2Keys[p] {
			return
		}
		// backend.<type> is the backend's config, checked below.
		if btype != "" && (p == "backend."+btype || len(p) > len("backend."+btype) && p[:len("backend."+btype)+1] == "backend."+btype+".") {
			return
		}
		unknown = append(unknown, p)
	})
	cache, rafs := obj(m, "cache"), obj(m, "rafs")
	pf := obj(rafs, "prefetch")
	if len(pf) == 0 {
		pf = obj(cache, "prefetch")
	}
	fc := obj(cache, "filecache")
	v1 := map[string]any{
		"device": map[string]any{
			"backend": map[string]any{"type": btype, "config": obj(backend, btype)},
			"cache": map[string]any{"type": orDefault(cache["type"], ""), "compressed": orDefault(cache["compressed"], false),
				"validate": orDefault(cache["validate"], false),
				"config": map[string]any{"work_dir": orDefault(fc["work_dir"], ""), "disable_indexed_map": orDefault(fc["disable_indexed_map"], false),
					"enable_encryption": orDefault(fc["enable_encryption"], false), "enable_convergent_encryption": orDefault(fc["enable_convergent_encryption"], false),
					"encryption_key": orDefault(fc["encryption_key"], "")}},
		},
		"mode":              orDefault(rafs["mode"], "direct"),
		"digest_validate":   orDefault(rafs["validate"], false),
		"enable_xattr":      orDefault(rafs["enable_xattr"], false),
		"iostats_files":     orDefault(rafs["iostats_files"], false),
		"access_pattern":    orDefault(rafs["access_pattern"], false),
		"latest_read_files": orDefault(rafs["latest_read_files"], false),
		"fs_prefetch": map[string]any{
			"enable": orDefault(pf["enable"], false), "prefetch_all": orDefault(pf["prefetch_all"], false),
			"threads_count": orDefault(pf["threads"], 0), "merging_size": orDefault(pf["batch_size"], 0),
			"bandwidth_rate": orDefault(pf["bandwidth_limit"], 0),
		},
	}
	if id, ok := m["id"]; ok {
		v1["device"].(map[string]any)["id"] = id
	}
	if eb, ok := m["external_backends"]; ok {
		v1["device"].(map[string]any)["external_backends"] = eb
	}
	if bs, ok := rafs["batch_size"]; ok {
		v1["amplify_io"] = bs
	}
	b, err := json.Marshal(v1)
	if err != nil {
		return nil, nil, fmt.Errorf("invalid nydusd config: %w", err)
	}
	c, more, err := ParseConfig(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (in v2 terms: device.backend.config is backend.%s, fs_prefetch is rafs.prefetch)", err, btype)
	}
	for _, u := range more {
		if rest, ok := strings.CutPrefix(u, "device.backend.config"); ok {
			u = "backend." + btype + rest
		}
		unknown = append(unknown, u)
	}
	sort.Strings(unknown)
	return c, unknown, nil
}

func orDefault(v any, def any) any {
	if v == nil {
		return def
	}
	return v
}
