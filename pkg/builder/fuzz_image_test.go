package builder

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/storage"
)

// seedImage builds a small image: its bootstrap and its blob, whose CI
// table (the blob meta), batches and ToC the bootstrap points into.
func seedImage(f *testing.F, o Options, files []treetest.File) {
	var blob bytes.Buffer
	res, err := Create(context.Background(), bytes.NewReader(treetest.Tar(files)), &blob, o)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(res.Bootstrap, blob.Bytes())
}

// FuzzImage mutates a bootstrap and its blob together: check (every
// chunk record against the blob's chunk-info table, every digest) and
// unpack must return an error or succeed, never panic or hang, and a
// bootstrap that check accepts unpacks.
func FuzzImage(f *testing.F) {
	small := []treetest.File{
		treetest.Reg("a", 0o644, []byte("hello")), treetest.Reg("d/b", 0o600, treetest.Random(1, 9000)),
		treetest.Reg("d/c", 0o644, bytes.Repeat([]byte("z"), 5000)),
	}
	seedImage(f, Options{ChunkSize: 0x1000}, small)
	seedImage(f, Options{ChunkSize: 0x1000, BatchSize: 0x1000}, small)
	seedImage(f, Options{ChunkSize: 0x1000, TOC: true}, small)
	f.Fuzz(func(t *testing.T, boot, blob []byte) {
		if len(boot) > 1<<20 || len(blob) > 4<<20 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rd, err := rafs.Open(ctx, bytes.NewReader(boot), int64(len(boot)))
		if err != nil {
			return
		}
		_, checkErr := Check(ctx, rd, storage.BytesSource(blob))
		unpackErr := Unpack(ctx, rd, storage.BytesSource(blob), io.Discard, UnpackOptions{})
		if ctx.Err() != nil {
			t.Fatalf("check or unpack took over 10 s: %v / %v", checkErr, unpackErr)
		}
		if checkErr == nil && unpackErr != nil {
			t.Fatalf("check accepted what unpack refused: %v", unpackErr)
		}
	})
}
