package daemon

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nydus-go/nydus/pkg/registry"
)

// collector exports every mounted image's counters in Prometheus format
// at /metrics (an addition to upstream's JSON metrics).
type collector struct {
	d     *Daemon
	descs map[string]*prometheus.Desc
	// Of images whose registry backend has a proxy or mirrors.
	proxyReqs, mirrorReqs, mirrorUp *prometheus.Desc
}

// routeReporter is a backend that routes its requests through a proxy
// or mirrors (registry.Client).
type routeReporter interface {
	ProxyStats() (proxied, fellBack int64)
	MirrorStats() []registry.MirrorStats
}

var promMetrics = []struct{ name, help string }{
	{"nydusd_read_bytes_total", "File data bytes returned to readers."},
	{"nydusd_backend_chunks_total", "Chunks fetched from the backend."},
	{"nydusd_backend_bytes_total", "Stored (compressed) bytes fetched from the backend."},
	{"nydusd_backend_errors_total", "Chunk fetches that failed."},
	{"nydusd_cache_hits_total", "Chunks served from the local cache."},
	{"nydusd_digest_failures_total", "Chunks that failed digest verification."},
	{"nydusd_at_rest_failures_total", "Cached chunks and whole-file copies found changed on the local disk after they were verified."},
	{"nydusd_dependency_files_total", "Files fetched because a program that needs them was opened."},
	{"nydusd_dependency_bytes_total", "Bytes of the files fetched because a program that needs them was opened."},
	{"nydusd_sibling_files_total", "Small files fetched because another small file of their directory was read."},
	{"nydusd_amplified_chunks_total", "Chunks fetched in another chunk's request (amplify_io)."},
	{"nydusd_chunk_record_mismatches_total", "Reads refused because the bootstrap's chunk record disagreed with the blob's chunk-info table."},
	{"nydusd_prefetched_chunks_total", "Chunks fetched by background prefetch."},
	{"nydusd_whole_file_copies_total", "Whole-file copies built and verified, from then on served by FUSE passthrough."},
	{"nydusd_shared_chunks_total", "Chunks copied from another blob of the node's cache holding the same content, instead of fetched."},
	{"nydusd_shared_bytes_total", "Uncompressed bytes of the chunks copied from another blob of the node's cache."},
}

func newCollector(d *Daemon) *collector {
	c := &collector{d: d, descs: map[string]*prometheus.Desc{}}
	for _, m := range promMetrics {
		c.descs[m.name] = prometheus.NewDesc(m.name, m.help, []string{"mountpoint"}, nil)
	}
	c.proxyReqs = prometheus.NewDesc("nydusd_registry_proxy_requests_total",
		"Registry requests sent through the configured proxy (route=proxy) or, falling back, to the registry (route=direct).", []string{"mountpoint", "route"}, nil)
	c.mirrorReqs = prometheus.NewDesc("nydusd_registry_mirror_requests_total",
		"Registry requests a mirror served, failed (could not reach it or broke off) or passed on (5xx, 401, 403, 404, 429).", []string{"mountpoint", "mirror", "result"}, nil)
	c.mirrorUp = prometheus.NewDesc("nydusd_registry_mirror_up", "1 while a mirror is in use, 0 while disabled until its ping answers.", []string{"mountpoint", "mirror"}, nil)
	return c
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
	ch <- c.proxyReqs
	ch <- c.mirrorReqs
	ch <- c.mirrorUp
}

// collectRoutes exports the proxy and mirror counters of the images
// whose backend has them.
func (c *collector) collectRoutes(ch chan<- prometheus.Metric) {
	for mp, be := range c.d.backends() {
		rr, ok := be.(routeReporter)
		if !ok {
			continue
		}
		if proxied, fellBack := rr.ProxyStats(); proxied+fellBack > 0 {
			ch <- prometheus.MustNewConstMetric(c.proxyReqs, prometheus.CounterValue, float64(proxied), mp, "proxy")
			ch <- prometheus.MustNewConstMetric(c.proxyReqs, prometheus.CounterValue, float64(fellBack), mp, "direct")
		}
		for _, m := range rr.MirrorStats() {
			ch <- prometheus.MustNewConstMetric(c.mirrorReqs, prometheus.CounterValue, float64(m.Served), mp, m.Host, "served")
			ch <- prometheus.MustNewConstMetric(c.mirrorReqs, prometheus.CounterValue, float64(m.Failures), mp, m.Host, "failed")
			ch <- prometheus.MustNewConstMetric(c.mirrorReqs, prometheus.CounterValue, float64(m.Skipped), mp, m.Host, "passed_on")
			up := 0.0
			if m.Healthy {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(c.mirrorUp, prometheus.GaugeValue, up, mp, m.Host)
		}
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for mp, f := range c.d.Instances() {
		m := &f.Metrics
		vals := map[string]int64{
			"nydusd_read_bytes_total":              m.ReadBytes.Load(),
			"nydusd_backend_chunks_total":          m.FetchedChunks.Load(),
			"nydusd_backend_bytes_total":           m.FetchedBytes.Load(),
			"nydusd_backend_errors_total":          m.BackendErrors.Load(),
			"nydusd_cache_hits_total":              m.CacheHits.Load(),
			"nydusd_digest_failures_total":         m.DigestFailures.Load(),
			"nydusd_at_rest_failures_total":        m.AtRestFailures.Load(),
			"nydusd_chunk_record_mismatches_total": m.RecordMismatches.Load(),
			"nydusd_amplified_chunks_total":        m.AmplifiedChunks.Load(),
			"nydusd_dependency_files_total":        m.DependencyFiles.Load(),
			"nydusd_dependency_bytes_total":        m.DependencyBytes.Load(),
			"nydusd_prefetched_chunks_total":       m.PrefetchedChunks.Load(),
			"nydusd_sibling_files_total":           m.SiblingFiles.Load(),
			"nydusd_whole_file_copies_total":       m.WholeFiles.Load(),
			"nydusd_shared_chunks_total":           m.SharedChunks.Load(),
			"nydusd_shared_bytes_total":            m.SharedBytes.Load(),
		}
		for name, v := range vals {
			ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.CounterValue, float64(v), mp)
		}
	}
	c.collectRoutes(ch)
}
