package fs

import (
	"bytes"
	"context"
	"io"
	"os"
	"sync"
	"testing"

	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/nydus-go/nydus/pkg/storage"
)

// TestWholeFileVerifiesCachedChunks: a whole-file copy is assembled only
// from chunks verified during the assembly, so a cached chunk that no
// longer matches its digest is refetched, not copied into the file that
// passthrough then serves without the daemon.
func TestWholeFileVerifiesCachedChunks(t *testing.T) {
	data := treetest.Random(7, 3*0x1000+10)
	var blob bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(treetest.Tar([]treetest.File{treetest.Reg("f", 0o644, data)})), &blob, builder.Options{ChunkSize: 0x1000})
	if err != nil {
		t.Fatal(err)
	}
	cache := fetchtest.NewMemCache()
	f, err := Open(context.Background(), res.Bootstrap, storage.BytesSource(blob.Bytes()), Options{Fetch: fetch.Options{Cache: cache}, Copies: fetchtest.NewCopies(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ino, _ := f.Lookup(context.Background(), f.RootNid(), "f")
	if _, err := f.Read(context.Background(), ino.Nid, make([]byte, len(data)), 0); err != nil {
		t.Fatal(err)
	}
	// Poison every cached chunk in place.
	cache.Tamper(func(b []byte) {
		for i := range b {
			b[i] ^= 0x5a
		}
	})
	fd, err := f.WholeFile(context.Background(), ino.Nid, true)
	if err != nil || fd == nil {
		t.Fatalf("whole file: %v", err)
	}
	defer fd.Close()
	got, _ := io.ReadAll(fd)
	if !bytes.Equal(got, data) {
		t.Fatal("the whole-file copy holds the poisoned cache bytes")
	}
	if f.Metrics.DigestFailures.Load() == 0 {
		t.Error("the poisoned chunks were not counted")
	}
}

// TestWholeFileCopyAtRest: a copy is handed out only while it is what
// this process verified. One changed on disk is refused, read back in the
// background, removed and reported; one this process has not verified (a
// restart) is handed out once it was read back and found right.
func TestWholeFileCopyAtRest(t *testing.T) {
	data := treetest.Random(8, 5*0x1000+10)
	var blob bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(treetest.Tar([]treetest.File{treetest.Reg("f", 0o644, data)})), &blob, builder.Options{ChunkSize: 0x1000})
	if err != nil {
		t.Fatal(err)
	}
	var events []fetch.Event
	var mu sync.Mutex
	copies := fetchtest.NewCopies(t)
	f, err := Open(context.Background(), res.Bootstrap, storage.BytesSource(blob.Bytes()), Options{
		Fetch:  fetch.Options{Cache: fetchtest.NewMemCache(), Events: func(e fetch.Event) { mu.Lock(); events = append(events, e); mu.Unlock() }},
		Copies: copies,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ino, _ := f.Lookup(context.Background(), f.RootNid(), "f")
	fd, err := f.WholeFile(context.Background(), ino.Nid, true)
	if err != nil || fd == nil {
		t.Fatalf("build: %v", err)
	}
	fd.Close()
	key := f.wholeKey(ino)
	p := copies.Path(key)
	open := func() *os.File {
		fd, err := f.WholeFile(context.Background(), ino.Nid, false)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	if fd := open(); fd == nil {
		t.Fatal("the verified copy is not handed out")
	} else {
		fd.Close()
	}
	// A restart: this process no longer knows the copy.
	copies.Forget(key)
	if fd := open(); fd != nil {
		t.Fatal("a copy this process did not verify is handed out")
	}
	f.bgWG.Wait()
	if fd := open(); fd == nil {
		t.Fatal("the copy is not handed out after it was read back")
	} else {
		fd.Close()
	}
	// Changed in place, its mtime restored.
	fi, _ := os.Stat(p)
	w, _ := os.OpenFile(p, os.O_WRONLY, 0)
	w.WriteAt([]byte{^data[4100]}, 4100)
	w.Close()
	os.Chtimes(p, fi.ModTime(), fi.ModTime())
	if fd := open(); fd != nil {
		t.Fatal("a changed copy is handed out")
	}
	f.bgWG.Wait()
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("the changed copy is still there: %v", err)
	}
	if f.Metrics.AtRestFailures.Load() != 1 || copies.Usage() != 0 {
		t.Errorf("AtRestFailures %d, copies still take %d bytes", f.Metrics.AtRestFailures.Load(), copies.Usage())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 1 || events[0].Kind != "wholefile-changed" || events[0].Path != "/f" {
		t.Errorf("events %+v", events)
	}
}

// TestWholeFileCopyLifetime: images that read the same file share one
// copy, which goes when the last of them is closed (blobcache's tests
// cover other processes and copies left by a crash).
func TestWholeFileCopyLifetime(t *testing.T) {
	data := treetest.Random(9, 3*0x1000+10)
	var blob bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(treetest.Tar([]treetest.File{treetest.Reg("f", 0o644, data)})), &blob, builder.Options{ChunkSize: 0x1000})
	if err != nil {
		t.Fatal(err)
	}
	copies := fetchtest.NewCopies(t)
	var key string
	mount := func() *FS {
		f, err := Open(context.Background(), res.Bootstrap, storage.BytesSource(blob.Bytes()), Options{
			Fetch: fetch.Options{Cache: fetchtest.NewMemCache()}, Copies: copies})
		if err != nil {
			t.Fatal(err)
		}
		ino, _ := f.Lookup(context.Background(), f.RootNid(), "f")
		fd, err := f.WholeFile(context.Background(), ino.Nid, true)
		if err != nil || fd == nil {
			t.Fatalf("whole file: %v", err)
		}
		fd.Close()
		key = f.wholeKey(ino)
		return f
	}
	a, b := mount(), mount()
	if copies.Usage() != int64(len(data)) {
		t.Fatalf("copies take %d bytes, want one shared copy of %d", copies.Usage(), len(data))
	}
	a.Close()
	if !copies.Exists(key) {
		t.Fatal("the copy went while an image still used it")
	}
	b.Close()
	if copies.Exists(key) || copies.Usage() != 0 {
		t.Errorf("after the last image closed: copy there %v, %d bytes", copies.Exists(key), copies.Usage())
	}
}
