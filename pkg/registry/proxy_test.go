package registry

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recorder keeps what a fake server was asked and the status it answers
// with when set.
type recorder struct {
	status atomic.Int32
	mu     sync.Mutex
	seen   []string
}

func (r *recorder) record(s string) {
	r.mu.Lock()
	r.seen = append(r.seen, s)
	r.mu.Unlock()
}

func (r *recorder) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

// fakeProxy is a forward proxy that relays requests to their origin, or
// answers status when it is set; it records what it was asked.
type fakeProxy struct {
	*httptest.Server
	recorder
}

func newFakeProxy(t *testing.T) *fakeProxy {
	p := &fakeProxy{}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.record(r.Method + " " + r.RequestURI)
		if s := p.status.Load(); s != 0 {
			w.WriteHeader(int(s))
			return
		}
		if r.URL.Path == "/ping" {
			return
		}
		out, err := http.NewRequest(r.Method, r.RequestURI, nil)
		if err != nil {
			w.WriteHeader(400)
			return
		}
		out.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			w.WriteHeader(502)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(p.Close)
	return p
}

// TestProxyTransport: registry requests go through a healthy proxy
// (with use_http, as http); token requests go directly; a proxy that
// fails or answers 5xx is fallen back from, or, without fallback, fails
// the request; an unhealthy proxy (its ping fails) is skipped until a
// ping succeeds again.
func TestProxyTransport(t *testing.T) {
	var originHits atomic.Int64
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		originHits.Add(1)
		io.WriteString(w, "from origin "+r.URL.Path)
	}))
	defer origin.Close()
	p := newFakeProxy(t)
	get := func(rt http.RoundTripper, path string) (string, error) {
		req, _ := http.NewRequest("GET", origin.URL+path, nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b), nil
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	pt, err := newProxyTransport(ProxyConfig{URL: p.URL, PingURL: p.URL + "/ping", Fallback: true, CheckInterval: 20 * time.Millisecond}, base, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pt.close()
	if b, err := get(pt, "/v2/r/blobs/sha256:aa"); err != nil || b != "from origin /v2/r/blobs/sha256:aa" {
		t.Fatalf("through the proxy: %q %v", b, err)
	}
	if b, err := get(pt, "/token"); err != nil || !strings.HasPrefix(b, "from origin") {
		t.Fatalf("token: %q %v", b, err)
	}
	reqs := p.requests()
	var blob, token bool
	for _, r := range reqs {
		blob = blob || strings.Contains(r, "/v2/r/blobs/sha256:aa")
		token = token || strings.Contains(r, "/token")
	}
	if !blob || token {
		t.Fatalf("the proxy saw %v: want the blob request, not the token one", reqs)
	}
	// 5xx from the proxy: fallback to the origin.
	p.status.Store(502)
	hits := originHits.Load()
	if b, err := get(pt, "/v2/r/blobs/sha256:bb"); err != nil || !strings.HasPrefix(b, "from origin") || originHits.Load() != hits+1 {
		t.Fatalf("fallback after a 502: %q %v", b, err)
	}
	// Its pings fail too: it is skipped, then used again when they pass.
	deadline := time.Now().Add(5 * time.Second)
	for pt.healthy.Load() {
		if time.Now().After(deadline) {
			t.Fatal("a proxy whose ping answers 502 stays healthy")
		}
		time.Sleep(10 * time.Millisecond)
	}
	n := len(p.requests())
	get(pt, "/v2/r/blobs/sha256:cc")
	for _, r := range p.requests()[n:] {
		if strings.Contains(r, "sha256:cc") {
			t.Fatal("an unhealthy proxy was sent a request")
		}
	}
	p.status.Store(0)
	for !pt.healthy.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the proxy did not recover after its ping passed")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Without fallback: an unhealthy proxy fails the request.
	nofb, err := newProxyTransport(ProxyConfig{URL: "http://127.0.0.1:1", Fallback: false}, base, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nofb.close()
	if _, err := get(nofb, "/v2/r/blobs/sha256:dd"); err == nil {
		t.Fatal("a dead proxy without fallback served a request")
	}
	nofb.healthy.Store(false)
	if _, err := get(nofb, "/v2/r/blobs/sha256:dd"); !errors.Is(err, errProxyDown) {
		t.Fatalf("an unhealthy proxy without fallback: %v", err)
	}

	// use_http: an https registry URL goes to the proxy as http.
	uh, _ := newProxyTransport(ProxyConfig{URL: p.URL, UseHTTP: true}, base, time.Second, nil)
	defer uh.close()
	n = len(p.requests())
	req, _ := http.NewRequest("GET", strings.Replace(origin.URL, "http:", "https:", 1)+"/v2/r/blobs/sha256:ee", nil)
	if resp, err := uh.RoundTrip(req); err == nil {
		resp.Body.Close()
	}
	if got := p.requests()[n:]; len(got) != 1 || !strings.HasPrefix(got[0], "GET http://") {
		t.Fatalf("use_http: the proxy saw %v", got)
	}
}

// TestRedirectRewrite: blob_url_scheme and blob_redirected_host rewrite
// where a blob redirect goes.
func TestRedirectRewrite(t *testing.T) {
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "cdn "+r.URL.Path) }))
	defer cdn.Close()
	reg := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://storage.invalid/data/x", http.StatusTemporaryRedirect)
	}))
	defer reg.Close()
	cfg := Config{BlobURLScheme: "http", BlobRedirectedHost: strings.TrimPrefix(cdn.URL, "http://")}
	c := &http.Client{CheckRedirect: cfg.redirect}
	resp, err := c.Get(reg.URL + "/v2/r/blobs/sha256:ff")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "cdn /data/x" {
		t.Fatalf("redirect went to %q", b)
	}
}
