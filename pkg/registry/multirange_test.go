package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

// readAll collects ReadRanges' answers.
func readAll(t *testing.T, c *Client, digest string, ranges [][2]int64) ([][]byte, error) {
	t.Helper()
	out := make([][]byte, len(ranges))
	next := 0
	err := c.ReadRanges(context.Background(), digest, ranges, func(i int, r io.Reader) error {
		if i != next {
			return fmt.Errorf("range %d handed over before %d", i, next)
		}
		next++
		b, err := io.ReadAll(r)
		out[i] = b
		return err
	})
	return out, err
}

var testRanges = [][2]int64{{100, 1000}, {5000, 20}, {70000, 30000}, {150000, 1}}

// TestReadRangesDockerRegistry: several ranges of a blob in Debian's
// docker-registry come back right with one GET.
func TestReadRangesDockerRegistry(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{})
	registrytest.PushImage(t, r.Host+"/mr:1", [][]byte{treetest.Tar([]treetest.File{treetest.Reg("f", 0o644, treetest.Random(5, 400000))})})
	ref, _ := name.ParseReference(r.Host+"/mr:1", name.Insecure)
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	ls, _ := img.Layers()
	d, _ := ls[0].Digest()
	rc, _ := ls[0].Compressed()
	blob, _ := io.ReadAll(rc)
	rc.Close()
	c, err := New(context.Background(), Config{Host: r.Host, Repo: "mr", Scheme: "http"})
	if err != nil {
		t.Fatal(err)
	}
	r.ResetStats()
	got, err := readAll(t, c, d.String(), testRanges)
	if err != nil {
		t.Fatal(err)
	}
	for i, rg := range testRanges {
		if !bytes.Equal(got[i], blob[rg[0]:rg[0]+rg[1]]) {
			t.Fatalf("range %d: wrong bytes", i)
		}
	}
	if st := r.Stats(); st.BlobGets != 1 {
		t.Fatalf("%d GETs for %d ranges, want 1", st.BlobGets, len(testRanges))
	}
}

// TestReadRangesAnswers: every answer a server may give to a multi-range
// request gives the right bytes or a clear error: multipart (Go's
// http.ServeContent), a 400 (remembered: later calls send single
// ranges), a 200 with the whole blob from a server that ignores Range
// and from one that does so for multi-range requests only, one range
// covering them all, and a part with the wrong Content-Range.
func TestReadRangesAnswers(t *testing.T) {
	const total = 200000
	blob := pattern(0, total)
	cases := []struct {
		name       string
		h          func(w http.ResponseWriter, r *http.Request)
		wantErr    string
		wantGets   int64 // for two calls
		wantSingle bool
	}{
		{"multipart", func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(blob))
		}, "", 2, false},
		{"400 then single ranges", func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.Header.Get("Range"), ",") {
				http.Error(w, "no multi-range", http.StatusBadRequest)
				return
			}
			http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(blob))
		}, "", 1 + 2*int64(len(testRanges)), true},
		// A server that ignores Range: the multi-range answer is dropped
		// for a single range, whose answer tells; then one pass.
		{"200 whole", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(total))
			w.Write(blob)
		}, "", 4, false},
		// A slice cache (nginx): whole answers to multi-range requests
		// only; single ranges from then on.
		{"200 whole to multi-range only", func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.Header.Get("Range"), ",") {
				w.Header().Set("Content-Length", strconv.Itoa(total))
				w.Write(blob)
				return
			}
			http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(blob))
		}, "", 1 + 2*int64(len(testRanges)), false},
		{"one covering range", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", total-1, total))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(blob)
		}, "", 2, false},
		{"wrong part", func(w http.ResponseWriter, r *http.Request) {
			r.Header.Set("Range", strings.Replace(r.Header.Get("Range"), "5000-5019", "5001-5020", 1))
			http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(blob))
		}, "want bytes 5000-5019", 1, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var gets atomic.Int64
			c, _ := blobServer(t, func(w http.ResponseWriter, r *http.Request) {
				gets.Add(1)
				tc.h(w, r)
			})
			for call := 0; call < 2; call++ {
				got, err := readAll(t, c, strings.Repeat("e", 64), testRanges)
				if tc.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Fatalf("err %v, want %q", err, tc.wantErr)
					}
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				for i, rg := range testRanges {
					if !bytes.Equal(got[i], blob[rg[0]:rg[0]+rg[1]]) {
						t.Fatalf("call %d range %d: wrong bytes", call, i)
					}
				}
			}
			if gets.Load() != tc.wantGets || c.singleRanges.Load() != tc.wantSingle {
				t.Fatalf("%d GETs (want %d), single ranges %v", gets.Load(), tc.wantGets, c.singleRanges.Load())
			}
		})
	}
}

// TestReadRangesReusesConnections: multi-range answers read to their end
// leave their connection to the next request.
func TestReadRangesReusesConnections(t *testing.T) {
	blob := pattern(0, 200000)
	c, conns := blobServer(t, func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(blob))
	})
	for range 10 {
		if _, err := readAll(t, c, strings.Repeat("f", 64), testRanges); err != nil {
			t.Fatal(err)
		}
	}
	if n := conns.Load(); n > 2 {
		t.Fatalf("10 sequential multi-range reads opened %d connections", n)
	}
}
