package fs

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
)

// putCounter counts the chunks put into a cache.
type putCounter struct {
	*fetchtest.MemCache
	puts atomic.Int64
}

func (c *putCounter) Put(ctx context.Context, blobID string, ci uint32, off int64, data []byte) error {
	c.puts.Add(1)
	return c.MemCache.Put(ctx, blobID, ci, off, data)
}

// TestCloseEndsFetches: a backend fetch held open across Close ends with
// it (Close does not wait for the backend), and nothing is put into the
// cache after Close returns, so the daemon can release the cache's
// handles and the blob can be removed.
func TestCloseEndsFetches(t *testing.T) {
	data := treetest.Random(21, 4*0x10000)
	res, dir := fetchtest.BuildImage(t, []treetest.File{treetest.Reg("f", 0o644, data)}, builder.Options{ChunkSize: 0x10000})
	be := fetchtest.NewStreamLog(dir)
	gate := make(chan struct{})
	be.Gate = func(int, fetchtest.Request) chan struct{} { return gate }
	cache := &putCounter{MemCache: fetchtest.NewMemCache()}
	f, err := Open(context.Background(), res.Bootstrap, be, Options{Fetch: fetch.Options{Cache: cache}, ReadAhead: 4 * 0x10000})
	if err != nil {
		t.Fatal(err)
	}
	ino := f.mustResolve(t, "/f")
	read := make(chan error, 1)
	go func() {
		_, err := f.Read(context.Background(), ino.Nid, make([]byte, 4096), 0)
		read <- err
	}()
	be.WaitFor(t, "the read's fetch", func(r fetchtest.Request) bool { return r.Kind == fetch.Demand })
	closed := make(chan struct{})
	go func() { f.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		close(gate)
		t.Fatal("Close waited for a fetch held open by the backend")
	}
	puts := cache.puts.Load()
	close(gate)
	if err := <-read; err == nil {
		t.Error("a read whose fetch was cut by Close succeeded")
	}
	time.Sleep(100 * time.Millisecond)
	if n := cache.puts.Load() - puts; n != 0 {
		t.Errorf("%d chunks put into the cache after Close", n)
	}
}

// TestGoAfterClose: background work asked for once Close has begun is
// not run, and work started concurrently with Close is waited for by it
// (bgWG.Add never races bgWG.Wait: run with -race).
func TestGoAfterClose(t *testing.T) {
	res, dir := fetchtest.BuildImage(t, []treetest.File{treetest.Reg("f", 0o644, []byte("x"))}, builder.Options{})
	f, err := Open(context.Background(), res.Bootstrap, fetchtest.NewStreamLog(dir), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var running, after atomic.Int64
	var closed atomic.Bool
	stop := make(chan struct{})
	spawned := make(chan struct{})
	go func() {
		defer close(spawned)
		for {
			select {
			case <-stop:
				return
			default:
			}
			f.Go(func(ctx context.Context) {
				running.Add(1)
				defer running.Add(-1)
				if closed.Load() {
					after.Add(1)
				}
				<-ctx.Done()
			})
		}
	}()
	time.Sleep(10 * time.Millisecond)
	f.Close()
	closed.Store(true)
	if n := running.Load(); n != 0 {
		t.Errorf("%d background goroutines still running after Close", n)
	}
	close(stop)
	<-spawned
	ran := false
	f.Go(func(context.Context) { ran = true })
	time.Sleep(10 * time.Millisecond)
	if ran || after.Load() != 0 {
		t.Errorf("background work ran after Close (%v, %d)", ran, after.Load())
	}
}
