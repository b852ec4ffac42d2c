package fs

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/pkg/fetch"
)

// readFile reads a whole file through f and compares it.
func readFile(t *testing.T, f *FS, p string, want []byte) error {
	t.Helper()
	ino, err := f.lookupPath(context.Background(), p)
	if err != nil {
		return err
	}
	buf := make([]byte, len(want)+10)
	n, err := f.Read(context.Background(), ino.Nid, buf, 0)
	if err != nil {
		return err
	}
	if !bytes.Equal(buf[:n], want) {
		return fmt.Errorf("%s: wrong bytes", p)
	}
	return nil
}

// TestPrefetchRootIsPrefetchAll: a prefetch table naming the root is not
// streamed as a hot set (which goes before read-ahead) but as
// prefetch_all, behind every other request.
func TestPrefetchRootIsPrefetchAll(t *testing.T) {
	im := fetchtest.BuildHotImage(t, 0)
	be := fetchtest.NewStreamLog(im.Dir)
	f, err := Open(context.Background(), im.Boot, be, Options{Fetch: fetch.Options{Cache: fetchtest.NewMemCache()}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Prefetch(context.Background(), PrefetchOptions{Paths: []string{"/"}})
	reqs := be.Requests(im.DataEnd)
	var total int64
	for _, r := range reqs {
		if r.Kind != fetch.Prefetch {
			t.Fatalf("request %v: want only prefetch_all streams: %v", r, reqs)
		}
		total += r.N
	}
	if total < im.DataEnd*9/10 {
		t.Fatalf("prefetch of / fetched %d of %d bytes", total, im.DataEnd)
	}
}
