package fetch_test

import (
	"context"
	"io"
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

// OpenRange records a streamed request: it starts when it is opened and
// ends when it is closed.
func (s *sendLog) OpenRange(ctx context.Context, blobID string, off, n int64) (io.ReadCloser, error) {
	s.mu.Lock()
	s.evs = append(s.evs, sendEvent{true, fetch.KindOf(ctx), off})
	s.mu.Unlock()
	time.Sleep(15 * time.Millisecond)
	rc, err := s.FileSource.OpenRange(ctx, blobID, off, n)
	if err != nil {
		return nil, err
	}
	return &loggedStream{ReadCloser: rc, end: func() {
		s.mu.Lock()
		s.evs = append(s.evs, sendEvent{false, fetch.KindOf(ctx), off})
		s.mu.Unlock()
	}}, nil
}

type loggedStream struct {
	io.ReadCloser
	end  func()
	once sync.Once
}

func (l *loggedStream) Close() error {
	l.once.Do(l.end)
	return l.ReadCloser.Close()
}

// TestDemandBeforeBackground: while prefetch_all's streams (four
// workers, small segments) keep the backend busy, a demand read's
// request goes out at once, and no background request starts until it
// is done.
func TestDemandBeforeBackground(t *testing.T) {
	files := []treetest.File{treetest.Reg("bulk", 0o644, treetest.Random(1, 64*0x10000)), treetest.Reg("wanted", 0o644, treetest.Random(2, 4*0x10000))}
	res, dir := fetchtest.BuildImage(t, files, builder.Options{ChunkSize: 0x10000})
	be := &sendLog{FileSource: storage.FileSource{Dir: dir}}
	e := open(t, res.Bootstrap, be, fetch.Options{Cache: fetchtest.NewMemCache()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Stream(ctx, e.refs(t, "/bulk"), fetch.StreamOptions{Kind: fetch.Prefetch, Max: 2 * 0x10000, Workers: 4})
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
	background := 0
	for _, ev := range be.evs {
		if ev.start && ev.kind == fetch.Prefetch {
			background++
		}
	}
	if background < 4 {
		t.Fatalf("%d prefetch requests: the test needs prefetch_all busy", background)
	}
	if demands < 3 {
		t.Fatalf("%d demand requests, want 3", demands)
	}
	if overlapped > 0 {
		t.Fatalf("%d background requests started while a demand request was in flight", overlapped)
	}
}
