package registry

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// patternReader yields n bytes of a position-derived pattern without
// holding them: a body of any length at no memory cost.
type patternReader struct{ pos, n int64 }

func patternByte(i int64) byte { return byte(i*7 + i>>11) }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.pos >= p.n {
		return 0, io.EOF
	}
	k := int64(len(b))
	if k > p.n-p.pos {
		k = p.n - p.pos
	}
	for i := int64(0); i < k; i++ {
		b[i] = patternByte(p.pos + i)
	}
	p.pos += k
	return int(k), nil
}

func pattern(off, n int64) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = patternByte(off + int64(i))
	}
	return b
}

func resp(status int, length int64, body io.Reader) *http.Response {
	return &http.Response{StatusCode: status, ContentLength: length, Body: io.NopCloser(body), Header: http.Header{}}
}

// TestRangeBody covers every answer to a Range request: 206, a 200 that
// is the range, a 200 with the whole object with and without a length,
// and bodies that end too early.
func TestRangeBody(t *testing.T) {
	const total = 100000
	cases := []struct {
		name      string
		r         *http.Response
		off, size uint64
		wantErr   string
	}{
		{"206", resp(206, 100, bytes.NewReader(pattern(5000, 100))), 5000, 100, ""},
		{"200 range", resp(200, 100, bytes.NewReader(pattern(5000, 100))), 5000, 100, ""},
		{"200 range without length", resp(200, -1, bytes.NewReader(pattern(5000, 100))), 5000, 100, ""},
		{"200 whole", resp(200, total, &patternReader{n: total}), 5000, 100, ""},
		{"200 whole without length", resp(200, -1, &patternReader{n: total}), 5000, 100, ""},
		{"200 whole, range inside the probe", resp(200, -1, &patternReader{n: total}), 50, 100, ""},
		{"200 whole, range across the probe", resp(200, -1, &patternReader{n: total}), 90, 100, ""},
		{"200 whole at the end", resp(200, total, &patternReader{n: total}), total - 100, 100, ""},
		{"200 whole too short", resp(200, total, &patternReader{n: total}), total - 50, 100, "end before"},
		{"200 whole body ends early", resp(200, -1, &patternReader{n: 5050}), 5000, 100, "unexpected EOF"},
		{"206 short", resp(206, -1, bytes.NewReader(pattern(5000, 10))), 5000, 100, "unexpected EOF"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RangeBody(tc.r, tc.off, tc.size)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, pattern(int64(tc.off), int64(tc.size))) {
				t.Fatal("wrong bytes")
			}
		})
	}
}

// TestRangeBodyStreams: 2 MiB at offset 190 MiB of a 200 MiB object
// sent whole allocates a few MiB, not the 192 MiB before the range's end.
func TestRangeBodyStreams(t *testing.T) {
	const off, size, total = 190 << 20, 2 << 20, 200 << 20
	for _, length := range []int64{total, -1} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		got, err := RangeBody(resp(200, length, &patternReader{n: total}), off, size)
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, pattern(off, size)) {
			t.Fatal("wrong bytes")
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
			t.Errorf("Content-Length %d: allocated %d MiB for a 2 MiB range", length, alloc>>20)
		}
	}
}

// TestServerIgnoringRangeRemembered: a registry that answers ranges with
// the whole blob serves correct bytes, and the client remembers it.
func TestServerIgnoringRangeRemembered(t *testing.T) {
	const total = 1 << 20
	var gets int
	c, _ := blobServer(t, func(w http.ResponseWriter, r *http.Request) {
		gets++
		w.Header().Set("Content-Length", strconv.Itoa(total))
		io.Copy(w, &patternReader{n: total})
	})
	warned := 0
	c.OnIgnoredRange(func() { warned++ })
	if c.IgnoresRange() {
		t.Fatal("ignores Range before any read")
	}
	for _, off := range []int64{1000, 500000, total - 10} {
		got, err := c.ReadRange(context.Background(), "sha256:"+strings.Repeat("a", 64), off, 10)
		if err != nil || !bytes.Equal(got, pattern(off, 10)) {
			t.Fatalf("offset %d: %v", off, err)
		}
	}
	if !c.IgnoresRange() || warned != 1 || gets != 3 {
		t.Fatalf("IgnoresRange %v, warned %d times, %d GETs", c.IgnoresRange(), warned, gets)
	}
}

// TestConnectionsReused: sequential and concurrent ranged reads reuse
// pooled connections instead of opening one per request.
func TestConnectionsReused(t *testing.T) {
	const total = 1 << 20
	c, conns := blobServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(pattern(0, total)))
	})
	read := func(off int64) {
		got, err := c.ReadRange(context.Background(), "sha256:"+strings.Repeat("b", 64), off, 1000)
		if err != nil || !bytes.Equal(got, pattern(off, 1000)) {
			t.Errorf("offset %d: %v", off, err)
		}
	}
	for i := int64(0); i < 20; i++ {
		read(i * 4096)
	}
	if n := conns.Load(); n > 2 {
		t.Fatalf("20 sequential reads opened %d connections", n)
	}
	for round := 0; round < 5; round++ {
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func(g int) { defer wg.Done(); read(int64(g) * 8192) }(g)
		}
		wg.Wait()
	}
	if n := conns.Load(); n > 10 {
		t.Fatalf("5 rounds of 8 concurrent reads opened %d connections in all, want the 8 of the first round reused", n)
	}
	t.Logf("%d connections for 60 reads", conns.Load())
}

// blobServer starts a test registry whose blob GETs h answers (the /v2/
// ping gets an empty 200), and returns a client of it and the count of
// connections opened to it; it is closed with the test.
func blobServer(t *testing.T, h http.HandlerFunc) (*Client, *atomic.Int64) {
	t.Helper()
	conns := new(atomic.Int64)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		h(w, r)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c, err := New(context.Background(), Config{Host: strings.TrimPrefix(srv.URL, "http://"), Repo: "x/y", Scheme: "http"})
	if err != nil {
		t.Fatal(err)
	}
	return c, conns
}
