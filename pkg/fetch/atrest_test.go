package fetch_test

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"

	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
)

// countingCache counts the reads that reach the cache.
type countingCache struct {
	*fetchtest.MemCache
	gets atomic.Int64
}

func (c *countingCache) Get(ctx context.Context, blobID string, ci uint32, off int64, size int, verify func([]byte) error) ([]byte, bool, error) {
	c.gets.Add(1)
	return c.MemCache.Get(ctx, blobID, ci, off, size, verify)
}

// TestCachedChunkChangedAtRest: without Options.Validate, a chunk whose
// cached bytes changed after it was stored is not served: it is
// refetched, counted and reported. With Options.Hot, a chunk read
// again right after comes from memory, not from the cache.
func TestCachedChunkChangedAtRest(t *testing.T) {
	data := treetest.Random(11, 4*0x10000)
	res, dir := fetchtest.BuildImage(t, []treetest.File{treetest.Reg("f", 0o644, data)}, builder.Options{ChunkSize: 0x10000})
	for _, hot := range []int64{0, 1 << 20} {
		cache := &countingCache{MemCache: fetchtest.NewMemCache()}
		var events []fetch.Event
		be := fetchtest.NewRangeCounter(dir)
		e := open(t, res.Bootstrap, be, fetch.Options{Cache: cache, Hot: fetch.NewHotCache(hot), Events: func(ev fetch.Event) { events = append(events, ev) }})
		refs := e.refs(t, "/f")
		if err := e.readFile(t, "/f", data); err != nil {
			t.Fatal(err)
		}
		cache.Tamper(func(b []byte) { b[7] ^= 1 })
		gets := cache.gets.Load()
		total := func() (n int) {
			for _, c := range be.Counts() {
				n += c
			}
			return n
		}
		requests := total()
		for k := range refs {
			got, _, err := e.Chunk(context.Background(), refs[k])
			if err != nil || !bytes.Equal(got, data[k*0x10000:][:0x10000]) {
				t.Fatalf("hot %d: chunk %d: %v, or wrong bytes", hot, k, err)
			}
		}
		if hot > 0 {
			// Served from memory: the changed cache is not even read.
			if n := cache.gets.Load() - gets; n != 0 {
				t.Errorf("hot %d: %d cache reads for chunks just verified", hot, n)
			}
			continue
		}
		if n := e.Metrics.AtRestFailures.Load(); n != int64(len(refs)) {
			t.Errorf("AtRestFailures %d, want %d", n, len(refs))
		}
		if total() == requests {
			t.Error("the changed chunks were not refetched")
		}
		mismatch := 0
		for _, ev := range events {
			if ev.Kind == "cache-digest-mismatch" && ev.Path == "/f" {
				mismatch++
			}
		}
		if mismatch != len(refs) {
			t.Errorf("%d cache-digest-mismatch events, want %d: %+v", mismatch, len(refs), events)
		}
	}
}

// TestHotChunksBudget: the memory kept for verified chunks stays within
// its budget, least recently used out first.
func TestHotChunksBudget(t *testing.T) {
	data := treetest.Random(12, 8*0x10000)
	res, dir := fetchtest.BuildImage(t, []treetest.File{treetest.Reg("f", 0o644, data)}, builder.Options{ChunkSize: 0x10000})
	cache := &countingCache{MemCache: fetchtest.NewMemCache()}
	e := open(t, res.Bootstrap, fetchtest.NewRangeCounter(dir), fetch.Options{Cache: cache, Hot: fetch.NewHotCache(3 * 0x10000)})
	refs := e.refs(t, "/f")
	for k := range refs {
		if _, _, err := e.Chunk(context.Background(), refs[k]); err != nil {
			t.Fatal(err)
		}
	}
	gets := cache.gets.Load()
	// The last three are in memory; the first is not.
	for _, k := range []int{7, 6, 5} {
		e.Chunk(context.Background(), refs[k])
	}
	if n := cache.gets.Load() - gets; n != 0 {
		t.Errorf("%d cache reads for the last three chunks", n)
	}
	e.Chunk(context.Background(), refs[0])
	if n := cache.gets.Load() - gets; n != 1 {
		t.Errorf("%d cache reads for the first chunk, want 1", n)
	}
}
