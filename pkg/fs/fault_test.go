package fs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/registry"
)

func pushBlob(t *testing.T, base, repo string, b []byte) {
	t.Helper()
	resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = base + loc
	}
	req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("%s?digest=sha256:%x", loc, sha256.Sum256(b)), bytes.NewReader(b))
	if resp, err = http.DefaultClient.Do(req); err != nil || resp.StatusCode != 201 {
		t.Fatalf("upload: %v %v", err, resp)
	}
	resp.Body.Close()
}

// faultyImage builds an image, stores its blob in an in-process registry
// behind a proxy that injects the given faults into blob GETs.
func faultyImage(t *testing.T, files []treetest.File, fault func(n int64, w http.ResponseWriter, r *http.Request) bool) (*FS, *httptest.Server) {
	t.Helper()
	var blob bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(treetest.Tar(files)), &blob, builder.Options{ChunkSize: 0x10000})
	if err != nil {
		t.Fatal(err)
	}
	back := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(back.Close)
	pushBlob(t, back.URL, "app", blob.Bytes())
	u, _ := url.Parse(back.URL)
	rp := httputil.NewSingleHostReverseProxy(u)
	var n atomic.Int64
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/sha256:") && fault(n.Add(1), w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	c, err := registry.New(context.Background(), registry.Config{Host: strings.TrimPrefix(front.URL, "http://"), Repo: "app", Scheme: "http", Timeout: 1, RetryLimit: 4})
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(context.Background(), res.Bootstrap, c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return f, front
}

func readAll(t *testing.T, f *FS, path string) ([]byte, error) {
	t.Helper()
	ctx := context.Background()
	ino, err := f.Lookup(ctx, f.RootNid(), strings.TrimPrefix(path, "/"))
	if err != nil {
		return nil, err
	}
	buf := make([]byte, ino.Size)
	var off int64
	for off < int64(ino.Size) {
		n, err := f.Read(ctx, ino.Nid, buf[off:min(off+128<<10, int64(ino.Size))], off)
		if err != nil {
			return nil, err
		}
		off += int64(n)
	}
	return buf, nil
}

// TestReadsSurviveBackendFaults injects 5xx, resets, stalls and short
// bodies into every other blob request: reads succeed through retries.
func TestReadsSurviveBackendFaults(t *testing.T) {
	data := treetest.Random(3, 1<<20)
	f, _ := faultyImage(t, []treetest.File{treetest.Reg("file", 0o644, data)}, func(n int64, w http.ResponseWriter, r *http.Request) bool {
		switch n % 8 {
		case 1:
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		case 3:
			hj, _ := w.(http.Hijacker)
			conn, _, _ := hj.Hijack()
			conn.Close() // connection reset
			return true
		case 5:
			time.Sleep(1500 * time.Millisecond) // longer than the 1 s timeout
			w.WriteHeader(http.StatusGatewayTimeout)
			return true
		case 7:
			w.Header().Set("Content-Length", "100000")
			w.WriteHeader(http.StatusPartialContent)
			w.Write([]byte("short")) // short read
			return true
		}
		return false
	})
	got, err := readAll(t, f, "/file")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
}

// TestBackendGoneFailsBounded: with the backend gone, reads fail with EIO
// within a bounded time, concurrently, and never hang.
func TestBackendGoneFailsBounded(t *testing.T) {
	f, front := faultyImage(t, []treetest.File{treetest.Reg("a", 0o644, treetest.Random(4, 300000)), treetest.Reg("b", 0o644, treetest.Random(5, 300000))}, func(int64, http.ResponseWriter, *http.Request) bool { return false })
	front.Close()
	start := time.Now()
	var wg sync.WaitGroup
	for _, p := range []string{"/a", "/b", "/a"} {
		wg.Add(1)
		go func(p string) {
			defer wg.Done()
			if _, err := readAll(t, f, p); !errors.Is(err, ErrIO) {
				t.Errorf("%s: %v, want EIO", p, err)
			}
		}(p)
	}
	wg.Wait()
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("reads took %v", d)
	}
}

// TestConcurrentReads reads overlapping ranges of the same and different
// files from many goroutines (run under -race).
func TestConcurrentReads(t *testing.T) {
	var files []treetest.File
	for i := 0; i < 6; i++ {
		files = append(files, treetest.Reg(fmt.Sprintf("f%d", i), 0o644, treetest.Random(int64(i), 400000)))
	}
	f, _ := faultyImage(t, files, func(int64, http.ResponseWriter, *http.Request) bool { return false })
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := 0; g < 24; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			i := g % 6
			ino, err := f.Lookup(ctx, f.RootNid(), fmt.Sprintf("f%d", i))
			if err != nil {
				t.Error(err)
				return
			}
			want := treetest.Random(int64(i), 400000)
			for off := int64(g * 1000 % 50000); off < 400000; off += 70000 {
				buf := make([]byte, 90000)
				n, err := f.Read(ctx, ino.Nid, buf, off)
				if err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
					t.Errorf("f%d at %d: wrong data", i, off)
					return
				}
			}
		}(g)
	}
	wg.Wait()
}
