package fusefs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/roottest"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
	nfs "github.com/nydus-go/nydus/pkg/fs"
	"github.com/nydus-go/nydus/pkg/storage"
)

// readUncached reads a file after dropping its page cache, so every byte
// comes either from the daemon or from a passthrough backing file.
func readUncached(t *testing.T, p string) []byte {
	t.Helper()
	fd, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	if err := unix.Fadvise(int(fd.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := b.ReadFrom(fd); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestPassthroughServesWholeFileWithoutDaemon(t *testing.T) {
	roottest.RequireFUSE(t)
	want := treetest.Random(7, 3<<20+99)
	layer := treetest.Tar([]treetest.File{treetest.Reg("app/lib.so", 0o755, want)})
	boot, dir := buildImage(t, layer, builder.Options{ChunkSize: 0x100000})
	copies := fetchtest.NewCopies(t)
	f, err := nfs.Open(context.Background(), boot, &storage.FileSource{Dir: dir}, nfs.Options{Copies: copies})
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	srv, err := MountImage(mnt, f, Options{Passthrough: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Unmount()
	primeNoPoll(t, filepath.Join(mnt, "app/lib.so"))
	if srv.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0 {
		t.Fatal("kernel did not grant FUSE passthrough (needs Linux >= 6.9 and root)")
	}
	p := filepath.Join(mnt, "app/lib.so")

	// First read: served by the daemon, which then assembles the file.
	if got := readUncached(t, p); !bytes.Equal(got, want) {
		t.Fatal("first read differs from source")
	}
	first := f.Metrics.DaemonReads.Load()
	if first == 0 {
		t.Fatal("first read did not reach the daemon")
	}
	deadline := time.Now().Add(10 * time.Second)
	for f.Metrics.WholeFiles.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("whole-file cache was not built after a full read")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if copies.Usage() != int64(len(want)) {
		t.Fatalf("whole-file copies take %d bytes, want one of %d", copies.Usage(), len(want))
	}

	// Reopen: the kernel reads the backing file; the daemon sees nothing.
	if got := readUncached(t, p); !bytes.Equal(got, want) {
		t.Fatal("passthrough read differs from source")
	}
	if n := f.Metrics.DaemonReads.Load(); n != first {
		t.Fatalf("passthrough reopen made %d daemon reads, want 0", n-first)
	}
}

// TestNoPassthroughWithDigestValidate: when every read must be verified
// (digest_validate), no whole-file copy is made and reads stay in the
// daemon.
func TestNoPassthroughWithDigestValidate(t *testing.T) {
	roottest.RequireFUSE(t)
	want := treetest.Random(8, 300000)
	boot, dir := buildImage(t, treetest.Tar([]treetest.File{treetest.Reg("f", 0o644, want)}), builder.Options{})
	copies := fetchtest.NewCopies(t)
	f, err := nfs.Open(context.Background(), boot, &storage.FileSource{Dir: dir}, nfs.Options{Copies: copies, Fetch: fetch.Options{Validate: true}})
	if err != nil {
		t.Fatal(err)
	}
	mnt := t.TempDir()
	srv, err := MountImage(mnt, f, Options{Passthrough: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Unmount()
	primeNoPoll(t, filepath.Join(mnt, "f"))
	for i := 0; i < 2; i++ {
		before := f.Metrics.DaemonReads.Load()
		if got := readUncached(t, filepath.Join(mnt, "f")); !bytes.Equal(got, want) {
			t.Fatal("read differs")
		}
		if f.Metrics.DaemonReads.Load() == before {
			t.Fatalf("read %d bypassed the daemon with digest validation on", i)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if copies.Usage() != 0 || f.Metrics.WholeFiles.Load() != 0 {
		t.Fatalf("whole-file copies made with digest validation on: %d bytes", copies.Usage())
	}
}
