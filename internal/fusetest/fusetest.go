// Package fusetest helps tests that keep readers on a FUSE mount while its
// daemon is killed, replaced or upgraded: verified readers that go to the
// daemon on every read, and a way to abort a connection so no process
// stays blocked on it.
package fusetest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ReadNoCache reads a whole file after dropping its page cache, so the
// read reaches the daemon.
func ReadNoCache(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	return io.ReadAll(f)
}

// AbortConn aborts FUSE connection minor through the fuse control
// filesystem (mounting it if needed), so processes blocked on it return.
// It does nothing when the connection is gone.
func AbortConn(minor uint32) {
	const ctl = "/sys/fs/fuse/connections"
	if minor == 0 {
		return
	}
	if _, err := os.Stat(fmt.Sprintf("%s/%d", ctl, minor)); err != nil {
		if ents, _ := os.ReadDir(ctl); len(ents) > 0 {
			return // fusectl is mounted and the connection is gone
		}
		if unix.Mount("fusectl", ctl, "fusectl", 0, "") != nil {
			return
		}
	}
	os.WriteFile(fmt.Sprintf("%s/%d/abort", ctl, minor), []byte("1"), 0)
}

// Readers read files under a directory in a loop, each read verified
// against its expected content; the first failure stops that reader.
type Readers struct {
	reads, failures atomic.Int64
	firstErr        atomic.Value
	stop            chan struct{}
	wg              sync.WaitGroup
}

// StartReaders starts n readers over want (path relative to dir →
// content), reading in a fixed order from different starting points.
func StartReaders(n int, dir string, want map[string][]byte) *Readers {
	names := make([]string, 0, len(want))
	for name := range want {
		names = append(names, name)
	}
	slices.Sort(names)
	r := &Readers{stop: make(chan struct{})}
	for i := 0; i < n; i++ {
		r.wg.Add(1)
		go func(i int) {
			defer r.wg.Done()
			for k := i; ; k++ {
				select {
				case <-r.stop:
					return
				default:
				}
				name := names[k%len(names)]
				got, err := ReadNoCache(filepath.Join(dir, name))
				if err == nil && !bytes.Equal(got, want[name]) {
					err = fmt.Errorf("%s: wrong bytes", name)
				}
				if err != nil {
					r.failures.Add(1)
					r.firstErr.CompareAndSwap(nil, err)
					return
				}
				r.reads.Add(1)
			}
		}(i)
	}
	return r
}

// Reads is the number of verified reads so far.
func (r *Readers) Reads() int64 { return r.reads.Load() }

// Progress waits up to 20 s for n more verified reads and fails the test
// if a reader failed or the readers made no progress.
func (r *Readers) Progress(t testing.TB, n int64, what string) {
	t.Helper()
	target := r.reads.Load() + n
	for deadline := time.Now().Add(20 * time.Second); r.reads.Load() < target && r.failures.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if r.failures.Load() != 0 {
		t.Fatalf("%s: a reader failed: %v", what, r.firstErr.Load())
	}
	if r.reads.Load() < target {
		t.Fatalf("%s: readers made no progress (%d reads)", what, r.reads.Load())
	}
}

// Stop stops the readers and fails the test if one failed or is stuck
// for 20 s (onStuck runs first, e.g. to abort the connection).
func (r *Readers) Stop(t testing.TB, onStuck func()) {
	t.Helper()
	close(r.stop)
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		if onStuck != nil {
			onStuck()
		}
		t.Fatal("a reader is stuck: a request lost with a killed daemon was never answered")
	}
	if r.failures.Load() != 0 {
		t.Fatalf("a reader failed: %v", r.firstErr.Load())
	}
}
