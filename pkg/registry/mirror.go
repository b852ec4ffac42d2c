package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MirrorConfig is one entry of the registry backend's mirrors list, as
// upstream nydusd defined it (storage/src/backend/connection.rs before
// upstream moved mirror selection into nydus-snapshotter): a registry
// mirror, such as a pull-through cache or Dragonfly's dfdaemon in mirror
// mode, that serves the registry's blobs and manifests.
type MirrorConfig struct {
	// Host is the mirror's base URL with its scheme
	// ("http://127.0.0.1:5001"): a request's scheme, host and port are
	// replaced by it, its path and query kept.
	Host string
	// PingURL is fetched directly every HealthCheckInterval while the
	// mirror is disabled: an answer below 500 enables it again. Default
	// Host + "/v2".
	PingURL string
	// Headers are added to every request sent to this mirror (for
	// dfdaemon, "X-Dragonfly-Registry"), and to no other.
	Headers map[string]string
	// AuthThrough sends the request's Authorization header (the origin's
	// token or basic credentials) to the mirror. Without it the mirror
	// gets no credentials: it must serve anonymously (a pull-through
	// cache holding its own credentials for the origin does).
	AuthThrough bool
	// HealthCheckInterval is the time between pings of a disabled mirror
	// (default 5 s).
	HealthCheckInterval time.Duration
	// FailureLimit is how many requests in a row may fail to reach the
	// mirror before it is disabled until a ping succeeds (default 5).
	FailureLimit int
	// HealthCheckPauseElapsed stops the pings while the backend has not
	// been used for that long (default 300 s).
	HealthCheckPauseElapsed time.Duration
}

// MirrorStats is what one mirror has done since the client started.
type MirrorStats struct {
	// Host is the mirror's MirrorConfig.Host, its password (if any)
	// redacted.
	Host string
	// Served counts the requests the mirror answered (status below 500
	// and not 401, 403, 404 or 429).
	Served int64
	// Failures counts the requests that could not reach the mirror or
	// broke off in the middle of their body.
	Failures int64
	// Skipped counts the answers that sent a request on to the next
	// mirror or the origin (5xx, 401, 403, 404, 429).
	Skipped int64
	// Healthy is false while the mirror is disabled.
	Healthy bool
}

// mirror is one configured mirror and its state.
type mirror struct {
	cfg  MirrorConfig
	host *url.URL
	ping string
	// name and pingName are Host and PingURL without a password, for
	// logs and metrics.
	name, pingName string

	healthy  atomic.Bool
	failures atomic.Int32 // consecutive; reset by a success or a recovery

	served, failed, skipped atomic.Int64
}

// mirrorTransport sends a registry client's blob and manifest requests
// to its mirrors in order, falling back to the origin when every mirror
// is disabled, fails or cannot serve the request. Like proxyTransport it
// sits under the authenticating transport.
type mirrorTransport struct {
	mirrors []*mirror
	direct  http.RoundTripper
	log     *slog.Logger

	lastActive atomic.Int64 // unix seconds of the last request

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

func newMirrorTransport(cfgs []MirrorConfig, base *http.Transport, pingTimeout time.Duration, log *slog.Logger) (*mirrorTransport, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	direct := base.Clone()
	direct.Proxy = nil
	t := &mirrorTransport{direct: direct, log: log, stop: make(chan struct{})}
	t.lastActive.Store(time.Now().Unix())
	for i, c := range cfgs {
		u, err := url.Parse(c.Host)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("registry backend: mirrors[%d].host %q is not an http(s) URL such as http://127.0.0.1:5001", i, redacted(c.Host))
		}
		if c.PingURL == "" {
			c.PingURL = strings.TrimSuffix(c.Host, "/") + "/v2"
		}
		if p, err := url.Parse(c.PingURL); err != nil || p.Host == "" {
			return nil, fmt.Errorf("registry backend: mirrors[%d].ping_url %q is not a URL", i, redacted(c.PingURL))
		}
		for k, v := range c.Headers {
			if k == "" || strings.ContainsAny(k, " :\r\n") || strings.ContainsAny(v, "\r\n") {
				return nil, fmt.Errorf("registry backend: mirrors[%d].headers: %q is not a valid header", i, k)
			}
		}
		if c.HealthCheckInterval <= 0 {
			c.HealthCheckInterval = 5 * time.Second
		}
		if c.FailureLimit <= 0 {
			c.FailureLimit = 5
		}
		if c.HealthCheckPauseElapsed <= 0 {
			c.HealthCheckPauseElapsed = 300 * time.Second
		}
		m := &mirror{cfg: c, host: u, ping: c.PingURL, name: u.Redacted(), pingName: redacted(c.PingURL)}
		m.healthy.Store(true)
		t.mirrors = append(t.mirrors, m)
	}
	pinger := &http.Client{Transport: direct.Clone(), Timeout: pingTimeout}
	for _, m := range t.mirrors {
		t.wg.Add(1)
		go t.checkHealth(m, pinger)
	}
	return t, nil
}

// checkHealth pings a disabled mirror every HealthCheckInterval, while
// the backend is in use, until close.
func (t *mirrorTransport) checkHealth(m *mirror, c *http.Client) {
	defer t.wg.Done()
	ctx, cancel := stopContext(t.stop)
	defer cancel()
	for {
		select {
		case <-t.stop:
			return
		case <-time.After(jitter(m.cfg.HealthCheckInterval)):
		}
		if m.healthy.Load() || time.Since(time.Unix(t.lastActive.Load(), 0)) > m.cfg.HealthCheckPauseElapsed {
			continue
		}
		resp, err := get(ctx, c, m.ping)
		if err != nil {
			t.log.Debug("registry mirror still down", "mirror", m.name, "err", err)
			continue
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
		resp.Body.Close()
		if resp.StatusCode < 500 {
			m.failures.Store(0)
			m.healthy.Store(true)
			t.log.Info("registry mirror recovered", "mirror", m.name)
		}
	}
}

// stopContext returns a context cancelled when stop is closed, so that a
// health check in flight ends with its transport's close.
func stopContext(stop <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// get is a GET of url with ctx.
func get(ctx context.Context, c *http.Client, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return c.Do(req)
}

// jitter spreads d by ±20%, so that the nodes of a cluster do not check
// a recovering server in the same second.
func jitter(d time.Duration) time.Duration {
	return d*4/5 + time.Duration(rand.Int64N(int64(d)*2/5+1))
}

// redacted returns a URL with its password hidden, or the string as it
// is when it does not parse.
func redacted(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return s
}

func (t *mirrorTransport) close() {
	t.stopOnce.Do(func() { close(t.stop) })
	t.wg.Wait()
}

// stats reports each mirror's counters.
func (t *mirrorTransport) stats() []MirrorStats {
	out := make([]MirrorStats, len(t.mirrors))
	for i, m := range t.mirrors {
		out[i] = MirrorStats{Host: m.name, Served: m.served.Load(), Failures: m.failed.Load(),
			Skipped: m.skipped.Load(), Healthy: m.healthy.Load()}
	}
	return out
}

// fail counts a request that could not reach m and disables m at its
// failure limit.
func (t *mirrorTransport) fail(m *mirror, err error) {
	m.failed.Add(1)
	n := m.failures.Add(1)
	if int(n) >= m.cfg.FailureLimit && m.healthy.CompareAndSwap(true, false) {
		t.log.Warn("registry mirror disabled until its ping answers", "mirror", m.name, "failures", n, "ping", m.pingName, "err", err)
	}
}

// passOn reports whether an answer from a mirror sends the request on to
// the next mirror or the origin: a server error (upstream's rule), and
// the answers of a mirror that cannot serve this request (it wants
// credentials it was not given, lacks the content or sheds load).
func passOn(status int) bool {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusTooManyRequests:
		return true
	}
	return status >= 500
}

// mirrored reports whether a request may go to a mirror: blobs and
// manifests. The /v2/ probe stays with the origin, whose answer sets up
// authentication, and token requests go to their realm.
func mirrored(r *http.Request) bool {
	p := r.URL.Path
	return strings.Contains(p, "/blobs/") || strings.Contains(p, "/manifests/")
}

// RoundTrip implements http.RoundTripper.
func (t *mirrorTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	t.lastActive.Store(time.Now().Unix())
	if !mirrored(req) || req.Context().Value(skipProxyKey{}) != nil || (req.Body != nil && req.Body != http.NoBody) {
		return t.direct.RoundTrip(req)
	}
	for _, m := range t.mirrors {
		if !m.healthy.Load() {
			continue
		}
		mreq := req.Clone(req.Context())
		mreq.URL.Scheme, mreq.URL.Host = m.host.Scheme, m.host.Host
		mreq.Host = ""
		if !m.cfg.AuthThrough {
			mreq.Header.Del("Authorization")
		}
		for k, v := range m.cfg.Headers {
			mreq.Header.Set(k, v)
		}
		resp, err := t.direct.RoundTrip(mreq)
		if err != nil {
			if req.Context().Err() != nil {
				return nil, err
			}
			t.log.Warn("registry mirror failed a request; trying the next", "mirror", m.name, "err", err)
			t.fail(m, err)
			continue
		}
		if passOn(resp.StatusCode) {
			m.skipped.Add(1)
			t.log.Debug("registry mirror cannot serve a request; trying the next", "mirror", m.name, "status", resp.Status)
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
			continue
		}
		m.served.Add(1)
		m.failures.Store(0)
		resp.Body = &mirrorBody{ReadCloser: resp.Body, ctx: req.Context(), t: t, m: m}
		return resp, nil
	}
	return t.direct.RoundTrip(req)
}

// mirrorBody counts a body that breaks off as a failure of its mirror,
// so that a mirror going down in the middle of transfers is disabled.
type mirrorBody struct {
	io.ReadCloser
	ctx    context.Context
	t      *mirrorTransport
	m      *mirror
	failed bool
}

func (b *mirrorBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !errors.Is(err, io.EOF) && !b.failed && b.ctx.Err() == nil {
		b.failed = true
		b.t.fail(b.m, err)
	}
	return n, err
}
