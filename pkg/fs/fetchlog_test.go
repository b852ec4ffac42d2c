package fs

import (
	"context"
	"testing"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/storage"
)

// TestFetchLog: with FetchLogSize, every backend fetch is logged in order
// with its cause (demand, read-ahead, hot set), file and the bytes the
// backend sent; the ring keeps the newest and counts the dropped.
func TestFetchLog(t *testing.T) {
	files := []treetest.File{
		treetest.Reg("a", 0o644, treetest.Random(1, 4*0x10000)),
		treetest.Reg("b", 0o644, treetest.Random(2, 0x10000)),
	}
	res, dir := buildImage(t, files, builder.Options{ChunkSize: 0x10000})
	f, err := Open(context.Background(), res.Bootstrap, &storage.FileSource{Dir: dir},
		Options{Cache: &memCache{m: map[string][]byte{}}, ReadAhead: 4 * 0x10000, FetchLogSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ino, _ := f.Lookup(context.Background(), f.RootNid(), "a")
	if _, err := f.Read(context.Background(), ino.Nid, make([]byte, 10), 0); err != nil {
		t.Fatal(err)
	}
	f.bgWG.Wait() // read-ahead of a's other 3 chunks
	f.Prefetch(context.Background(), PrefetchOptions{Paths: []string{"/b"}})
	l := f.FetchLog()
	kinds := map[string]int{}
	var total int64
	for i, fe := range l.Fetches {
		kinds[fe.Kind]++
		total += fe.Bytes
		if fe.Bytes <= 0 || fe.BlobID != res.BlobID || fe.Err != "" {
			t.Errorf("fetch %d: %+v", i, fe)
		}
		if i > 0 && fe.Start < l.Fetches[i-1].Start {
			t.Errorf("fetch %d starts before fetch %d", i, i-1)
		}
	}
	if l.Fetches[0].Kind != FetchDemand || l.Fetches[0].Path != "/a" || l.Fetches[0].Chunk != 0 {
		t.Errorf("first fetch %+v, want chunk 0 of /a on demand", l.Fetches[0])
	}
	if kinds[FetchDemand] != 1 || kinds[FetchReadAhead] != 3 || kinds[FetchHotSet] != 1 {
		t.Errorf("fetches by kind %v, want 1 demand, 3 readahead, 1 hotset", kinds)
	}
	if total != f.Metrics.FetchedBytes.Load() {
		t.Errorf("logged %d bytes, the backend sent %d", total, f.Metrics.FetchedBytes.Load())
	}

	// A ring of 2 keeps the newest two.
	g, _ := Open(context.Background(), res.Bootstrap, &storage.FileSource{Dir: dir}, Options{FetchLogSize: 2})
	defer g.Close()
	ino, _ = g.Lookup(context.Background(), g.RootNid(), "a")
	for k := 0; k < 4; k++ {
		g.Read(context.Background(), ino.Nid, make([]byte, 10), int64(k)*0x10000)
	}
	if l := g.FetchLog(); len(l.Fetches) != 2 || l.Dropped != 2 || l.Fetches[0].Chunk+1 != l.Fetches[1].Chunk {
		t.Errorf("ring of 2 after 4 fetches: %d kept, %d dropped: %+v", len(l.Fetches), l.Dropped, l.Fetches)
	}
	if (&FS{}).FetchLog() != nil {
		t.Error("a filesystem without FetchLogSize has a fetch log")
	}
}
