package fs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/atomicfile"
	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/nydus-go/nydus/pkg/storage"
	"golang.org/x/sys/unix"
)

func TestCleanWholeFileDirRemovesOnlyOldPartialBuilds(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-time.Hour)
	for _, n := range []string{".build-old", ".build-new", "0123abcd"} {
		os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o400)
	}
	os.Chtimes(filepath.Join(dir, ".build-old"), old, old)
	os.Chtimes(filepath.Join(dir, "0123abcd"), old, old)
	if n := CleanWholeFileDir(dir, 10*time.Minute); n != 1 {
		t.Fatalf("removed %d, want 1", n)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != ".build-new" || names[1] != "0123abcd" {
		t.Fatalf("left %v", names)
	}
	if n := CleanWholeFileDir(filepath.Join(dir, "missing"), 0); n != 0 {
		t.Fatalf("missing dir: %d", n)
	}
}

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
	f, err := Open(context.Background(), res.Bootstrap, storage.BytesSource(blob.Bytes()), Options{Fetch: fetch.Options{Cache: cache}, WholeFileDir: t.TempDir()})
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
	dir := t.TempDir()
	var released atomic.Int64
	f, err := Open(context.Background(), res.Bootstrap, storage.BytesSource(blob.Bytes()), Options{
		Fetch:            fetch.Options{Cache: fetchtest.NewMemCache(), Events: func(e fetch.Event) { mu.Lock(); events = append(events, e); mu.Unlock() }},
		WholeFileDir:     dir,
		WholeFileRelease: func(n int64) { released.Add(n) },
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
	p := filepath.Join(dir, f.wholeKey(ino))
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
	verifiedCopies.Delete(p)
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
	if f.Metrics.AtRestFailures.Load() != 1 || released.Load() != int64(len(data)) {
		t.Errorf("AtRestFailures %d, released %d bytes", f.Metrics.AtRestFailures.Load(), released.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 1 || events[0].Kind != "wholefile-changed" || events[0].Path != "/f" {
		t.Errorf("events %+v", events)
	}
}

// TestWholeFileCopyLifetime: a copy goes when the last image that used
// it is closed, in this process and in others sharing the work dir
// (another process's use is a shared flock on the copy); a copy nobody
// uses (left by a process that died) goes at the next close.
func TestWholeFileCopyLifetime(t *testing.T) {
	data := treetest.Random(9, 3*0x1000+10)
	var blob bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(treetest.Tar([]treetest.File{treetest.Reg("f", 0o644, data)})), &blob, builder.Options{ChunkSize: 0x1000})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "copies")
	var released atomic.Int64
	mount := func() *FS {
		f, err := Open(context.Background(), res.Bootstrap, storage.BytesSource(blob.Bytes()), Options{
			Fetch: fetch.Options{Cache: fetchtest.NewMemCache()}, WholeFileDir: dir, WholeFileRelease: func(n int64) { released.Add(n) }})
		if err != nil {
			t.Fatal(err)
		}
		ino, _ := f.Lookup(context.Background(), f.RootNid(), "f")
		fd, err := f.WholeFile(context.Background(), ino.Nid, true)
		if err != nil || fd == nil {
			t.Fatalf("whole file: %v", err)
		}
		fd.Close()
		return f
	}
	a, b := mount(), mount()
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("copies %v, want one shared", ents)
	}
	p := filepath.Join(dir, ents[0].Name())
	a.Close()
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the copy went while an image still used it: %v", err)
	}
	// Another process uses it too.
	other, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(other.Fd()), unix.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	b.Close()
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the copy went while another process used it: %v", err)
	}
	other.Close()
	c := mount()
	// A copy left by a process that died: nobody holds a lock on it.
	orphan := filepath.Join(dir, "0123abcd")
	os.WriteFile(orphan, []byte("left by a crashed daemon"), 0o400)
	c.Close()
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("an orphaned copy is still there: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the copies' directory is still there after the last image closed: %v", err)
	}
	if want := int64(len(data) + len("left by a crashed daemon")); released.Load() != want {
		t.Errorf("released %d bytes, want %d", released.Load(), want)
	}
}

// TestWholeFileFailedSync: a copy whose sync fails is not put in place,
// nothing of it is left, and its reserve is refunded.
func TestWholeFileFailedSync(t *testing.T) {
	data := treetest.Random(10, 3*0x1000+10)
	var blob bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(treetest.Tar([]treetest.File{treetest.Reg("f", 0o644, data)})), &blob, builder.Options{ChunkSize: 0x1000})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var reserved atomic.Int64
	f, err := Open(context.Background(), res.Bootstrap, storage.BytesSource(blob.Bytes()), Options{
		Fetch: fetch.Options{Cache: fetchtest.NewMemCache()}, WholeFileDir: dir,
		WholeFileReserve: func(n int64) bool { reserved.Add(n); return true },
		WholeFileRelease: func(n int64) { reserved.Add(-n) }})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	commitCopy = func(f *atomicfile.File) error {
		f.Abort() // what Commit does when its fsync fails
		return errors.New("injected: fsync failed")
	}
	defer func() { commitCopy = (*atomicfile.File).Commit }()
	ino, _ := f.Lookup(context.Background(), f.RootNid(), "f")
	fd, err := f.WholeFile(context.Background(), ino.Nid, true)
	if err == nil || fd != nil {
		t.Fatalf("WholeFile with a failing sync: %v, %v", fd, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
	if reserved.Load() != 0 {
		t.Errorf("%d bytes still reserved", reserved.Load())
	}
}
