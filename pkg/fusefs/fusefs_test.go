package fusefs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/nydus-go/nydus/internal/roottest"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
	nfs "github.com/nydus-go/nydus/pkg/fs"
	"github.com/nydus-go/nydus/pkg/storage"
)

func buildImage(t *testing.T, layer []byte, o builder.Options) (boot []byte, blobDir string) {
	t.Helper()
	var blob bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(layer), &blob, o)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, res.BlobID), blob.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return res.Bootstrap, dir
}

// primeNoPoll polls a regular file of a fresh mount through a raw
// syscall, so the kernel's one FUSE_POLL is answered (ENOSYS: never
// again) before the test process os.Opens files on its own mount. Go's
// os.Open registers files with epoll; epoll_ctl on a FUSE file sends
// FUSE_POLL without releasing the goroutine's P, and a GC stop-the-world
// then deadlocks the process that must answer it. Only a process reading
// its own FUSE mount can hit this; nydusd's clients are other processes.
func primeNoPoll(t *testing.T, p string) {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
}

func mount(t *testing.T, boot []byte, be fetch.Backend, o nfs.Options, prime string) (string, *nfs.FS) {
	t.Helper()
	f, err := nfs.Open(context.Background(), boot, be, o)
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	srv, err := MountImage(mnt, f, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	primeNoPoll(t, filepath.Join(mnt, prime))
	return mnt, f
}

func TestMountedTreeEqualsSource(t *testing.T) {
	roottest.RequireFUSE(t)
	layer := treetest.Tar(treetest.Sample())
	for _, batch := range []uint32{0, 0x8000} {
		boot, dir := buildImage(t, layer, builder.Options{Whiteout: builder.WhiteoutNone, BatchSize: batch, ChunkSize: 0x10000})
		src := &storage.FileSource{Dir: dir}
		mnt, f := mount(t, boot, src, nfs.Options{}, "etc/hostname")
		got, err := treetest.FromDir(mnt, treetest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		want, _ := treetest.FromTar(bytes.NewReader(layer), treetest.Options{})
		if d := treetest.Diff(want, got); d != "" {
			t.Fatalf("batch %#x: mounted tree differs:\n%s", batch, d)
		}
		if f.Metrics.DigestFailures.Load() != 0 || f.Metrics.FetchedChunks.Load() == 0 {
			t.Fatalf("metrics: fetched %d, digest failures %d", f.Metrics.FetchedChunks.Load(), f.Metrics.DigestFailures.Load())
		}
	}
}

func TestTamperedChunkGivesEIO(t *testing.T) {
	roottest.RequireFUSE(t)
	layer := treetest.Tar([]treetest.File{
		treetest.Reg("good", 0o644, treetest.Random(1, 100000)),
		treetest.Reg("bad", 0o644, treetest.Random(2, 100000)),
	})
	boot, dir := buildImage(t, layer, builder.Options{Compressor: 0})
	ents, _ := os.ReadDir(dir)
	p := filepath.Join(dir, ents[0].Name())
	b, _ := os.ReadFile(p)
	b[100000+50] ^= 0xff // inside "bad", stored second, uncompressed
	os.WriteFile(p, b, 0o644)
	var events []fetch.Event
	var mu sync.Mutex
	mnt, f := mount(t, boot, &storage.FileSource{Dir: dir}, nfs.Options{Fetch: fetch.Options{Events: func(e fetch.Event) { mu.Lock(); events = append(events, e); mu.Unlock() }}}, "good")
	if got, err := os.ReadFile(filepath.Join(mnt, "good")); err != nil || !bytes.Equal(got, treetest.Random(1, 100000)) {
		t.Fatalf("good file: %v", err)
	}
	_, err := os.ReadFile(filepath.Join(mnt, "bad"))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("tampered file read: %v, want EIO", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if f.Metrics.DigestFailures.Load() == 0 || len(events) == 0 || events[0].Kind != "digest-mismatch" || events[0].Path != "/bad" {
		t.Fatalf("events %+v, failures %d", events, f.Metrics.DigestFailures.Load())
	}
}
