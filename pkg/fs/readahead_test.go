package fs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/storage"
)

// TestReadAheadFetchesFollowingChunks: a miss on chunk 0 of a 16-chunk
// file fetches the next ReadAhead bytes in the background (and nothing
// without ReadAhead); reads stay exact.
func TestReadAheadFetchesFollowingChunks(t *testing.T) {
	data := treetest.Random(9, 16*0x10000)
	var blob bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(treetest.Tar([]treetest.File{treetest.Reg("f", 0o644, data)})), &blob, builder.Options{ChunkSize: 0x10000})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, res.BlobID), blob.Bytes(), 0o644)
	// With an unbounded ReadAhead, 4 fetches start at once and more
	// start as they finish, so how many run depends on timing: 5 to 16.
	for _, c := range []struct {
		ra        int64
		want, max int64
	}{{0, 1, 1}, {4 * 0x10000, 5, 5}, {1 << 30, 5, 16}} {
		f, err := Open(context.Background(), res.Bootstrap, &storage.FileSource{Dir: dir}, Options{ReadAhead: c.ra})
		if err != nil {
			t.Fatal(err)
		}
		ino, _ := f.Lookup(context.Background(), f.RootNid(), "f")
		buf := make([]byte, 100)
		if n, err := f.Read(context.Background(), ino.Nid, buf, 0); err != nil || !bytes.Equal(buf[:n], data[:100]) {
			t.Fatalf("read: %d %v", n, err)
		}
		f.bgWG.Wait() // read-ahead done
		f.Close()
		if got := f.Metrics.FetchedChunks.Load(); got < c.want || got > c.max {
			t.Errorf("ReadAhead %d: fetched %d chunks, want %d to %d", c.ra, got, c.want, c.max)
		}
	}
	f, _ := Open(context.Background(), res.Bootstrap, &storage.FileSource{Dir: dir}, Options{ReadAhead: 1 << 20})
	defer f.Close()
	if got, err := readAll(t, f, "/f"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("full read with read-ahead: %v", err)
	}
}
