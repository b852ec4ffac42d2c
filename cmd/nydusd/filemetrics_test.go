package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nydus-go/nydus/internal/roottest"
	"github.com/nydus-go/nydus/internal/treetest"
)

// TestFileMetrics checks GET /api/v1/metrics/files and /metrics/pattern
// with iostats_files: the bytes read per file, upstream's counters, the
// ?latest=true drain, and a clear error for an unknown id.
func TestFileMetrics(t *testing.T) {
	roottest.RequireFUSE(t)
	data := treetest.Random(77, 300000)
	boot, blobs := image(t, treetest.Tar([]treetest.File{treetest.Reg("bin/app", 0o755, data), treetest.Reg("etc/unread", 0o644, []byte("x"))}))
	cfg := strings.Replace(localfsConfig(t, blobs), `"enable_xattr":true`, `"enable_xattr":true,"iostats_files":true,"access_pattern":true`, 1)
	cfg = strings.Replace(cfg, `"enable":true,"prefetch_all":true`, `"enable":false,"prefetch_all":false`, 1)
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	d := start(t, "--bootstrap", boot, "--config", cfgPath, "--passthrough=false")
	if b, err := os.ReadFile(filepath.Join(d.mnt, "bin/app")); err != nil || len(b) != len(data) {
		t.Fatalf("read: %d %v", len(b), err)
	}
	code, body := d.do("GET", "/api/v1/metrics/files", nil)
	var files map[string]struct {
		TotalFops      uint64   `json:"total_fops"`
		DataRead       uint64   `json:"data_read"`
		BlockCountRead []uint64 `json:"block_count_read"`
		FopHits        []uint64 `json:"fop_hits"`
		FopErrors      []uint64 `json:"fop_errors"`
		Path           string   `json:"path"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &files) != nil {
		t.Fatalf("metrics/files: %d %s", code, body)
	}
	var app string
	for ino, f := range files {
		if f.Path == "/bin/app" {
			app = ino
			if f.DataRead != uint64(len(data)) || len(f.BlockCountRead) != 8 || len(f.FopHits) != 15 || f.FopHits[4] == 0 || f.FopHits[2] != 1 || f.FopErrors[4] != 0 {
				t.Fatalf("/bin/app stats: %+v", f)
			}
		}
		if f.Path == "/etc/unread" && f.DataRead != 0 {
			t.Fatalf("/etc/unread read %d bytes", f.DataRead)
		}
	}
	if app == "" {
		t.Fatalf("no entry for /bin/app: %s", body)
	}
	// Keys are the inode numbers the mount reports.
	if st, err := os.Stat(filepath.Join(d.mnt, "bin/app")); err != nil || fmt.Sprint(st.Sys().(*syscall.Stat_t).Ino) != app {
		t.Fatalf("st_ino of /bin/app differs from its metrics key %s: %v", app, err)
	}
	if code, body := d.do("GET", "/api/v1/metrics/files?latest=true", nil); code != 200 || strings.TrimSpace(body) != "["+app+"]" {
		t.Fatalf("latest: %d %s, want [%s]", code, body, app)
	}
	if code, body := d.do("GET", "/api/v1/metrics/files?latest=true", nil); code != 200 || strings.TrimSpace(body) != "[]" {
		t.Fatalf("latest again: %d %s, want []", code, body)
	}
	if code, body := d.do("GET", "/api/v1/metrics/pattern", nil); code != 200 || !strings.Contains(body, `"path":"/bin/app"`) || !strings.Contains(body, `"ino":`+app) {
		t.Fatalf("pattern: %d %s", code, body)
	}
	if code, body := d.do("GET", "/api/v1/metrics/files?id=/nope", nil); code != 404 || !strings.Contains(body, `"message"`) {
		t.Fatalf("unknown id: %d %s", code, body)
	}

	// The fetch log (access_pattern), and nydusify trace drawing it.
	code, body = d.do("GET", "/api/v1/metrics/fetches", nil)
	var fl struct {
		Fetches []struct {
			Path  string `json:"path"`
			Kind  string `json:"kind"`
			Bytes int64  `json:"bytes"`
		} `json:"fetches"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &fl) != nil || len(fl.Fetches) == 0 {
		t.Fatalf("metrics/fetches: %d %s", code, body)
	}
	for _, f := range fl.Fetches {
		if f.Path != "/bin/app" || f.Bytes <= 0 || (f.Kind != "demand" && f.Kind != "readahead") {
			t.Fatalf("unexpected fetch %+v", f)
		}
	}
	nydusify := filepath.Join(t.TempDir(), "nydusify")
	if out, err := exec.Command("go", "build", "-o", nydusify, "../nydusify").CombinedOutput(); err != nil {
		t.Fatalf("build nydusify: %v\n%s", err, out)
	}
	png := filepath.Join(t.TempDir(), "startup.png")
	out, err := exec.Command(nydusify, "trace", "--apisock", d.sock, "--output", png).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "/bin/app") || !strings.Contains(string(out), "demand") {
		t.Fatalf("nydusify trace: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(png); err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Fatalf("trace PNG: %v", err)
	}
	// The optimize loop's first command: the files read, in order.
	if out, err := exec.Command(nydusify, "trace", "--apisock", d.sock, "--prefetch-list", "-").Output(); err != nil || string(out) != "/bin/app\n" {
		t.Fatalf("nydusify trace --prefetch-list: %v: %q", err, out)
	}
	// Without access_pattern the log is off, and trace says so.
	out, err = exec.Command(nydusify, "trace", "--apisock", filepath.Join(t.TempDir(), "none.sock"), "--output", png).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "none.sock") {
		t.Fatalf("trace on a missing socket: %v\n%s", err, out)
	}
}
