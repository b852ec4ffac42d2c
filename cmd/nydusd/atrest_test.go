package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/roottest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/daemon"
)

// eventCounter is an --event-sink on a unix socket that counts the events
// it receives by kind.
type eventCounter struct {
	url string
	mu  sync.Mutex
	n   map[string]int
}

func newEventCounter(t *testing.T) *eventCounter {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "events.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c := &eventCounter{url: "unix://" + sock, n: map[string]int{}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e daemon.CloudEvent
		if json.NewDecoder(r.Body).Decode(&e) != nil {
			http.Error(w, "bad event", 400)
			return
		}
		c.mu.Lock()
		c.n[e.Data.Kind]++
		c.mu.Unlock()
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return c
}

// atRest counts the events that report data changed on the local disk.
func (c *eventCounter) atRest() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n["cache-digest-mismatch"] + c.n["wholefile-changed"]
}

// TestAtRestTamperTrials: with the default configuration (no
// digest_validate, passthrough on), whole-file copies and the chunk cache
// are changed on disk in 100 trials (byte flips, truncation, appending,
// replacement by another file of the same size, in-place rewrites with
// the mtime restored). After each, every file is read through the
// running mount (page cache dropped) and through a fresh daemon on the
// same work dir: no wrong byte is ever served (a read gets the right
// bytes, refetched, or EIO), and every trial is reported by an event.
func TestAtRestTamperTrials(t *testing.T) {
	roottest.RequireFUSE(t)
	want := map[string][]byte{}
	var files []treetest.File
	for i := 0; i < 8; i++ {
		name := fmt.Sprintf("f%d", i)
		want[name] = treetest.Random(int64(300+i), 150<<10+i*20000)
		files = append(files, treetest.Reg(name, 0o644, want[name]))
	}
	boot, blobs := image(t, treetest.Tar(files))
	work := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfg, []byte(sharedCacheConfig(blobs, work)), 0o600)
	events := newEventCounter(t)
	args := []string{"--bootstrap", boot, "--config", cfg, "--event-sink", events.url}
	a := start(t, args...)

	copiesDir := filepath.Join(work, "nydus-go-files")
	copies := func() []string {
		var out []string
		ents, _ := os.ReadDir(copiesDir)
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".") {
				out = append(out, filepath.Join(copiesDir, e.Name()))
			}
		}
		return out
	}
	// readAll reads every file through a mount: right bytes or EIO.
	readAll := func(mnt, when string) (eio int) {
		for name, data := range want {
			got, err := os.ReadFile(filepath.Join(mnt, name))
			switch {
			case errors.Is(err, syscall.EIO):
				eio++
			case err != nil:
				t.Fatalf("%s: %s: %v", when, name, err)
			case !bytes.Equal(got, data):
				t.Fatalf("%s: %s: wrong bytes served (%d of %d bytes read)", when, name, len(got), len(data))
			}
		}
		return eio
	}
	dropCaches := func() {
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
			t.Fatal(err)
		}
	}
	// Every file read once builds its whole-file copy.
	readAll(a.mnt, "first read")
	deadline := time.Now().Add(10 * time.Second)
	for len(copies()) < len(want) {
		if time.Now().After(deadline) {
			t.Fatalf("%d whole-file copies, want %d", len(copies()), len(want))
		}
		time.Sleep(20 * time.Millisecond)
	}
	datas, _ := filepath.Glob(filepath.Join(work, "*.blob.data"))
	if len(datas) != 1 {
		t.Fatalf("blob data files %q", datas)
	}
	blobData := datas[0]

	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	writeAt := func(p string, b []byte, off int64) {
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	tamper := map[string]func(p string, size int64){
		"flip": func(p string, size int64) {
			off := rng.Int64N(size)
			b := make([]byte, 1)
			f, _ := os.Open(p)
			f.ReadAt(b, off)
			f.Close()
			writeAt(p, []byte{b[0] ^ 0x5a}, off)
		},
		"truncate": func(p string, size int64) { os.Truncate(p, size/2) },
		"append": func(p string, size int64) {
			if p == blobData {
				// Appending past the cached chunks changes none: cut the
				// last 4 KiB and append other bytes instead.
				os.Truncate(p, size-4096)
				size -= 4096
			}
			writeAt(p, random(4096), size)
		},
		"replace": func(p string, size int64) {
			tmp := p + ".other"
			os.WriteFile(tmp, random(int(size)), 0o400)
			if err := os.Rename(tmp, p); err != nil {
				t.Fatal(err)
			}
		},
		"rewrite": func(p string, size int64) {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			writeAt(p, random(4096), rng.Int64N(size-4096))
			if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
				t.Fatal(err)
			}
		},
	}
	kinds := []string{"flip", "truncate", "append", "replace", "rewrite"}
	const trials = 100
	eios := 0
	for i := 0; i < trials; i++ {
		kind := kinds[i%len(kinds)]
		target := blobData
		if i%2 == 0 {
			// A copy: rebuilt by the daemon after the trial that removed
			// it, when its file was read in full again.
			deadline := time.Now().Add(10 * time.Second)
			for len(copies()) == 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			cs := copies()
			if len(cs) == 0 {
				t.Fatalf("trial %d: no whole-file copy left", i)
			}
			target = cs[rng.IntN(len(cs))]
		}
		fi, err := os.Stat(target)
		if err != nil {
			t.Fatal(err)
		}
		before := events.atRest()
		tamper[kind](target, fi.Size())
		what := fmt.Sprintf("trial %d (%s of %s)", i, kind, filepath.Base(target))

		dropCaches()
		eios += readAll(a.mnt, what+", same mount")
		b := start(t, args...)
		eios += readAll(b.mnt, what+", fresh daemon")
		b.stop()

		deadline := time.Now().Add(5 * time.Second)
		for events.atRest() == before {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no event reported it\nlog:\n%s", what, a.log)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Logf("%d trials, no wrong byte served, each reported (%d at-rest events; %d reads got EIO, the rest were refetched)", trials, events.atRest(), eios)
}
