package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestOpenRange: a streamed range gives the right bytes for every answer
// a server may give (206, a 200 that is the range, the whole blob with
// and without a length), and a clear error for a wrong Content-Range, a
// wrong length and a body that ends early.
func TestOpenRange(t *testing.T) {
	const total = 300000
	const off, n = 120000, 50000
	cases := []struct {
		name    string
		h       func(w http.ResponseWriter, r *http.Request)
		wantErr string
	}{
		{"206 (http.ServeContent)", func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(pattern(0, total)))
		}, ""},
		{"200 range", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(n))
			w.Write(pattern(off, n))
		}, ""},
		{"200 whole", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(total))
			io.Copy(w, &patternReader{n: total})
		}, ""},
		{"200 whole without length", func(w http.ResponseWriter, r *http.Request) {
			w.(http.Flusher).Flush()
			io.Copy(w, &patternReader{n: total})
		}, ""},
		{"206 wrong Content-Range", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off+1, off+n, total))
			w.Header().Set("Content-Length", strconv.Itoa(n))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(pattern(off+1, n))
		}, "Content-Range"},
		{"206 wrong length", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(n-1))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(pattern(off, n-1))
		}, "answered with 49999 bytes"},
		{"206 body ends early", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusPartialContent)
			w.(http.Flusher).Flush()
			w.Write(pattern(off, n-10))
		}, "unexpected EOF"},
		{"200 whole ends before the range", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.Itoa(off+10))
			w.Write(pattern(0, off+10))
		}, "end before the range"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := blobServer(t, tc.h)
			got, err := func() ([]byte, error) {
				rc, err := c.OpenRange(context.Background(), strings.Repeat("c", 64), off, n)
				if err != nil {
					return nil, err
				}
				defer rc.Close()
				return io.ReadAll(rc)
			}()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, pattern(off, n)) {
				t.Fatalf("wrong bytes (%d of %d)", len(got), n)
			}
		})
	}
}

// TestOpenRangeStreams: the first bytes of a streamed range are readable
// before the server has sent the rest, and a fully read stream's
// connection is reused.
func TestOpenRangeStreams(t *testing.T) {
	release := make(chan struct{})
	c, conns := blobServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Range", "bytes 0-199999/200000")
		w.Header().Set("Content-Length", "200000")
		w.WriteHeader(http.StatusPartialContent)
		w.Write(pattern(0, 1000))
		w.(http.Flusher).Flush()
		<-release
		w.Write(pattern(1000, 199000))
	})
	for round := range 3 {
		rc, err := c.OpenRange(context.Background(), strings.Repeat("d", 64), 0, 200000)
		if err != nil {
			t.Fatal(err)
		}
		head := make([]byte, 1000)
		if _, err := io.ReadFull(rc, head); err != nil || !bytes.Equal(head, pattern(0, 1000)) {
			t.Fatalf("round %d: the range's head before the rest was sent: %v", round, err)
		}
		release <- struct{}{}
		rest, err := io.ReadAll(rc)
		if err != nil || !bytes.Equal(rest, pattern(1000, 199000)) {
			t.Fatalf("round %d: the rest: %v", round, err)
		}
		rc.Close()
	}
	if n := conns.Load(); n > 2 {
		t.Fatalf("3 sequential streams opened %d connections", n)
	}
}
