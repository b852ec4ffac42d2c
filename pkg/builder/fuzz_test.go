package builder

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// FuzzTar feeds arbitrary tar streams to the builder: it must return an
// error or a bootstrap the reader accepts, never panic.
func FuzzTar(f *testing.F) {
	f.Add(treetest.Tar(treetest.Sample()[:12]))
	f.Add(treetest.Tar([]treetest.File{treetest.Reg("a", 0o644, []byte("x")), {Header: hdrLink("b", "a")}}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<20 {
			return
		}
		res, err := Create(context.Background(), bytes.NewReader(b), io.Discard, Options{ChunkSize: 0x1000, Workers: 2})
		if err != nil {
			return
		}
		if _, err := rafs.Open(context.Background(), bytes.NewReader(res.Bootstrap), int64(len(res.Bootstrap))); err != nil {
			t.Fatalf("builder output rejected by the reader: %v", err)
		}
	})
}
