package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/roottest"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/daemon"
)

// TestEventSinkReportsTamperedChunk runs nydusd with --event-sink on a
// unix socket and a blob with one flipped byte: the bad file gives EIO,
// the good one reads, and the subscriber receives the mount and the
// digest-mismatch events naming the file.
func TestEventSinkReportsTamperedChunk(t *testing.T) {
	roottest.RequireFUSE(t)
	good, bad := treetest.Random(1, 100000), treetest.Random(2, 100000)
	layer := treetest.Tar([]treetest.File{treetest.Reg("good", 0o644, good), treetest.Reg("bad", 0o644, bad)})
	var blob bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(layer), &blob, builder.Options{Whiteout: builder.WhiteoutNone})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	blobs := filepath.Join(dir, "blobs")
	os.MkdirAll(blobs, 0o755)
	b := blob.Bytes()
	b[100000+50] ^= 0xff // inside "bad", stored second, uncompressed by default
	os.WriteFile(filepath.Join(blobs, res.BlobID), b, 0o644)
	boot := filepath.Join(dir, "image.boot")
	os.WriteFile(boot, res.Bootstrap, 0o644)

	sock := filepath.Join(t.TempDir(), "events.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []daemon.EventRecord
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e daemon.EventRecord
		if r.URL.Path != "/events" || json.NewDecoder(r.Body).Decode(&e) != nil {
			http.Error(w, "bad event", 400)
			return
		}
		mu.Lock()
		got = append(got, e)
		mu.Unlock()
	})}
	go srv.Serve(ln)
	defer srv.Close()

	cfgPath := filepath.Join(t.TempDir(), "config.json")
	cfg := strings.Replace(localfsConfig(t, blobs), `"enable":true,"prefetch_all":true`, `"enable":false,"prefetch_all":false`, 1)
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	d := start(t, "--bootstrap", boot, "--config", cfgPath, "--event-sink", "unix://"+sock, "--id", "d1", "--supervisor", filepath.Join(dir, "sup.sock"))
	if data, err := os.ReadFile(filepath.Join(d.mnt, "good")); err != nil || !bytes.Equal(data, good) {
		t.Fatalf("good file: %v", err)
	}
	if _, err := os.ReadFile(filepath.Join(d.mnt, "bad")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("tampered file: %v, want EIO", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		var mount, mismatch bool
		for _, e := range got {
			mount = mount || e.Kind == "mount"
			mismatch = mismatch || (e.Kind == "digest-mismatch" && e.Path == "/bad" && e.BlobID == res.BlobID && e.DaemonID == "d1")
		}
		n := len(got)
		mu.Unlock()
		if mount && mismatch {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events received (%d): %+v\nlog:\n%s", n, got, d.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestExtensionFlagErrors(t *testing.T) {
	mnt := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--cache-max-size", "lots"}, `--cache-max-size: invalid size "lots"`},
		{[]string{"--event-sink", "ftp://x"}, "--event-sink: event sink ftp://x: scheme must be http, https or unix"},
	} {
		out, err := exec.Command(bin, append([]string{"--mountpoint", mnt}, c.args...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
			t.Errorf("%v: err %v, output %q, want one line with %q", c.args, err, out, c.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "0": 0, "1048576": 1 << 20, "512MiB": 512 << 20, "10GiB": 10 << 30, "2G": 2 << 30, "7B": 7} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"-1", "x", "1.5GiB", "GiB"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}
