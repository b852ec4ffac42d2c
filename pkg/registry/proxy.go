package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ProxyConfig is the registry backend's proxy section, as upstream
// nydusd defines it (storage/src/backend/connection.rs): an HTTP forward
// proxy in front of the registry, such as Dragonfly's dfdaemon.
type ProxyConfig struct {
	// URL is the proxy ("http://127.0.0.1:65001"). Registry requests
	// (blobs, manifests, the /v2/ probe) go through it while it is
	// healthy; token requests go to their realm directly.
	URL string
	// PingURL, when set, is fetched directly every CheckInterval (while
	// the backend was used within CheckPauseElapsed): a 2xx or 3xx answer
	// marks the proxy healthy, anything else unhealthy. Without it the
	// proxy is always taken as healthy.
	PingURL string
	// Fallback sends a request to the registry directly when the proxy
	// is unhealthy, fails to answer, or answers 5xx. Without it those
	// requests fail. Upstream's default is true.
	Fallback bool
	// CheckInterval is the time between pings (default 5 s).
	CheckInterval time.Duration
	// CheckPauseElapsed stops the pings while the backend has not been
	// used for that long (default 300 s).
	CheckPauseElapsed time.Duration
	// UseHTTP sends requests through the proxy with the http scheme
	// instead of https, so a proxy that caches (dfdaemon) can see them.
	UseHTTP bool
}

// proxyTransport routes a registry client's requests through its proxy
// with upstream's health checks and fallback. It sits under the
// authenticating transport, so every retry and token refresh is routed
// the same way.
type proxyTransport struct {
	cfg    ProxyConfig
	direct http.RoundTripper // the registry, no proxy
	via    http.RoundTripper // through cfg.URL
	log    *slog.Logger

	// name and pingName are the proxy and ping URLs without a password,
	// for logs and errors.
	name, pingName string

	healthy    atomic.Bool
	lastActive atomic.Int64 // unix seconds of the last request
	lastWarn   atomic.Int64 // unix seconds of the last fallback warning

	// Metrics.
	proxied, fellBack atomic.Int64

	stop     chan struct{}
	stopOnce sync.Once
	checks   sync.WaitGroup // the health check goroutine
}

// fallbackWarnEvery rate-limits the "proxy unhealthy, going direct" log
// line, as upstream does.
const fallbackWarnEvery = 30 * time.Second

func newProxyTransport(cfg ProxyConfig, base *http.Transport, pingTimeout time.Duration, log *slog.Logger) (*proxyTransport, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("registry backend: proxy.url %q is not an http(s) URL", redacted(cfg.URL))
	}
	var ping *url.URL
	if cfg.PingURL != "" {
		if ping, err = url.Parse(cfg.PingURL); err != nil || ping.Host == "" {
			return nil, fmt.Errorf("registry backend: proxy.ping_url %q is not a URL", redacted(cfg.PingURL))
		}
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = 5 * time.Second
	}
	if cfg.CheckPauseElapsed <= 0 {
		cfg.CheckPauseElapsed = 300 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	direct := base.Clone()
	direct.Proxy = nil // not HTTP(S)_PROXY either: fallback means the registry itself
	via := base.Clone()
	via.Proxy = http.ProxyURL(u)
	p := &proxyTransport{cfg: cfg, direct: direct, via: via, log: log, stop: make(chan struct{}), name: u.Redacted(), pingName: redacted(cfg.PingURL)}
	p.healthy.Store(true)
	p.lastActive.Store(time.Now().Unix())
	if ping != nil {
		pinger := &http.Client{Transport: direct.Clone(), Timeout: pingTimeout}
		p.checks.Add(1)
		go p.checkHealth(pinger, ping.String())
	}
	return p, nil
}

// checkHealth pings the proxy every CheckInterval until close.
func (p *proxyTransport) checkHealth(c *http.Client, ping string) {
	defer p.checks.Done()
	ctx, cancel := stopContext(p.stop)
	defer cancel()
	for {
		if time.Since(time.Unix(p.lastActive.Load(), 0)) <= p.cfg.CheckPauseElapsed {
			ok := false
			var why string
			resp, err := get(ctx, c, ping)
			if err == nil {
				io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
				resp.Body.Close()
				ok = resp.StatusCode >= 200 && resp.StatusCode < 400
				why = resp.Status
			} else if ctx.Err() != nil {
				return
			} else {
				why = err.Error()
			}
			if was := p.healthy.Swap(ok); was && !ok {
				p.log.Warn("registry proxy unhealthy", "proxy", p.name, "ping", p.pingName, "answer", why, "fallback", p.cfg.Fallback)
			} else if !was && ok {
				p.log.Info("registry proxy recovered", "proxy", p.name)
			}
		}
		select {
		case <-p.stop:
			return
		case <-time.After(jitter(p.cfg.CheckInterval)):
		}
	}
}

// close stops the health checks and waits for them to end.
func (p *proxyTransport) close() {
	p.stopOnce.Do(func() { close(p.stop) })
	p.checks.Wait()
}

// errProxyDown is the error of a request the proxy cannot serve without
// fallback.
var errProxyDown = errors.New("the registry proxy is not healthy and fallback is disabled")

// proxied reports whether a request is one of the registry's own (the
// API probe, manifests, blobs), which go through the proxy; token
// requests to an auth realm go directly, as upstream sends them.
func proxied(r *http.Request) bool {
	p := r.URL.Path
	return p == "/v2/" || strings.Contains(p, "/blobs/") || strings.Contains(p, "/manifests/")
}

// RoundTrip implements http.RoundTripper.
func (p *proxyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	p.lastActive.Store(time.Now().Unix())
	if !proxied(req) || req.Context().Value(skipProxyKey{}) != nil {
		return p.direct.RoundTrip(req)
	}
	if p.healthy.Load() {
		preq := req
		if p.cfg.UseHTTP && req.URL.Scheme == "https" {
			preq = req.Clone(req.Context())
			preq.URL.Scheme = "http"
		}
		resp, err := p.via.RoundTrip(preq)
		if err == nil && (!p.cfg.Fallback || resp.StatusCode < 500) {
			p.proxied.Add(1)
			return resp, nil
		}
		if err != nil && !p.cfg.Fallback {
			return nil, fmt.Errorf("through the registry proxy %s: %w", p.name, err)
		}
		status := ""
		if resp != nil {
			status = resp.Status
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
			resp.Body.Close()
		} else {
			status = err.Error()
		}
		p.log.Warn("registry proxy failed a request; going to the registry directly", "proxy", p.name, "answer", status)
	} else {
		if !p.cfg.Fallback {
			return nil, fmt.Errorf("%w (%s)", errProxyDown, p.name)
		}
		now := time.Now().Unix()
		if last := p.lastWarn.Load(); now-last >= int64(fallbackWarnEvery/time.Second) && p.lastWarn.CompareAndSwap(last, now) {
			p.log.Warn("registry proxy unhealthy; going to the registry directly", "proxy", p.name)
		}
	}
	p.fellBack.Add(1)
	return p.direct.RoundTrip(req)
}

// skipProxyKey marks a request context whose requests go to the registry
// directly (upstream's last retry bypasses the proxy; ours bypasses the
// mirrors too).
type skipProxyKey struct{}

// withoutProxy returns ctx with its registry requests sent directly.
func withoutProxy(ctx context.Context) context.Context {
	return context.WithValue(ctx, skipProxyKey{}, true)
}
