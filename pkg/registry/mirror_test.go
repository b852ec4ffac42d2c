package registry

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeMirror serves blobs itself, or answers status when it is set, and
// records each request's path and Authorization and X-Mirror headers.
type fakeMirror struct {
	*httptest.Server
	recorder
}

func newFakeMirror(t *testing.T, name string) *fakeMirror {
	m := &fakeMirror{}
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.record(r.URL.Path + " auth=" + r.Header.Get("Authorization") + " x=" + r.Header.Get("X-Mirror"))
		if s := m.status.Load(); s != 0 {
			w.WriteHeader(int(s))
			return
		}
		io.WriteString(w, "from "+name+" "+r.URL.Path)
	}))
	t.Cleanup(m.Close)
	return m
}

// TestMirrorTransport: blobs and manifests go to the first mirror that
// can serve them, in order, with the mirror's headers and without the
// origin's credentials unless auth_through; 5xx, 401, 403, 404 and 429
// pass a request on; a mirror that cannot be reached is counted,
// disabled at its failure limit and enabled again by its ping; with
// every mirror out, requests go to the origin; the /v2/ probe always
// goes to the origin.
func TestMirrorTransport(t *testing.T) {
	var originHits atomic.Int64
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		originHits.Add(1)
		io.WriteString(w, "from origin "+r.URL.Path)
	}))
	defer origin.Close()
	m1, m2 := newFakeMirror(t, "m1"), newFakeMirror(t, "m2")

	// A third mirror's address that refuses connections, until it is
	// listened on again.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downAddr := l.Addr().String()
	l.Close()

	mt, err := newMirrorTransport([]MirrorConfig{
		{Host: "http://" + downAddr, FailureLimit: 2, HealthCheckInterval: 50 * time.Millisecond},
		{Host: m1.URL, Headers: map[string]string{"X-Mirror": "one"}},
		{Host: m2.URL, AuthThrough: true},
	}, http.DefaultTransport.(*http.Transport), time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mt.close()
	get := func(path string) string {
		t.Helper()
		req, _ := http.NewRequest("GET", origin.URL+path, nil)
		req.Header.Set("Authorization", "Bearer origin-token")
		resp, err := mt.RoundTrip(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}

	blob := "/v2/r/blobs/sha256:aa"
	if got := get(blob); got != "from m1 "+blob {
		t.Fatalf("first blob: %q", got)
	}
	if r := m1.requests(); len(r) != 1 || r[0] != blob+" auth= x=one" {
		t.Fatalf("m1 saw %q: want no credentials and its header", r)
	}
	if got := get("/v2/"); got != "from origin /v2/" {
		t.Fatalf("the /v2/ probe: %q", got)
	}
	get(blob)
	get(blob)
	// The unreachable mirror failed twice: disabled, no more tries.
	st := mt.stats()
	if st[0].Failures != 2 || st[0].Healthy || st[1].Served != 3 {
		t.Fatalf("after three requests: %+v", st)
	}

	// m1 answers 503, then 401, then 404: each goes on to m2, which gets
	// the credentials (auth_through) and not m1's header.
	for _, s := range []int32{503, 401, 404} {
		m1.status.Store(s)
		if got := get(blob); got != "from m2 "+blob {
			t.Fatalf("m1 answering %d: %q", s, got)
		}
	}
	if r := m2.requests(); len(r) != 3 || r[0] != blob+" auth=Bearer origin-token x=" {
		t.Fatalf("m2 saw %q", r)
	}
	if st := mt.stats(); st[1].Skipped != 3 || !st[1].Healthy || st[2].Served != 3 {
		t.Fatalf("stats after passing on: %+v", st)
	}

	// Every mirror out: the origin.
	m2.status.Store(500)
	hits := originHits.Load()
	if got := get(blob); got != "from origin "+blob || originHits.Load() != hits+1 {
		t.Fatalf("all mirrors out: %q", got)
	}

	// The down mirror comes back: its ping enables it again.
	back, err := net.Listen("tcp", downAddr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "from m0 "+r.URL.Path)
	})}
	go srv.Serve(back)
	defer srv.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !mt.stats()[0].Healthy {
		if time.Now().After(deadline) {
			t.Fatal("the mirror that came back was not enabled by its ping")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := get(blob); got != "from m0 "+blob {
		t.Fatalf("after recovery: %q", got)
	}
}

// TestMirrorConfigErrors: bad mirror settings are refused by name, and a
// proxy with mirrors is refused as upstream refuses it.
func TestMirrorConfigErrors(t *testing.T) {
	base := http.DefaultTransport.(*http.Transport)
	for _, c := range []struct {
		m    MirrorConfig
		want string
	}{
		{MirrorConfig{Host: "127.0.0.1:5000"}, "mirrors[0].host"},
		{MirrorConfig{Host: "http://m", PingURL: "::"}, "mirrors[0].ping_url"},
		{MirrorConfig{Host: "http://m", Headers: map[string]string{"Bad Name": "x"}}, "mirrors[0].headers"},
	} {
		if _, err := newMirrorTransport([]MirrorConfig{c.m}, base, time.Second, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %s", c.m, err, c.want)
		}
	}
	_, err := New(t.Context(), Config{Host: "127.0.0.1:1", Repo: "r", Scheme: "http",
		Proxy: &ProxyConfig{URL: "http://127.0.0.1:2"}, Mirrors: []MirrorConfig{{Host: "http://127.0.0.1:3"}}})
	if err == nil || !strings.Contains(err.Error(), "proxy and mirrors") {
		t.Fatalf("proxy with mirrors: %v", err)
	}
}

// TestRouteURLsRedacted: a password in a mirror's or the proxy's URL
// (http://user:password@host) reaches no log line, error or statistic.
func TestRouteURLsRedacted(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String()
	l.Close()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "origin") }))
	defer origin.Close()
	base := http.DefaultTransport.(*http.Transport)
	mt, err := newMirrorTransport([]MirrorConfig{{Host: "http://u:s3cretpw@" + down, FailureLimit: 1, HealthCheckInterval: 20 * time.Millisecond}}, base, time.Second, log)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", origin.URL+"/v2/r/blobs/sha256:aa", nil)
	if resp, err := mt.RoundTrip(req); err == nil {
		resp.Body.Close()
	}
	time.Sleep(100 * time.Millisecond)
	mt.close()
	pt, err := newProxyTransport(ProxyConfig{URL: "http://u:s3cretpw@" + down, PingURL: "http://u:s3cretpw@" + down + "/ping", CheckInterval: 20 * time.Millisecond}, base, time.Second, log)
	if err != nil {
		t.Fatal(err)
	}
	req, _ = http.NewRequest("GET", origin.URL+"/v2/r/blobs/sha256:aa", nil)
	_, perr := pt.RoundTrip(req)
	time.Sleep(100 * time.Millisecond)
	pt.close()
	_, cerr := newMirrorTransport([]MirrorConfig{{Host: "ftp://u:s3cretpw@h"}}, base, time.Second, log)
	all := logs.String() + fmt.Sprint(mt.stats(), perr, cerr)
	if !strings.Contains(logs.String(), "registry mirror disabled") || !strings.Contains(logs.String(), "registry proxy") {
		t.Fatalf("the routes logged nothing, so this test shows nothing:\n%s", logs.String())
	}
	if strings.Contains(all, "s3cretpw") {
		t.Fatalf("a URL's password was shown:\n%s", all)
	}
}
