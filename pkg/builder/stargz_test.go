package builder

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/fs"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/stargz"
	"github.com/nydus-go/nydus/pkg/storage"
)

// tocSample is treetest.Sample without the names a TOC cannot hold (its
// JSON has no non-UTF-8 strings), plus files of several chunks.
func tocSample() []treetest.File {
	var files []treetest.File
	for _, f := range treetest.Sample() {
		if utf8.ValidString(f.Header.Name) {
			files = append(files, f)
		}
	}
	return append(files,
		treetest.Reg("chunks/exact", 0o644, treetest.Random(11, 2*0x10000)),
		treetest.Reg("chunks/one", 0o644, treetest.Random(12, 0x10000)),
		treetest.Reg("chunks/tail", 0o644, treetest.Random(13, 5*0x10000+7)))
}

// zstdCompression is the zstd:chunked estargz.Compression.
type zstdCompression struct {
	*zstdchunked.Compressor
	*zstdchunked.Decompressor
}

// stargzLayer converts a tar into an eStargz (or zstd:chunked) layer with
// stargz-snapshotter's own writer.
func stargzLayer(t testing.TB, layer []byte, chunkSize int, zstdChunked bool) []byte {
	t.Helper()
	opts := []estargz.Option{estargz.WithChunkSize(chunkSize)}
	if zstdChunked {
		opts = append(opts, estargz.WithCompression(zstdCompression{&zstdchunked.Compressor{CompressionLevel: zstd.SpeedDefault}, &zstdchunked.Decompressor{}}))
	}
	b, err := estargz.Build(io.NewSectionReader(bytes.NewReader(layer), 0, int64(len(layer))), opts...)
	if err != nil {
		t.Fatalf("estargz.Build: %v", err)
	}
	defer b.Close()
	out, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// buildTOCRef builds the TOC-reference bootstrap of a layer.
func buildTOCRef(t testing.TB, layer []byte, chunkSize uint32) (*Result, *rafs.Reader) {
	t.Helper()
	l, err := OpenTOCLayer(bytes.NewReader(layer), int64(len(layer)))
	if err != nil {
		t.Fatalf("OpenTOCLayer: %v", err)
	}
	res, err := CreateFromTOC(context.Background(), l, TOCOptions{ChunkSize: chunkSize})
	if err != nil {
		t.Fatalf("CreateFromTOC: %v", err)
	}
	rd, err := rafs.Open(context.Background(), bytes.NewReader(res.Bootstrap), int64(len(res.Bootstrap)))
	if err != nil {
		t.Fatalf("open bootstrap: %v", err)
	}
	return res, rd
}

// lookupPath finds a path ("a/b") in an FS.
func lookupPath(ctx context.Context, f *fs.FS, p string) (*fs.Inode, error) {
	nid := f.RootNid()
	var ino *fs.Inode
	for _, name := range strings.Split(p, "/") {
		var err error
		if ino, err = f.Lookup(ctx, nid, name); err != nil {
			return nil, err
		}
		nid = ino.Nid
	}
	return ino, nil
}

func readFile(ctx context.Context, f *fs.FS, p string) ([]byte, error) {
	ino, err := lookupPath(ctx, f, p)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, ino.Size)
	n, err := f.Read(ctx, ino.Nid, buf, 0)
	return buf[:n], err
}

// regularFiles returns the content of each regular file of a layer, the
// last entry of a path winning.
func regularFiles(files []treetest.File) map[string][]byte {
	out := map[string][]byte{}
	for _, f := range files {
		p, _ := stargz.CleanPath(f.Header.Name)
		switch f.Header.Typeflag {
		case tar.TypeReg:
			out[p] = f.Data
		case tar.TypeLink:
			l, _ := stargz.CleanPath(f.Header.Linkname)
			out[p] = out[l]
		}
	}
	return out
}

// TestTOCRef: eStargz and zstd:chunked layers made by stargz-snapshotter's
// writer, built by reference: the bootstrap's only blob is the layer
// itself (id = its sha256, gzip or zstd chunks, sha256 digests), the
// builder's check passes (every record agrees with the table the layer's
// TOC defines, every chunk verifies), unpacking gives the source tree,
// and every file reads back byte for byte through package fs.
func TestTOCRef(t *testing.T) {
	files := tocSample()
	src := treetest.Tar(files)
	want, err := treetest.FromTar(bytes.NewReader(src), treetest.Options{IgnoreMtimeNsec: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, zc := range []bool{false, true} {
		name := "estargz"
		if zc {
			name = "zstdchunked"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			layer := stargzLayer(t, src, 0x10000, zc)
			res, rd := buildTOCRef(t, layer, 0x10000)
			sum := sha256.Sum256(layer)
			id := hex.EncodeToString(sum[:])
			if len(rd.Blobs) != 1 || res.BlobID != id {
				t.Fatalf("blobs %+v, blob id %s, want the layer's sha256 %s", rd.Blobs, res.BlobID, id)
			}
			bi := rd.Blobs[0]
			comp := compress.GZip
			if zc {
				comp = compress.Zstd
			}
			if bi.BlobID != id || bi.Compressor != comp || bi.Digester != digester.Sha256 || bi.Features != blob.FeatureAligned|blob.FeatureCapTarTOC ||
				bi.CIOffset != 0 || bi.ChunkSize != 0x10000 || bi.CompressedSize != uint64(len(layer)) || !stargz.IsRefBlob(bi) {
				t.Fatalf("blob table entry %+v", bi)
			}
			if rd.Ext.Flags.Digester() != digester.Sha256 || rd.Ext.Flags.Compressor() != comp {
				t.Fatalf("superblock flags %v", rd.Ext.Flags)
			}
			if res.Stats.DedupChunks == 0 {
				t.Fatal("identical files were not read from one copy")
			}
			blobs := blobSet{id: layer}
			if _, err := Check(ctx, rd, blobs); err != nil {
				t.Fatalf("Check: %v", err)
			}
			var out bytes.Buffer
			if err := Unpack(ctx, rd, blobs, &out, UnpackOptions{}); err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			got, err := treetest.FromTar(&out, treetest.Options{IgnoreMtimeNsec: true})
			if err != nil {
				t.Fatal(err)
			}
			if d := treetest.Diff(want, got); d != "" {
				t.Fatalf("unpacked tree differs:\n%s", d)
			}
			f, err := fs.Open(ctx, res.Bootstrap, storage.BytesSource(layer), fs.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for p, data := range regularFiles(files) {
				b, err := readFile(ctx, f, p)
				if err != nil || !bytes.Equal(b, data) {
					t.Errorf("%s: %d bytes, %v; want %d bytes", p, len(b), err, len(data))
				}
			}
			if f.Metrics.FetchedChunks.Load() == 0 || f.Metrics.RecordMismatches.Load() != 0 {
				t.Fatalf("metrics: %d chunks fetched, %d record mismatches", f.Metrics.FetchedChunks.Load(), f.Metrics.RecordMismatches.Load())
			}
			// The meta file is the table the layer's TOC defines.
			m, err := blob.ParseMetaFile(res.BlobMeta)
			if err != nil || len(m.ChunkInfos) != int(bi.ChunkCount) {
				t.Fatalf("meta file: %v", err)
			}
		})
	}
}

// TestTOCRefTamper: a flipped byte in one file's compressed data fails
// that file's read with EIO (fs.ErrIO, which is fetch.ErrIO); the other
// files still read. A bootstrap whose record points a chunk at another
// chunk's cache slot (its data verifies) is refused
// by the record check: what the cache would place in another chunk's
// slot.
func TestTOCRefTamper(t *testing.T) {
	ctx := context.Background()
	a, b := treetest.Random(1, 300<<10), treetest.Random(2, 300<<10)
	src := treetest.Tar([]treetest.File{treetest.Reg("a", 0o644, a), treetest.Reg("b", 0o644, b)})
	for _, zc := range []bool{false, true} {
		layer := stargzLayer(t, src, 0x10000, zc)
		res, rd := buildTOCRef(t, layer, 0x10000)
		// The middle of a's data: a's third chunk.
		tree, err := rd.Load(ctx, rafs.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ca := tree.Child("a").Inode.Chunks[2]
		bad := append([]byte(nil), layer...)
		bad[ca.CompressedOffset+uint64(ca.CompressedSize)/2] ^= 0x40
		f, err := fs.Open(ctx, res.Bootstrap, storage.BytesSource(bad), fs.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := readFile(ctx, f, "a"); !errors.Is(err, fs.ErrIO) {
			t.Errorf("zstd:chunked=%v: reading the tampered file: %v, want EIO", zc, err)
		}
		if got, err := readFile(ctx, f, "b"); err != nil || !bytes.Equal(got, b) {
			t.Errorf("zstd:chunked=%v: the other file: %v", zc, err)
		}
		f.Close()

		// A crafted bootstrap: b's first chunk, read from its own data
		// (which verifies), placed in a's first chunk's cache slot.
		cb := &tree.Child("b").Inode.Chunks[0]
		cb.UncompressedOffset = tree.Child("a").Inode.Chunks[0].UncompressedOffset
		crafted, err := rafs.Marshal(tree, rafs.WriterOptions{ChunkSize: rd.ChunkSize(), Flags: rd.Ext.Flags, Blobs: rd.Blobs})
		if err != nil {
			t.Fatal(err)
		}
		f, err = fs.Open(ctx, crafted, storage.BytesSource(layer), fs.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := readFile(ctx, f, "b"); !errors.Is(err, fs.ErrIO) || !errors.Is(err, storage.ErrChunkRecordMismatch) {
			t.Errorf("zstd:chunked=%v: crafted record: %v, want EIO from a record mismatch", zc, err)
		}
		if got, err := readFile(ctx, f, "a"); err != nil || !bytes.Equal(got, a) {
			t.Errorf("zstd:chunked=%v: an honest record of the crafted bootstrap: %v", zc, err)
		}
		f.Close()
	}
}

// TestTOCRefRefused: layers without a TOC fail with one clear line: a
// plain zstd layer (one frame cannot be read at random), a plain gzip
// layer (zran's job), a TOC whose chunks do not fit the chunk size.
func TestTOCRefRefused(t *testing.T) {
	src := treetest.Tar(tocSample())
	zs, err := compress.Compress(compress.Zstd, nil, src)
	if err != nil {
		t.Fatal(err)
	}
	_, err = OpenTOCLayer(bytes.NewReader(zs), int64(len(zs)))
	if !errors.Is(err, stargz.ErrNoTOC) || !strings.Contains(err.Error(), "plain zstd layer") || strings.Contains(err.Error(), "\n") {
		t.Errorf("plain zstd layer: %v", err)
	}
	// A zstd stream of several frames is still plain zstd without the
	// zstd:chunked footer.
	enc, _ := zstd.NewWriter(nil)
	multi := append(enc.EncodeAll(src[:len(src)/2], nil), enc.EncodeAll(src[len(src)/2:], nil)...)
	if _, err := OpenTOCLayer(bytes.NewReader(multi), int64(len(multi))); !errors.Is(err, stargz.ErrNoTOC) {
		t.Errorf("multi-frame zstd layer: %v", err)
	}
	gz, err := compress.Compress(compress.GZip, nil, src)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenTOCLayer(bytes.NewReader(gz), int64(len(gz))); !errors.Is(err, stargz.ErrNoTOC) || !strings.Contains(err.Error(), "targz-ref") {
		t.Errorf("plain gzip layer: %v", err)
	}
	layer := stargzLayer(t, src, 0x10000, false)
	l, err := OpenTOCLayer(bytes.NewReader(layer), int64(len(layer)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CreateFromTOC(context.Background(), l, TOCOptions{ChunkSize: 0x20000}); err == nil || !strings.Contains(err.Error(), "chunk size") {
		t.Errorf("wrong chunk size: %v", err)
	}
}

// TestTOCRefUpstreamSample: upstream's estargz_sample.json (its builder
// test input) lays out as upstream's StargzBuilder does: landmarks left
// out, gzip-bounded stored sizes, 4 KiB aligned uncompressed offsets.
func TestTOCRefUpstreamSample(t *testing.T) {
	js, err := os.ReadFile(filepath.Join("..", "..", "testdata", "upstream", "nydus", "stargz", "estargz_sample.json"))
	if err != nil {
		t.Fatal(err)
	}
	toc, err := stargz.ParseTOC(js)
	if err != nil {
		t.Fatal(err)
	}
	const id = "bd4eff3fe6f5a352457c076d2133583e43db895b4af08d717b3fbcaeca89834e"
	res, err := CreateFromTOC(context.Background(), TOCLayer{TOC: toc, Kind: stargz.EStargz, BlobID: id, Size: 0x1000000}, TOCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rd, err := rafs.Open(context.Background(), bytes.NewReader(res.Bootstrap), int64(len(res.Bootstrap)))
	if err != nil {
		t.Fatal(err)
	}
	bi := rd.Blobs[0]
	if bi.BlobID != id || bi.ChunkCount != 2 || bi.ChunkSize != 0x400000 || bi.UncompressedSize != 0xcc000+0x8e000 || bi.CIUncompressedSize != 32 {
		t.Fatalf("blob table entry %+v", bi)
	}
	tree, err := rd.Load(context.Background(), rafs.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	busybox, musl := tree.Child("bin").Child("busybox").Inode, tree.Child("lib").Child("ld-musl-x86_64.so.1").Inode
	if tree.Child("bin").Child("busybox2").Inode != busybox || tree.Child(".prefetch.landmark") != nil {
		t.Fatal("hard link or landmark wrong")
	}
	// busybox: stored up to musl's member; musl: upstream's gzip bound.
	c0, c1 := busybox.Chunks[0], musl.Chunks[0]
	if c0.CompressedOffset != 126 || c0.CompressedSize != 512427-126 || c0.UncompressedOffset != 0 || c0.UncompressedSize != 833104 ||
		c1.CompressedOffset != 512427 || c1.CompressedSize != 580144+23+35*5+128 || c1.UncompressedOffset != 0xcc000 {
		t.Fatalf("chunks %+v %+v", c0, c1)
	}
}
