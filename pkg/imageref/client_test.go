package imageref

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestIdleTimeout: a body that stalls fails after the idle timeout, one
// that keeps sending does not.
func TestIdleTimeout(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		for i := 0; i < 6; i++ {
			w.Write([]byte("x"))
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
		if r.URL.Path == "/stall" {
			select {
			case <-stop:
			case <-r.Context().Done():
			}
		}
	}))
	defer srv.Close()
	c := &http.Client{Transport: &idleTimeoutTransport{rt: http.DefaultTransport, idle: 400 * time.Millisecond}}
	for path, wantErr := range map[string]bool{"/steady": false, "/stall": true} {
		resp, err := c.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if wantErr != (err != nil) || len(b) != 6 {
			t.Fatalf("%s: %d bytes, %v", path, len(b), err)
		}
		if wantErr && (!strings.Contains(err.Error(), "sent nothing for 400ms") || time.Since(start) > 5*time.Second) {
			t.Fatalf("%s: %v after %s", path, err, time.Since(start))
		}
	}
}
