package fs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
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

// TestAmplificationConcurrent: many readers with amplification and
// read-ahead at once read the right bytes, and no byte of the blob is
// fetched twice: a reader of a chunk inside an amplified span waits for
// it, and a span never takes a chunk that is on its way.
func TestAmplificationConcurrent(t *testing.T) {
	boot, dir, _, data := fetchtest.AmplifyImage(t)
	be := fetchtest.NewRangeCounter(dir)
	f, err := Open(context.Background(), boot, be, Options{Fetch: fetch.Options{Cache: fetchtest.NewMemCache(), Amplify: 3 * 0x10000}, ReadAhead: 2 * 0x10000})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ino, _ := f.Lookup(context.Background(), f.RootNid(), "big")
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		go func(g int) {
			buf := make([]byte, 0x10000)
			for k := 0; k < 8; k++ {
				c := (g + k*3) % 8
				if _, err := f.Read(context.Background(), ino.Nid, buf, int64(c)*0x10000); err != nil || !bytes.Equal(buf, data[c*0x10000:][:0x10000]) {
					errs <- errors.New("chunk " + strconv.Itoa(c) + ": wrong bytes or " + errString(err))
					return
				}
			}
			errs <- nil
		}(g)
	}
	for g := 0; g < 16; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	f.bgWG.Wait()
	counts := be.Counts()
	seen := map[int64]bool{}
	for k, n := range counts {
		parts := strings.Split(k, "+")
		off, _ := strconv.ParseInt(parts[0], 10, 64)
		size, _ := strconv.ParseInt(parts[1], 10, 64)
		for b := off; b < off+size; b += 4096 {
			if seen[b] || n > 1 {
				t.Fatalf("bytes at %d fetched twice (ranges %v)", b, counts)
			}
			seen[b] = true
		}
	}
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}
