package api_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nydus-go/nydus/pkg/daemon"
	"github.com/nydus-go/nydus/pkg/daemon/api"
	"github.com/nydus-go/nydus/pkg/fetch"
)

// serve serves a real daemon's API (no image mounted, an event log with
// one event) on a unix socket in a temporary directory.
func serve(t *testing.T) (sock string, log *daemon.EventLog) {
	t.Helper()
	dir := t.TempDir()
	log, err := daemon.OpenEventLog(filepath.Join(dir, "events.log"), "d1", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close() })
	if _, err := log.Append(fetch.Event{Kind: "mount", Path: "/"}); err != nil {
		t.Fatal(err)
	}
	d := daemon.New(daemon.Options{ID: "d1", EventLog: log, Version: api.Version{PackageVer: "v9"}})
	sock = filepath.Join(dir, "api.sock")
	stop, err := d.ServeAPI(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return sock, log
}

func TestClientCalls(t *testing.T) {
	sock, log := serve(t)
	c := api.NewClient(sock)
	defer c.Close()
	ctx := context.Background()
	info, err := c.DaemonInfo(ctx)
	if err != nil || info.ID != "d1" || info.State != api.StateInit || info.Version.PackageVer != "v9" {
		t.Fatalf("DaemonInfo: %+v, %v", info, err)
	}
	evs, err := c.Events(ctx, 0, 0)
	if err != nil || len(evs) != 1 || evs[0].Seq() != 1 || evs[0].Data.Kind != "mount" {
		t.Fatalf("Events: %+v, %v", evs, err)
	}
	// A long poll returns as soon as an event comes.
	go func() {
		time.Sleep(50 * time.Millisecond)
		log.Append(fetch.Event{Kind: "backend-error", Path: "/f"})
	}()
	evs, err = c.Events(ctx, 1, 10*time.Second)
	if err != nil || len(evs) != 1 || evs[0].Seq() != 2 || evs[0].Data.Path != "/f" {
		t.Fatalf("Events(since 1, wait): %+v, %v", evs, err)
	}
	if m, err := c.BlobCacheMetrics(ctx, ""); err != nil || !m.DataAllReady {
		t.Fatalf("BlobCacheMetrics: %+v, %v", m, err)
	}
	if _, err := c.Get(ctx, "/metrics"); err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	resp, err := c.Do(ctx, http.MethodGet, "/api/v1/nope", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("Do GET /api/v1/nope: %s, want 404", resp.Status)
	}
}

func TestClientStatusError(t *testing.T) {
	sock, _ := serve(t)
	c := api.NewClient(sock)
	ctx := context.Background()
	// Nothing is mounted: the metrics of a file need a mounted image.
	_, err := c.FileMetrics(ctx, "/nope")
	var se *api.StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusNotFound || se.Code != "ENOENT" || !strings.Contains(se.Message, `no image mounted at "/nope"`) {
		t.Fatalf("FileMetrics of an unknown id: %#v", err)
	}
	want := "nydusd API " + sock + `: GET /api/v1/metrics/files?id=%2Fnope: 404 Not Found: ENOENT: no image mounted at "/nope"`
	if err.Error() != want {
		t.Fatalf("error reads\n%s\nwant\n%s", err, want)
	}
	if err := c.Umount(ctx, "/img1"); !errors.As(err, &se) || se.StatusCode != http.StatusNotFound || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Umount of nothing: %v", err)
	}
	if _, err := c.Events(ctx, 0, -1); err != nil {
		t.Fatalf("Events with no wait: %v", err)
	}
	if err := c.GetJSON(ctx, "/api/v1/events?since=x", new(any)); !errors.As(err, &se) || se.StatusCode != 400 || se.Code != "EINVAL" {
		t.Fatalf("GET events?since=x: %v", err)
	}
	// A body that is not an error body is the message, on one line.
	plain := filepath.Join(t.TempDir(), "plain.sock")
	serveFunc(t, plain, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream\nproxy broke", http.StatusBadGateway)
	})
	_, err = api.NewClient(plain).DaemonInfo(ctx)
	if !errors.As(err, &se) || se.StatusCode != http.StatusBadGateway || se.Code != "" || !strings.HasSuffix(err.Error(), ": 502 Bad Gateway: upstream proxy broke") {
		t.Fatalf("plain error: %v", err)
	}
	// A lifecycle call succeeds on 204 only, as nydus-snapshotter's
	// client wants it.
	ok200 := filepath.Join(t.TempDir(), "ok200.sock")
	serveFunc(t, ok200, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	if err := api.NewClient(ok200).Umount(ctx, "/img1"); err == nil || !strings.Contains(err.Error(), "want 204 No Content") {
		t.Fatalf("umount answered 200: %v", err)
	}
	// No daemon at all.
	if _, err := api.NewClient(filepath.Join(t.TempDir(), "none.sock")).DaemonInfo(ctx); err == nil || errors.As(err, &se) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("no socket: %v", err)
	}
}

// serveFunc serves h on a unix socket at sock.
func serveFunc(t *testing.T, sock string, h http.HandlerFunc) {
	t.Helper()
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
}

func TestClientNeverAnswered(t *testing.T) {
	// A daemon that accepts connections and never answers.
	sock := filepath.Join(t.TempDir(), "hung.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var mu sync.Mutex
	var conns []net.Conn
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	// A cancelled context ends the call at once.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err = api.NewClient(sock, api.WithTimeout(0)).DaemonInfo(ctx)
	if !errors.Is(err, context.Canceled) || time.Since(start) > 5*time.Second {
		t.Fatalf("cancelled: %v after %s", err, time.Since(start))
	}
	// So does the client's timeout.
	start = time.Now()
	err = api.NewClient(sock, api.WithTimeout(100*time.Millisecond)).TakeOver(context.Background())
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second || strings.Contains(err.Error(), "\n") {
		t.Fatalf("timeout: %v after %s", err, time.Since(start))
	}
}
