package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/roottest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/daemon/api"
	"github.com/nydus-go/nydus/pkg/errdefs"
)

func quietDaemon(o Options) *Daemon {
	o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	return New(o)
}

// TestCacheOpenedOnce: callers asking for the cache of a work directory
// at once share the one opened (outside Daemon.mu); once the daemon is
// closed, no cache is opened, and one whose opening Close overtook is
// closed and refused, to its waiters too.
func TestCacheOpenedOnce(t *testing.T) {
	d := quietDaemon(Options{})
	dir := t.TempDir()
	const n = 8
	got := make([]any, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := d.cache(context.Background(), dir)
			if err != nil {
				t.Error(err)
			}
			got[i] = c
		}()
	}
	wg.Wait()
	for i := range got {
		if got[i] == nil || got[i] != got[0] {
			t.Fatalf("caller %d got cache %p, caller 0 %p", i, got[i], got[0])
		}
	}
	if files := d.UnderlyingFiles(); len(files) != 0 {
		t.Errorf("underlying files of an unused cache: %v", files)
	}

	// An opening overtaken by Close: reserved, then Close, then opened.
	other := t.TempDir()
	s := &cacheSlot{ready: make(chan struct{})}
	d.mu.Lock()
	d.caches[other] = s
	d.mu.Unlock()
	waited := make(chan error, 1)
	go func() {
		_, err := d.cache(context.Background(), other)
		waited <- err
	}()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if c, err := d.openCache(context.Background(), other, s); !errors.Is(err, errClosed) || c != nil {
		t.Fatalf("a cache opened as the daemon closed: %v %v", c, err)
	}
	if err := <-waited; !errors.Is(err, errClosed) {
		t.Fatalf("a caller waiting for it: %v", err)
	}
	if _, err := d.cache(context.Background(), dir); !errors.Is(err, errClosed) {
		t.Fatalf("a cache after Close: %v", err)
	}
}

// TestMountReservations: concurrent mounts of one mountpoint, one wins
// and the others are refused (409) with their images closed; a second
// start of the daemon's connection is refused; after Close, mounts are
// refused.
func TestMountReservations(t *testing.T) {
	roottest.RequireFUSE(t)
	res, blobs := fetchtest.BuildImage(t, []treetest.File{treetest.Reg("f", 0o644, []byte("data"))}, builder.Options{})
	boot := filepath.Join(t.TempDir(), "image.boot")
	if err := os.WriteFile(boot, res.Bootstrap, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`{"device":{"backend":{"type":"localfs","config":{"dir":%q}},"cache":{"type":"blobcache","config":{"work_dir":%q}}},"fs_prefetch":{"enable":false}}`, blobs, t.TempDir())
	d := quietDaemon(Options{Mountpoint: t.TempDir()})
	ctx := context.Background()
	if err := d.StartShared(ctx); err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			d.Close()
		}
	}()
	if err := d.StartShared(ctx); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("a second start: %v", err)
	}

	const n = 6
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = d.Mount(ctx, "/a", api.MountRequest{Source: boot, Config: cfg})
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		if err == nil {
			ok++
		} else if st, code := httpStatus(err); st != 409 || code != "EEXIST" {
			t.Errorf("a losing mount: %v", err)
		}
	}
	if ok != 1 || len(d.Instances()) != 1 {
		t.Fatalf("%d mounts of /a succeeded, %d images mounted; want 1", ok, len(d.Instances()))
	}
	if err := d.Umount(ctx, "/a"); err != nil {
		t.Fatal(err)
	}
	if err := d.Mount(ctx, "/a", api.MountRequest{Source: boot, Config: cfg}); err != nil {
		t.Fatalf("a mount after the umount: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if err := d.Mount(ctx, "/b", api.MountRequest{Source: boot, Config: cfg}); err == nil {
		t.Fatal("a mount after Close succeeded")
	}
	if len(d.Instances()) != 0 || len(d.busy) != 0 {
		t.Fatalf("after Close: %d images, %d busy mountpoints", len(d.Instances()), len(d.busy))
	}
}
