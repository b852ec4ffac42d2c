package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nydus-go/nydus/internal/roottest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
)

// peakRSS returns a process's peak resident set size (VmHWM) in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestRangeIgnoringRegistryBoundedMemory: a registry (or a pull-through
// cache, CDN or proxy) that answers every Range request with the whole
// blob. Reading 2 MiB at offset 190 MiB of a 200 MiB file gives the right
// bytes, and nydusd's peak RSS stays under 256 MiB: what comes before the
// range is discarded as it arrives.
func TestRangeIgnoringRegistryBoundedMemory(t *testing.T) {
	roottest.RequireFUSE(t)
	const size, off, n = 200 << 20, 190 << 20, 2 << 20
	data := treetest.Random(42, size)
	dir := t.TempDir()
	blobPath := filepath.Join(dir, "blob")
	bf, err := os.Create(blobPath)
	if err != nil {
		t.Fatal(err)
	}
	res, err := builder.Create(context.Background(), bytes.NewReader(treetest.Tar([]treetest.File{treetest.Reg("big", 0o644, data)})), bf,
		builder.Options{Whiteout: builder.WhiteoutNone, ChunkSize: 1 << 20})
	bf.Close()
	if err != nil {
		t.Fatal(err)
	}
	boot := writeBoot(t, dir, res.Bootstrap)
	var served, gets atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		if !strings.HasSuffix(r.URL.Path, "/blobs/sha256:"+res.BlobID) {
			http.NotFound(w, r)
			return
		}
		f, err := os.Open(blobPath)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer f.Close()
		fi, _ := f.Stat()
		gets.Add(1)
		w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
		w.WriteHeader(http.StatusOK) // Range ignored
		k, _ := io.Copy(w, f)
		served.Add(k)
	}))
	defer srv.Close()
	cfg := filepath.Join(dir, "config.json")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`{"device":{"backend":{"type":"registry","config":{"host":%q,"repo":"x","scheme":"http","timeout":30}},"cache":{"type":"blobcache","config":{"work_dir":%q}}}}`,
		strings.TrimPrefix(srv.URL, "http://"), filepath.Join(dir, "cache"))), 0o600)
	d := start(t, "--bootstrap", boot, "--config", cfg)
	f, err := os.Open(filepath.Join(d.mnt, "big"))
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, n)
	_, err = f.ReadAt(got, off)
	f.Close()
	if err != nil {
		t.Fatalf("read: %v\n%s", err, d.log)
	}
	if !bytes.Equal(got, data[off:off+n]) {
		t.Fatal("wrong bytes")
	}
	rss := peakRSS(t, d.cmd.Process.Pid)
	t.Logf("nydusd peak RSS %d MiB after %d GETs that sent %d MiB", rss>>20, gets.Load(), served.Load()>>20)
	if rss > 256<<20 {
		t.Errorf("nydusd peak RSS %d MiB, want under 256 MiB", rss>>20)
	}
	if !strings.Contains(d.log.String(), "ignores Range") {
		t.Errorf("nydusd does not warn that the registry ignores Range:\n%s", d.log)
	}
}

func writeBoot(t *testing.T, dir string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, "image.boot")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
