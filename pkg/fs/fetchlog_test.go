package fs

import (
	"context"
	"testing"

	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/nydus-go/nydus/pkg/storage"
)

// TestFetchLog: with Options.Fetch.LogSize, every backend fetch is logged
// in order with its cause (demand, read-ahead, hot set), file and the
// bytes the backend sent. (Package fetch's TestLogRing checks that the
// ring keeps the newest and counts the dropped.)
func TestFetchLog(t *testing.T) {
	files := []treetest.File{
		treetest.Reg("a", 0o644, treetest.Random(1, 4*0x10000)),
		treetest.Reg("b", 0o644, treetest.Random(2, 0x10000)),
	}
	res, dir := fetchtest.BuildImage(t, files, builder.Options{ChunkSize: 0x10000})
	f, err := Open(context.Background(), res.Bootstrap, &storage.FileSource{Dir: dir},
		Options{Fetch: fetch.Options{Cache: fetchtest.NewMemCache(), LogSize: 64}, ReadAhead: 4 * 0x10000})
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
	if l.Fetches[0].Kind != fetch.Demand || l.Fetches[0].Path != "/a" || l.Fetches[0].Chunk != 0 {
		t.Errorf("first fetch %+v, want chunk 0 of /a on demand", l.Fetches[0])
	}
	if kinds[fetch.Demand] != 1 || kinds[fetch.ReadAhead] != 3 || kinds[fetch.HotSet] != 1 {
		t.Errorf("fetches by kind %v, want 1 demand, 3 readahead, 1 hotset", kinds)
	}
	if total != f.Metrics.FetchedBytes.Load() {
		t.Errorf("logged %d bytes, the backend sent %d", total, f.Metrics.FetchedBytes.Load())
	}

	// Without LogSize, no log.
	g, _ := Open(context.Background(), res.Bootstrap, &storage.FileSource{Dir: dir}, Options{})
	defer g.Close()
	if g.FetchLog() != nil {
		t.Error("a filesystem without Options.Fetch.LogSize has a fetch log")
	}
}
