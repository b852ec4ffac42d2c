package fs

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
)

// zranImage builds a gzip layer of small files and a large one, and its
// zran image; it writes the gzip layer and the ref blob into a directory
// named by their ids.
func zranImage(t *testing.T) (boot []byte, dir string, files map[string][]byte, gz []byte, res *builder.ZranResult) {
	t.Helper()
	files = map[string][]byte{}
	var list []treetest.File
	for i := range 40 {
		name := fmt.Sprintf("small%02d", i)
		files[name] = bytes.Repeat([]byte(fmt.Sprintf("%s line of text %d\n", name, i)), 100+i*30)
		list = append(list, treetest.Reg(name, 0o644, files[name]))
	}
	var big bytes.Buffer
	for i := 0; big.Len() < 3<<20; i++ {
		fmt.Fprintf(&big, "big file line %d: %x\n", i, treetest.Random(int64(i), 24))
	}
	files["big"] = big.Bytes()
	list = append(list, treetest.Reg("big", 0o644, files["big"]))
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.DefaultCompression)
	zw.Write(treetest.Tar(list))
	zw.Close()
	gz = b.Bytes()
	var ref bytes.Buffer
	res, err := builder.CreateZranRef(context.Background(), bytes.NewReader(gz), &ref, 64<<10, builder.Options{Whiteout: builder.WhiteoutNone, TOC: true, ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	for id, data := range map[string][]byte{res.DataBlobID: gz, res.BlobID: ref.Bytes()} {
		if err := os.WriteFile(filepath.Join(dir, id), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return res.Bootstrap, dir, files, gz, res
}

// TestZranLazy: a zran image reads lazily from the original gzip layer:
// one small file costs a small part of the layer, every file reads back
// byte for byte, a streamed prefetch of the whole image leaves nothing to
// fetch, and the ref blob is read for its chunk-info table only.
func TestZranLazy(t *testing.T) {
	boot, dir, files, gz, res := zranImage(t)
	if res.Contexts < 5 {
		t.Fatalf("%d contexts", res.Contexts)
	}
	be := fetchtest.NewStreamLog(dir)
	f, err := Open(context.Background(), boot, be, Options{Fetch: fetch.Options{Cache: fetchtest.NewMemCache()}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := readAll(t, f, "/small20")
	if err != nil || !bytes.Equal(got, files["small20"]) {
		t.Fatalf("small20: %v", err)
	}
	// The chunk-info table comes from the ref blob; the rest is the
	// gzip layer's.
	bi := f.Reader().Blobs[0]
	fetched := -int64(bi.CICompressedSize) - blob.MetaHeaderSize
	for _, r := range be.Requests(1 << 62) {
		fetched += r.N
	}
	if fetched <= 0 || fetched > int64(len(gz))/8 {
		t.Fatalf("reading one small file fetched %d bytes of a %d-byte layer: %v", fetched, len(gz), be.Requests(1<<62))
	}
	for name, want := range files {
		got, err := readAll(t, f, "/"+name)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: %v", name, err)
		}
	}

	// A streamed prefetch of everything, then reads from the cache only.
	be2 := fetchtest.NewStreamLog(dir)
	f2, err := Open(context.Background(), boot, be2, Options{Fetch: fetch.Options{Cache: fetchtest.NewMemCache()}})
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	f2.Prefetch(context.Background(), PrefetchOptions{Paths: []string{"/"}})
	n := len(be2.Requests(1 << 62))
	for name, want := range files {
		got, err := readAll(t, f2, "/"+name)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("after prefetch, %s: %v", name, err)
		}
	}
	if m := len(be2.Requests(1 << 62)); m != n {
		t.Fatalf("reads after a prefetch of / sent %d more requests", m-n)
	}
	if f2.Metrics.DigestFailures.Load() != 0 {
		t.Fatal("digest failures")
	}
}

// TestZranTamperEIO: a flipped byte of the original gzip layer gives EIO
// for the file whose chunks it feeds, and only for it.
func TestZranTamperEIO(t *testing.T) {
	boot, dir, files, gz, res := zranImage(t)
	bad := append([]byte(nil), gz...)
	bad[len(bad)-len(bad)/4] ^= 0x08 // inside the big file's data
	if err := os.WriteFile(filepath.Join(dir, res.DataBlobID), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(context.Background(), boot, fetchtest.NewStreamLog(dir), Options{Fetch: fetch.Options{Cache: fetchtest.NewMemCache()}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := readAll(t, f, "/big"); !errors.Is(err, ErrIO) {
		t.Fatalf("big over a tampered layer: %v", err)
	}
	for _, name := range []string{"small00", "small39"} {
		got, err := readAll(t, f, "/"+name)
		if err != nil || !bytes.Equal(got, files[name]) {
			t.Fatalf("%s, away from the flipped byte: %v", name, err)
		}
	}
}
