// Package api holds the wire types between nydus-snapshotter and nydusd:
// the daemon configuration JSON (v1, as the snapshotter writes it, and
// v2) and the bodies of the HTTP API on the daemon's unix socket. Field
// names follow upstream nydusd exactly. Client is a client of that API.
package api

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// ConfigV1 is nydusd's v1 configuration.
type ConfigV1 struct {
	Device         DeviceV1   `json:"device"`
	Mode           string     `json:"mode,omitempty"`
	DigestValidate bool       `json:"digest_validate"`
	IOStatsFiles   bool       `json:"iostats_files,omitempty"`
	EnableXattr    bool       `json:"enable_xattr,omitempty"`
	AccessPattern  bool       `json:"access_pattern,omitempty"`
	LatestRead     bool       `json:"latest_read_files,omitempty"`
	AmplifyIO      *uint64    `json:"amplify_io,omitempty"`
	FSPrefetch     FSPrefetch `json:"fs_prefetch"`
}

// DeviceV1 is the v1 device section.
type DeviceV1 struct {
	ID      string    `json:"id,omitempty"`
	Backend BackendV1 `json:"backend"`
	Cache   CacheV1   `json:"cache"`
	// ExternalBackends is upstream's list of external backends for
	// model images, which this nydusd does not implement
	// (Unimplemented names it).
	ExternalBackends []json.RawMessage `json:"external_backends,omitempty"`
}

// BackendV1 is the v1 backend: a type and its config object.
type BackendV1 struct {
	Type   string        `json:"type"`
	Config BackendConfig `json:"config"`
}

// BackendConfig holds the fields of every backend type (registry,
// localfs, http-proxy).
type BackendConfig struct {
	// registry
	Host          string `json:"host,omitempty"`
	Repo          string `json:"repo,omitempty"`
	Scheme        string `json:"scheme,omitempty"`
	Auth          string `json:"auth,omitempty"`
	RegistryToken string `json:"registry_token,omitempty"`
	SkipVerify    bool   `json:"skip_verify,omitempty"`
	// CACertFiles are PEM files of CAs trusted besides the system's.
	CACertFiles        []string `json:"ca_cert_files,omitempty"`
	Timeout            int      `json:"timeout,omitempty"`
	ConnectTimeout     int      `json:"connect_timeout,omitempty"`
	RetryLimit         int      `json:"retry_limit,omitempty"`
	BlobURLScheme      string   `json:"blob_url_scheme,omitempty"`
	BlobRedirectedHost string   `json:"blob_redirected_host,omitempty"`
	Proxy              *Proxy   `json:"proxy,omitempty"`
	Mirrors            []Mirror `json:"mirrors,omitempty"`
	// localfs
	Dir       string   `json:"dir,omitempty"`
	BlobFile  string   `json:"blob_file,omitempty"`
	AltDirs   []string `json:"alt_dirs,omitempty"`
	Readahead bool     `json:"readahead,omitempty"`
	// http-proxy
	Addr string `json:"addr,omitempty"`
	Path string `json:"path,omitempty"`
}

// Proxy is a registry backend's proxy section (upstream's ProxyConfig):
// an HTTP proxy in front of the registry, such as Dragonfly's dfdaemon.
type Proxy struct {
	URL     string `json:"url,omitempty"`
	PingURL string `json:"ping_url,omitempty"`
	// Fallback is upstream's fallback, true when absent.
	Fallback *bool `json:"fallback,omitempty"`
	// CheckInterval and CheckPauseElapsed are seconds (5 and 300 when
	// absent).
	CheckInterval     int  `json:"check_interval,omitempty"`
	CheckPauseElapsed int  `json:"check_pause_elapsed,omitempty"`
	UseHTTP           bool `json:"use_http,omitempty"`
	// DragonflySchedulerEndpoint is Dragonfly's SDK mode, which nydusd
	// does not implement (Unimplemented names it).
	DragonflySchedulerEndpoint string `json:"dragonfly_scheduler_endpoint,omitempty"`
}

// Mirror is one entry of a registry backend's mirrors list (upstream's
// MirrorConfig, as nydusd read it until mirror selection moved into
// nydus-snapshotter): a registry mirror tried before the registry.
type Mirror struct {
	Host    string            `json:"host"`
	PingURL string            `json:"ping_url,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	// AuthThrough sends the registry's credentials to the mirror.
	AuthThrough bool `json:"auth_through,omitempty"`
	// HealthCheckInterval and HealthCheckPauseElapsed are seconds (5 and
	// 300 when absent); FailureLimit is 5 when absent.
	HealthCheckInterval     int `json:"health_check_interval,omitempty"`
	FailureLimit            int `json:"failure_limit,omitempty"`
	HealthCheckPauseElapsed int `json:"health_check_pause_elapsed,omitempty"`
}

// FallbackOn reports upstream's fallback setting (true when absent).
func (p *Proxy) FallbackOn() bool { return p.Fallback == nil || *p.Fallback }

// CacheV1 is the v1 cache section.
type CacheV1 struct {
	Type       string        `json:"type"`
	Compressed bool          `json:"compressed,omitempty"`
	Config     CacheConfigV1 `json:"config"`
	// Validate re-verifies data read from the cache, as digest_validate
	// does (ConfigV1.Validate).
	Validate bool `json:"validate,omitempty"`
}

// CacheConfigV1 is the cache's config object.
type CacheConfigV1 struct {
	WorkDir           string `json:"work_dir"`
	DisableIndexedMap bool   `json:"disable_indexed_map"`
	// Cache encryption is refused by ParseConfig: a cache asked to be
	// encrypted is never written in the clear.
	EnableEncryption           bool   `json:"enable_encryption,omitempty"`
	EnableConvergentEncryption bool   `json:"enable_convergent_encryption,omitempty"`
	EncryptionKey              string `json:"encryption_key,omitempty"`
}

// Validate reports whether every read is re-verified: digest_validate,
// or the cache's validate.
func (c *ConfigV1) Validate() bool { return c.DigestValidate || c.Device.Cache.Validate }

// FSPrefetch is the v1 prefetch section.
type FSPrefetch struct {
	Enable        bool   `json:"enable"`
	ThreadsCount  int    `json:"threads_count,omitempty"`
	MergingSize   uint64 `json:"merging_size,omitempty"`
	BandwidthRate uint64 `json:"bandwidth_rate,omitempty"`
	PrefetchAll   bool   `json:"prefetch_all"`
}

// ParseConfig parses a configuration: v1 JSON (what nydus-snapshotter
// writes), or v2 as JSON ("version": 2) or TOML, translated to v1. Like upstream it ignores
// unknown fields; it returns their dotted paths so the daemon can log
// each once. A malformed value is an error naming its field.
func ParseConfig(b []byte) (*ConfigV1, []string, error) {
	if t := strings.TrimSpace(string(b)); t != "" && t[0] != '{' {
		return parseTOML(b) // v2 TOML
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, nil, fmt.Errorf("invalid nydusd config: %w", err)
	}
	if v, ok := raw["version"]; ok {
		if f, _ := v.(float64); f == 2 {
			return parseV2(raw)
		}
	}
	var c ConfigV1
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&c); err != nil {
		var te *json.UnmarshalTypeError
		if ok := asTypeErr(err, &te); ok {
			return nil, nil, fmt.Errorf("invalid nydusd config: field %s: want %s, got %s", te.Field, te.Type, te.Value)
		}
		return nil, nil, fmt.Errorf("invalid nydusd config: %w", err)
	}
	known := map[string]bool{}
	collect(known, "", structKeys())
	var unknown []string
	walkKeys(raw, "", func(p string) {
		if !known[p] && !slices.Contains(unknown, p) {
			unknown = append(unknown, p)
		}
	})
	sort.Strings(unknown)
	if c.Device.Backend.Type == "" {
		return nil, nil, fmt.Errorf("invalid nydusd config: field device.backend.type is empty")
	}
	switch c.Device.Backend.Type {
	case "registry", "localfs":
	case "http-proxy":
		return nil, nil, fmt.Errorf("invalid nydusd config: field device.backend.type: the http-proxy backend is not supported by nydusd yet (want registry or localfs)")
	default:
		return nil, nil, fmt.Errorf("invalid nydusd config: field device.backend.type: unsupported backend %q (want registry or localfs)", c.Device.Backend.Type)
	}
	switch c.Device.Cache.Type {
	case "", "blobcache", "filecache", "dummycache":
	case "fscache":
		return nil, nil, fmt.Errorf("invalid nydusd config: field device.cache.type: fscache is not supported (it serves EROFS over the kernel's fscache, which this nydusd does not; use blobcache)")
	default:
		return nil, nil, fmt.Errorf("invalid nydusd config: field device.cache.type: unsupported cache %q (want blobcache, filecache or dummycache)", c.Device.Cache.Type)
	}
	if cc := c.Device.Cache.Config; cc.EnableEncryption || cc.EnableConvergentEncryption || cc.EncryptionKey != "" {
		return nil, nil, fmt.Errorf("invalid nydusd config: field device.cache.config.enable_encryption: cache encryption is not supported by this nydusd (the cache would be written in the clear); remove enable_encryption, enable_convergent_encryption and encryption_key")
	}
	return &c, unknown, nil
}

// Unimplemented lists the fields of c that upstream defines, that are
// set to something other than their default, and that this nydusd does
// not implement yet, each as "field: what happens instead". The daemon
// logs each as a warning at mount: none is silently ignored.
func (c *ConfigV1) Unimplemented() []string {
	b := c.Device.Backend.Config
	var out []string
	add := func(cond bool, field, what string) {
		if cond {
			out = append(out, field+": "+what)
		}
	}
	const bc = "device.backend.config."
	if p := b.Proxy; p != nil {
		add(p.DragonflySchedulerEndpoint != "", bc+"proxy.dragonfly_scheduler_endpoint", "Dragonfly's SDK mode is not implemented: set proxy.url to dfdaemon's HTTP proxy instead")
		noURL := "has no effect without proxy.url"
		add(p.URL == "" && p.PingURL != "", bc+"proxy.ping_url", noURL)
		add(p.URL == "" && p.CheckInterval != 0, bc+"proxy.check_interval", noURL)
		add(p.URL == "" && p.CheckPauseElapsed != 0, bc+"proxy.check_pause_elapsed", noURL)
		add(p.URL == "" && p.UseHTTP, bc+"proxy.use_http", noURL)
	}
	add(b.Readahead, bc+"readahead", "not implemented yet: no access log of the localfs blobs is kept")
	add(len(c.Device.ExternalBackends) > 0, "device.external_backends", "external backends (model images) are not implemented: their files read as EIO")
	add(c.Device.Cache.Compressed, "device.cache.compressed", "not implemented yet: chunks are cached uncompressed")
	add(c.Device.Cache.Config.DisableIndexedMap, "device.cache.config.disable_indexed_map", "not implemented yet: the indexed chunk map is used")
	add(c.Mode != "" && c.Mode != "direct" && c.Mode != "cached", "mode", fmt.Sprintf("unknown mode %q: RAFS v6 is always read in direct mode", c.Mode))
	add(!c.EnableXattr, "enable_xattr", "false (upstream's default) is not implemented: extended attributes are served anyway")
	add(c.LatestRead, "latest_read_files", "not implemented yet: use iostats_files and GET /api/v1/metrics/files")
	return out
}

func asTypeErr(err error, te **json.UnmarshalTypeError) bool {
	t, ok := err.(*json.UnmarshalTypeError)
	if ok {
		*te = t
	}
	return ok
}

// structKeys lists the known dotted paths of ConfigV1.
func structKeys() []string {
	return []string{
		"device", "device.id", "device.backend", "device.backend.type", "device.backend.config",
		"device.backend.config.host", "device.backend.config.repo", "device.backend.config.scheme",
		"device.backend.config.auth", "device.backend.config.registry_token", "device.backend.config.skip_verify",
		"device.backend.config.timeout", "device.backend.config.connect_timeout", "device.backend.config.retry_limit",
		"device.backend.config.ca_cert_files", "device.external_backends",
		"device.backend.config.blob_url_scheme", "device.backend.config.blob_redirected_host",
		"device.backend.config.proxy", "device.backend.config.proxy.url", "device.backend.config.proxy.ping_url",
		"device.backend.config.proxy.fallback", "device.backend.config.proxy.check_interval", "device.backend.config.proxy.use_http",
		"device.backend.config.proxy.check_pause_elapsed", "device.backend.config.proxy.dragonfly_scheduler_endpoint",
		"device.backend.config.mirrors", "device.backend.config.mirrors.host", "device.backend.config.mirrors.ping_url",
		"device.backend.config.mirrors.headers", "device.backend.config.mirrors.auth_through",
		"device.backend.config.mirrors.health_check_interval", "device.backend.config.mirrors.failure_limit",
		"device.backend.config.mirrors.health_check_pause_elapsed",
		"device.backend.config.dir", "device.backend.config.blob_file", "device.backend.config.alt_dirs",
		"device.backend.config.readahead", "device.backend.config.addr", "device.backend.config.path",
		"device.cache", "device.cache.type", "device.cache.compressed", "device.cache.config",
		"device.cache.config.work_dir", "device.cache.config.disable_indexed_map", "device.cache.validate",
		"device.cache.config.enable_encryption", "device.cache.config.enable_convergent_encryption",
		"device.cache.config.encryption_key",
		"mode", "digest_validate", "iostats_files", "enable_xattr", "access_pattern", "latest_read_files", "amplify_io",
		"fs_prefetch", "fs_prefetch.enable", "fs_prefetch.threads_count", "fs_prefetch.merging_size",
		"fs_prefetch.bandwidth_rate", "fs_prefetch.prefetch_all",
	}
}

func collect(m map[string]bool, _ string, keys []string) {
	for _, k := range keys {
		m[k] = true
	}
}

// opaqueKeys are config objects whose keys are data, not fields (a
// mirror's HTTP headers, and the external backends, warned about whole).
var opaqueKeys = map[string]bool{"device.backend.config.mirrors.headers": true, "device.external_backends": true}

// walkKeys calls fn with the dotted path of every field of v. The
// elements of a list of objects share the list's path
// ("device.backend.config.mirrors.host").
func walkKeys(v any, prefix string, fn func(string)) {
	if list, ok := v.([]any); ok {
		for _, e := range list {
			walkKeys(e, prefix, fn)
		}
		return
	}
	obj, ok := v.(map[string]any)
	if !ok || opaqueKeys[prefix] {
		return
	}
	for k, child := range obj {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		fn(p)
		walkKeys(child, p, fn)
	}
}

// Version is the version object of DaemonInfo.
type Version struct {
	PackageVer string `json:"package_ver"`
	GitCommit  string `json:"git_commit"`
	BuildTime  string `json:"build_time"`
	Profile    string `json:"profile"`
	Rustc      string `json:"rustc"`
}

// DaemonInfo is the body of GET /api/v1/daemon.
type DaemonInfo struct {
	ID         string  `json:"id"`
	Version    Version `json:"version"`
	Supervisor string  `json:"supervisor,omitempty"`
	State      string  `json:"state"`
	// Mounts are the images mounted, by API mountpoint ("/" for a
	// dedicated daemon's); our extension.
	Mounts map[string]MountInfo `json:"mounts,omitempty"`
}

// MountInfo describes a mounted image in DaemonInfo.
type MountInfo struct {
	Bootstrap string `json:"bootstrap"`
	// BootstrapDigest is the sha256 of the bootstrap as it was read at
	// mount ("sha256:…").
	BootstrapDigest string `json:"bootstrap_digest"`
}

// Daemon states.
const (
	StateInit    = "INIT"
	StateReady   = "READY"
	StateRunning = "RUNNING"
	StateStopped = "STOPPED"
)

// MountRequest is the body of POST /api/v1/mount. Config is the nydusd
// configuration as a JSON *string*.
type MountRequest struct {
	FsType        string   `json:"fs_type"`
	Source        string   `json:"source"`
	Config        string   `json:"config"`
	PrefetchFiles []string `json:"prefetch_files,omitempty"`
}

// ErrorBody is the body of every error response.
type ErrorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// BlobCacheMetrics is the body of GET /api/v1/metrics/blobcache.
type BlobCacheMetrics struct {
	ID                    string   `json:"id"`
	UnderlyingFiles       []string `json:"underlying_files"`
	StorePath             string   `json:"store_path"`
	PartialHits           int64    `json:"partial_hits"`
	WholeHits             int64    `json:"whole_hits"`
	Total                 int64    `json:"total"`
	EntriesCount          int64    `json:"entries_count"`
	PrefetchDataAmount    int64    `json:"prefetch_data_amount"`
	PrefetchRequestsCount int64    `json:"prefetch_requests_count"`
	PrefetchWorkers       int64    `json:"prefetch_workers"`
	BufferedBackendSize   int64    `json:"buffered_backend_size"`
	DataAllReady          bool     `json:"data_all_ready"`
}

// FsMetrics is the body of GET /api/v1/metrics.
type FsMetrics struct {
	ID             string  `json:"id"`
	NrOpens        int64   `json:"nr_opens"`
	DataRead       int64   `json:"data_read"`
	BlockCountRead []int64 `json:"block_count_read"`
	FopHits        []int64 `json:"fop_hits"`
	FopErrors      []int64 `json:"fop_errors"`
}

// BackendMetrics is the body of GET /api/v1/metrics/backend.
type BackendMetrics struct {
	ID              string `json:"id"`
	BackendType     string `json:"backend_type"`
	ReadCount       int64  `json:"read_count"`
	ReadErrors      int64  `json:"read_errors"`
	ReadAmountTotal int64  `json:"read_amount_total"`
	DigestFailures  int64  `json:"digest_failures"`
}
