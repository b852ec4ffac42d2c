package fetch_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// engine is an engine under test with its image's bootstrap, to find
// files' chunks by path.
type engine struct {
	*fetch.Engine
	rd *rafs.Reader
}

// open opens an engine on a bootstrap, closed when the test ends.
func open(t *testing.T, boot []byte, be fetch.Backend, o fetch.Options) *engine {
	t.Helper()
	rd, err := rafs.Open(context.Background(), bytes.NewReader(boot), int64(len(boot)))
	if err != nil {
		t.Fatal(err)
	}
	e, err := fetch.New(context.Background(), rd, be, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return &engine{Engine: e, rd: rd}
}

// refs returns the chunks of the file at p, in file order.
func (e *engine) refs(t *testing.T, p string) []fetch.Ref {
	t.Helper()
	ino, err := e.rd.Lookup(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := e.rd.ChunkAddrs(context.Background(), ino)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]fetch.Ref, 0, len(addrs))
	for _, a := range addrs {
		info, ok := e.Info(a.BlobIndex, a.CIIndex)
		if !ok {
			t.Fatalf("%s: chunk (blob %d, index %d) is not in the chunk table", p, a.BlobIndex, a.CIIndex)
		}
		out = append(out, fetch.Ref{Path: p, Info: info})
	}
	return out
}

// hotRefs returns the chunks of the files at paths, in order: the hot
// set a filesystem streams for a prefetch list.
func (e *engine) hotRefs(t *testing.T, paths []string) []fetch.Ref {
	t.Helper()
	var out []fetch.Ref
	for _, p := range paths {
		out = append(out, e.refs(t, p)...)
	}
	return out
}

// allRefs returns the chunks of every regular file, in walk order.
func (e *engine) allRefs(t *testing.T) []fetch.Ref {
	t.Helper()
	var out []fetch.Ref
	err := e.rd.Walk(context.Background(), func(p string, ino *rafs.DiskInode) error {
		if ino.IsRegular() && ino.Size > 0 {
			out = append(out, e.refs(t, p)...)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// readFile reads a whole file chunk by chunk through the engine and
// compares it.
func (e *engine) readFile(t *testing.T, p string, want []byte) error {
	t.Helper()
	var got []byte
	for _, r := range e.refs(t, p) {
		data, _, err := e.Chunk(context.Background(), r)
		if err != nil {
			return err
		}
		got = append(got, data...)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s: wrong bytes", p)
	}
	return nil
}

// hotSet shapes a stream as a filesystem's hot-set prefetch does.
var hotSet = fetch.StreamOptions{Kind: fetch.HotSet, First: fetch.HotFirstSegment, Max: fetch.HotMaxSegment, Workers: fetch.HotWorkers}
