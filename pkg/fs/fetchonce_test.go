package fs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/storage"
)

// memCache is an in-memory ChunkCache.
type memCache struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (c *memCache) Get(_ context.Context, blobID string, ci uint32, _ int64, _ int, verify func([]byte) error) ([]byte, bool, error) {
	c.mu.Lock()
	b, ok := c.m[fmt.Sprint(blobID, ci)]
	c.mu.Unlock()
	if ok && verify != nil && verify(b) != nil {
		return nil, false, nil
	}
	return b, ok, nil
}

func (c *memCache) Has(_ context.Context, blobID string, ci uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.m[fmt.Sprint(blobID, ci)]
	return ok
}

func (c *memCache) Put(_ context.Context, blobID string, ci uint32, _ int64, data []byte) error {
	c.mu.Lock()
	c.m[fmt.Sprint(blobID, ci)] = data
	c.mu.Unlock()
	return nil
}

// rangeCounter counts the backend reads of each range, slowly enough for
// concurrent readers to overlap.
type rangeCounter struct {
	storage.FileSource
	mu     sync.Mutex
	counts map[string]int
}

// OpenRange counts a streamed range like a read one.
func (r *rangeCounter) OpenRange(ctx context.Context, blobID string, off, n int64) (io.ReadCloser, error) {
	r.mu.Lock()
	r.counts[fmt.Sprintf("%d+%d", off, n)]++
	r.mu.Unlock()
	return r.FileSource.OpenRange(ctx, blobID, off, n)
}

func (r *rangeCounter) ReadRange(ctx context.Context, blobID string, off, n int64) ([]byte, error) {
	r.mu.Lock()
	r.counts[fmt.Sprintf("%d+%d", off, n)]++
	r.mu.Unlock()
	time.Sleep(2 * time.Millisecond)
	return r.FileSource.ReadRange(ctx, blobID, off, n)
}

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
	be := &rangeCounter{FileSource: storage.FileSource{Dir: dir}, counts: map[string]int{}}
	f, err := Open(context.Background(), res.Bootstrap, be, Options{Cache: &memCache{m: map[string][]byte{}}, ReadAhead: 4 * 0x10000})
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
	be.mu.Lock()
	defer be.mu.Unlock()
	var total int64
	for r, n := range be.counts {
		if n != 1 {
			t.Errorf("range %s fetched %d times", r, n)
		}
	}
	for _, n := range be.counts {
		total += int64(n)
	}
	if got := f.Metrics.BackendReads.Load(); got != total {
		t.Errorf("BackendReads %d, backend answered %d reads", got, total)
	}
	if len(be.counts) < 3 {
		t.Errorf("only %d distinct ranges fetched: %v", len(be.counts), be.counts)
	}
}
