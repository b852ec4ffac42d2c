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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/roottest"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/daemon"
)

// tamperedImage builds an image of two files, "good" and "bad", whose
// blob has one byte of "bad" flipped; it returns the bootstrap, the blob
// directory, the blob id and good's content.
func tamperedImage(t *testing.T, seed int64) (boot, blobs, blobID string, good []byte) {
	t.Helper()
	good, bad := treetest.Random(seed, 100000), treetest.Random(seed+1, 100000)
	layer := treetest.Tar([]treetest.File{treetest.Reg("good", 0o644, good), treetest.Reg("bad", 0o644, bad)})
	var blob bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(layer), &blob, builder.Options{Whiteout: builder.WhiteoutNone})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	blobs = filepath.Join(dir, "blobs")
	os.MkdirAll(blobs, 0o755)
	b := blob.Bytes()
	b[100000+50] ^= 0xff // inside "bad", stored second, uncompressed by default
	os.WriteFile(filepath.Join(blobs, res.BlobID), b, 0o644)
	boot = filepath.Join(dir, "image.boot")
	os.WriteFile(boot, res.Bootstrap, 0o644)
	return boot, blobs, res.BlobID, good
}

// TestEventSinkReportsTamperedChunk runs nydusd with --event-sink on a
// unix socket and a blob with one flipped byte: the bad file gives EIO,
// the good one reads, and the subscriber receives the mount and the
// digest-mismatch events naming the file.
func TestEventSinkReportsTamperedChunk(t *testing.T) {
	roottest.RequireFUSE(t)
	boot, blobs, blobID, good := tamperedImage(t, 1)
	dir := t.TempDir()

	sock := filepath.Join(t.TempDir(), "events.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []daemon.CloudEvent
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e daemon.CloudEvent
		if r.URL.Path != "/events" || r.Header.Get("Content-Type") != "application/cloudevents+json" || json.NewDecoder(r.Body).Decode(&e) != nil {
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
			mount = mount || e.Data.Kind == "mount"
			mismatch = mismatch || (e.Type == daemon.EventTypePrefix+"digest-mismatch" && e.Data.Path == "/bad" && e.Data.BlobID == blobID &&
				e.Source == "nydusd/d1" && e.SpecVersion == "1.0" && e.Seq() > 0 && e.Data.BootstrapDigest != "")
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

// getEvents is GET /api/v1/events on a daemon's socket.
func getEvents(t *testing.T, d *daemonProc, since uint64, wait time.Duration) []daemon.CloudEvent {
	t.Helper()
	evs, err := d.client.Events(t.Context(), since, wait)
	if err != nil {
		t.Error(err)
	}
	return evs
}

// TestEventLogSubscribersAndKill: two API subscribers each see every
// event; after a kill -9, a new daemon on the same API socket still has
// every event the first one had acknowledged, and goes on numbering.
func TestEventLogSubscribersAndKill(t *testing.T) {
	roottest.RequireFUSE(t)
	boot, blobs, _, _ := tamperedImage(t, 3)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	os.WriteFile(cfgPath, []byte(strings.Replace(localfsConfig(t, blobs), `"enable":true,"prefetch_all":true`, `"enable":false,"prefetch_all":false`, 1)), 0o600)
	args := []string{"--bootstrap", boot, "--config", cfgPath}
	sock := filepath.Join(dir, "api.sock")
	mnt1, mnt2 := filepath.Join(dir, "m1"), filepath.Join(dir, "m2")
	os.MkdirAll(mnt1, 0o755)
	os.MkdirAll(mnt2, 0o755)
	d1 := startAt(t, sock, mnt1, "RUNNING", args...)

	// Two subscribers long-poll from the start; the reads of the
	// tampered file each give EIO and events (one per failed fetch).
	var target atomic.Uint64
	target.Store(^uint64(0))
	subs := make([][]uint64, 2)
	var wg sync.WaitGroup
	for i := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var since uint64
			deadline := time.Now().Add(10 * time.Second)
			for since < target.Load() && time.Now().Before(deadline) {
				for _, e := range getEvents(t, d1, since, time.Second) {
					subs[i] = append(subs[i], e.Seq())
					since = e.Seq()
				}
			}
		}()
	}
	for i := 0; i < 5; i++ {
		if _, err := os.ReadFile(filepath.Join(mnt1, "bad")); !errors.Is(err, syscall.EIO) {
			t.Fatalf("tampered file: %v, want EIO", err)
		}
	}
	acked := getEvents(t, d1, 0, 0)
	if len(acked) < 1+5 || acked[0].Data.Kind != "mount" {
		t.Fatalf("%d events, want the mount and at least one per failed read: %+v", len(acked), acked)
	}
	var ackedSeqs []uint64
	for _, e := range acked {
		ackedSeqs = append(ackedSeqs, e.Seq())
	}
	target.Store(ackedSeqs[len(ackedSeqs)-1])
	wg.Wait()
	for i, s := range subs {
		if !slices.Equal(s, ackedSeqs) {
			t.Errorf("subscriber %d saw %v, want %v", i, s, ackedSeqs)
		}
	}

	d1.cmd.Process.Kill()
	d1.cmd.Wait()
	unixUnmount(mnt1)
	d2 := startAt(t, sock, mnt2, "RUNNING", args...)
	after := getEvents(t, d2, 0, 0)
	if len(after) < len(acked)+1 {
		t.Fatalf("after kill -9: %d events, want the %d acknowledged and the new mount", len(after), len(acked))
	}
	for i, e := range acked {
		if after[i].Seq() != e.Seq() || after[i].Type != e.Type {
			t.Fatalf("after kill -9, event %d is %s %s, was %s %s", i, after[i].Sequence, after[i].Type, e.Sequence, e.Type)
		}
	}
	if last := after[len(after)-1]; last.Seq() <= ackedSeqs[len(ackedSeqs)-1] || last.Data.Kind != "mount" {
		t.Errorf("the new daemon's mount event: %+v", last)
	}
}
