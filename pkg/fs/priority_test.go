package fs

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
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
	s.evs = append(s.evs, sendEvent{true, fetchKind(ctx), off})
	s.mu.Unlock()
	time.Sleep(15 * time.Millisecond)
	s.mu.Lock()
	s.evs = append(s.evs, sendEvent{false, fetchKind(ctx), off})
	s.mu.Unlock()
	return s.FileSource.ReadRange(ctx, blobID, off, n)
}

// TestDemandBeforeBackground: while prefetch_all keeps four workers
// busy, a demand read's request goes out at once, and no background
// request starts until it is done.
func TestDemandBeforeBackground(t *testing.T) {
	files := []treetest.File{treetest.Reg("bulk", 0o644, treetest.Random(1, 64*0x10000)), treetest.Reg("wanted", 0o644, treetest.Random(2, 4*0x10000))}
	res, dir := buildImage(t, files, builder.Options{ChunkSize: 0x10000})
	be := &sendLog{FileSource: storage.FileSource{Dir: dir}}
	f, err := Open(context.Background(), res.Bootstrap, be, Options{Cache: &memCache{m: map[string][]byte{}}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go f.Prefetch(ctx, PrefetchOptions{Paths: []string{"/bulk"}, Workers: 4})
	time.Sleep(100 * time.Millisecond) // prefetch is in full swing
	wanted, _ := f.Lookup(context.Background(), f.RootNid(), "wanted")
	for k := 0; k < 3; k++ {
		if _, err := f.Read(context.Background(), wanted.Nid, make([]byte, 100), int64(k)*0x10000); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	be.mu.Lock()
	defer be.mu.Unlock()
	demands, inDemand, overlapped := 0, 0, 0
	for _, e := range be.evs {
		switch {
		case e.kind == FetchDemand && e.start:
			demands++
			inDemand++
		case e.kind == FetchDemand:
			inDemand--
		case e.start && inDemand > 0:
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
