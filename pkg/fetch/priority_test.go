package fetch_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/nydus-go/nydus/pkg/storage"
)

// sendLog records, in order, when each backend request starts and ends
// and what kind of fetch it serves; every request takes 15 ms.
type sendLog struct {
	storage.FileSource
	mu  sync.Mutex
	evs []sendEvent
}

type sendEvent struct {
	start bool
	kind  string
	off   int64
}

func (s *sendLog) ReadRange(ctx context.Context, blobID string, off, n int64) ([]byte, error) {
	s.mu.Lock()
	s.evs = append(s.evs, sendEvent{true, fetch.KindOf(ctx), off})
	s.mu.Unlock()
	time.Sleep(15 * time.Millisecond)
	s.mu.Lock()
	s.evs = append(s.evs, sendEvent{false, fetch.KindOf(ctx), off})
	s.mu.Unlock()
	return s.FileSource.ReadRange(ctx, blobID, off, n)
}

// TestDemandBeforeBackground: while a stream of a large file keeps the
// backend busy, a demand read's request goes out at once, and no
// background request starts until it is done.
func TestDemandBeforeBackground(t *testing.T) {
	files := []treetest.File{treetest.Reg("bulk", 0o644, treetest.Random(1, 64*0x10000)), treetest.Reg("wanted", 0o644, treetest.Random(2, 4*0x10000))}
	res, dir := fetchtest.BuildImage(t, files, builder.Options{ChunkSize: 0x10000})
	be := &sendLog{FileSource: storage.FileSource{Dir: dir}}
	e := open(t, res.Bootstrap, be, fetch.Options{Cache: fetchtest.NewMemCache()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The stream a filesystem's prefetch of /bulk makes (its hot set).
	go e.Stream(ctx, e.refs(t, "/bulk"), hotSet)
	time.Sleep(100 * time.Millisecond) // prefetch is in full swing
	wanted := e.refs(t, "/wanted")
	for k := 0; k < 3; k++ {
		if _, _, err := e.Chunk(context.Background(), wanted[k]); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	be.mu.Lock()
	defer be.mu.Unlock()
	demands, inDemand, overlapped := 0, 0, 0
	for _, ev := range be.evs {
		switch {
		case ev.kind == fetch.Demand && ev.start:
			demands++
			inDemand++
		case ev.kind == fetch.Demand:
			inDemand--
		case ev.start && inDemand > 0:
			overlapped++
		}
	}
	if demands < 3 {
		t.Fatalf("%d demand requests, want 3", demands)
	}
	if overlapped > 0 {
		t.Fatalf("%d background requests started while a demand request was in flight", overlapped)
	}
}
