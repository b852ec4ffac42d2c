package fs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
)

// TestEachRangeFetchedOnce: many readers reading the same files at once,
// with a cache, fetch every chunk, batch and chunk-info table from the
// backend exactly once. Small files share batches, so without joining
// batch fetches each of their chunks fetched the whole batch again, and a
// reader that missed the cache just before another reader's fetch stored
// the chunk fetched it again; a container start fetched twice the bytes
// it needed.
func TestEachRangeFetchedOnce(t *testing.T) {
	var files []treetest.File
	want := map[string][]byte{}
	for i := 0; i < 40; i++ {
		name := fmt.Sprintf("small%02d", i)
		want["/"+name] = treetest.Random(int64(100+i), 3000+i)
		files = append(files, treetest.Reg(name, 0o644, want["/"+name]))
	}
	want["/big"] = treetest.Random(99, 8*0x10000)
	files = append(files, treetest.Reg("big", 0o644, want["/big"]))
	var blob bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(treetest.Tar(files)), &blob,
		builder.Options{ChunkSize: 0x10000, BatchSize: 0x10000})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, res.BlobID), blob.Bytes(), 0o644)
	be := fetchtest.NewRangeCounter(dir)
	f, err := Open(context.Background(), res.Bootstrap, be, Options{Fetch: fetch.Options{Cache: fetchtest.NewMemCache()}, ReadAhead: 4 * 0x10000})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for k := range names {
				name := names[(g*7+k)%len(names)]
				got, err := readAll(t, f, name)
				if err != nil || !bytes.Equal(got, want[name]) {
					errs <- fmt.Errorf("%s: %v", name, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
	f.bgWG.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	counts := be.Counts()
	var total int64
	for r, n := range counts {
		if n != 1 {
			t.Errorf("range %s fetched %d times", r, n)
		}
	}
	for _, n := range counts {
		total += int64(n)
	}
	if got := f.Metrics.BackendReads.Load(); got != total {
		t.Errorf("BackendReads %d, backend answered %d reads", got, total)
	}
	if len(counts) < 3 {
		t.Errorf("only %d distinct ranges fetched: %v", len(counts), counts)
	}
}
