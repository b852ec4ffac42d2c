package fetch_test

import (
	"context"
	"testing"

	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/nydus-go/nydus/pkg/storage"
)

// TestLogRing: the fetch log's ring keeps the newest fetches and counts
// the dropped; an engine without LogSize has no log. (Package fs's
// TestFetchLog checks the kinds and bytes the log records.)
func TestLogRing(t *testing.T) {
	files := []treetest.File{
		treetest.Reg("a", 0o644, treetest.Random(1, 4*0x10000)),
		treetest.Reg("b", 0o644, treetest.Random(2, 0x10000)),
	}
	res, dir := fetchtest.BuildImage(t, files, builder.Options{ChunkSize: 0x10000})

	// A ring of 2 keeps the newest two.
	g := open(t, res.Bootstrap, &storage.FileSource{Dir: dir}, fetch.Options{LogSize: 2})
	for _, r := range g.refs(t, "/a") {
		g.Chunk(context.Background(), r)
	}
	if l := g.Log(); len(l.Fetches) != 2 || l.Dropped != 2 || l.Fetches[0].Chunk+1 != l.Fetches[1].Chunk {
		t.Errorf("ring of 2 after 4 fetches: %d kept, %d dropped: %+v", len(l.Fetches), l.Dropped, l.Fetches)
	}
	if (&fetch.Engine{}).Log() != nil {
		t.Error("an engine without LogSize has a fetch log")
	}
}
