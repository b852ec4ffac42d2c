package fs

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/nydus-go/nydus/pkg/storage"
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
