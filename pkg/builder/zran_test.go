package builder

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// blobSet serves blobs from memory by id.
type blobSet map[string][]byte

func (s blobSet) ReadRange(ctx context.Context, id string, off, n int64) ([]byte, error) {
	b, ok := s[id]
	if !ok {
		return nil, fmt.Errorf("no blob %s", id)
	}
	if off < 0 || n < 0 || off+n > int64(len(b)) {
		return nil, fmt.Errorf("range %d+%d beyond blob %s of %d bytes", off, n, id, len(b))
	}
	return append([]byte(nil), b[off:off+n]...), nil
}

func gzipLevel(t testing.TB, data []byte, level int) []byte {
	t.Helper()
	var b bytes.Buffer
	zw, err := gzip.NewWriterLevel(&b, level)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(data)
	zw.Close()
	return b.Bytes()
}

type zranBuilt struct {
	res   *ZranResult
	ref   []byte
	rd    *rafs.Reader
	blobs blobSet
}

func buildZran(t testing.TB, gz []byte, span int64, o Options) *zranBuilt {
	t.Helper()
	var ref bytes.Buffer
	res, err := CreateZranRef(context.Background(), bytes.NewReader(gz), &ref, span, o)
	if err != nil {
		t.Fatalf("CreateZranRef: %v", err)
	}
	rd, err := rafs.Open(context.Background(), bytes.NewReader(res.Bootstrap), int64(len(res.Bootstrap)))
	if err != nil {
		t.Fatalf("open bootstrap: %v", err)
	}
	return &zranBuilt{res: res, ref: ref.Bytes(), rd: rd, blobs: blobSet{res.DataBlobID: gz, res.BlobID: ref.Bytes()}}
}

func unpackZran(t testing.TB, b *zranBuilt) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := Unpack(context.Background(), b.rd, b.blobs, &out, UnpackOptions{}); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	return out.Bytes()
}

// TestZranRoundTrip: a gzip layer, at every level and in several members,
// built by reference: the bootstrap's blob is the gzip file itself, the
// ref blob holds the chunk-info table with zran contexts, and unpacking
// through them gives the layer's tree.
func TestZranRoundTrip(t *testing.T) {
	files := append(treetest.Sample(), treetest.Reg("big", 0o644, treetest.Random(7, 3<<20+5)), treetest.Reg("dup", 0o600, treetest.Random(7, 3<<20+5)))
	layer := treetest.Tar(files)
	for _, level := range []int{gzip.NoCompression, gzip.BestSpeed, gzip.DefaultCompression, gzip.BestCompression} {
		for _, members := range []int{1, 2} {
			t.Run(fmt.Sprintf("level%d/members%d", level, members), func(t *testing.T) {
				var gz []byte
				step := len(layer)/members + 1
				for off := 0; off < len(layer); off += step {
					gz = append(gz, gzipLevel(t, layer[off:min(off+step, len(layer))], level)...)
				}
				b := buildZran(t, gz, 256<<10, Options{Whiteout: WhiteoutNone, ChunkSize: 0x10000, TOC: true})
				if len(b.rd.Blobs) != 1 || b.rd.Blobs[0].BlobID != b.res.DataBlobID || b.res.DataSize != uint64(len(gz)) {
					t.Fatalf("blob table %+v, data blob %s (%d bytes)", b.rd.Blobs, b.res.DataBlobID, b.res.DataSize)
				}
				bi := b.rd.Blobs[0]
				want := blob.FeatureZran | blob.FeatureSeparate | blob.FeatureChunkInfoV2 | blob.FeatureAligned | blob.FeatureInlinedChunkDigest | blob.FeatureHasTOC
				if bi.Features&want != want || bi.MetaDigest == ([32]byte{}) {
					t.Fatalf("features %v, meta digest %x", bi.Features, bi.MetaDigest)
				}
				if b.res.Stats.DedupChunks == 0 {
					t.Fatal("the duplicate file's chunks were not deduplicated")
				}
				out := unpackZran(t, b)
				if d := treetest.Diff(tree(t, layer), tree(t, out)); d != "" {
					t.Fatalf("unpacked tree differs:\n%s", d)
				}
				// The meta file parses and holds one context per few chunks.
				m, err := blob.ParseMetaFile(b.res.BlobMeta)
				if err != nil || len(m.ZranContexts) != b.res.Contexts || len(m.ZranContexts) < 2 {
					t.Fatalf("meta file: %v, %d contexts", err, b.res.Contexts)
				}
			})
		}
	}
}

// TestZranUpstreamFixtures: upstream's zran layers built by reference,
// every file read back and compared with the tar.
func TestZranUpstreamFixtures(t *testing.T) {
	for _, name := range []string{"zran-single-stream.tar.gz", "zran-two-streams.tar.gz", "zran-zero-file.tar.gz"} {
		t.Run(name, func(t *testing.T) {
			gz, err := os.ReadFile(filepath.Join("..", "..", "testdata", "upstream", "nydus", "zran", name))
			if err != nil {
				t.Fatal(err)
			}
			b := buildZran(t, gz, 0, Options{Whiteout: WhiteoutNone, InlineMeta: false, TOC: true})
			zr, err := gzip.NewReader(bytes.NewReader(gz))
			if err != nil {
				t.Fatal(err)
			}
			var layer bytes.Buffer
			if _, err := layer.ReadFrom(zr); err != nil {
				t.Fatal(err)
			}
			out := unpackZran(t, b)
			if d := treetest.Diff(tree(t, layer.Bytes()), tree(t, out)); d != "" {
				t.Fatalf("unpacked tree differs:\n%s", d)
			}
		})
	}
}

// TestZranTamper: a flipped byte of the gzip layer fails the files whose
// chunks it feeds, with an error naming the chunk; a truncated layer and
// a bad context fail too.
func TestZranTamper(t *testing.T) {
	layer := treetest.Tar([]treetest.File{treetest.Reg("a", 0o644, treetest.Random(1, 600<<10)), treetest.Reg("b", 0o644, treetest.Random(2, 600<<10))})
	gz := gzipLevel(t, layer, gzip.DefaultCompression)
	b := buildZran(t, gz, 128<<10, Options{Whiteout: WhiteoutNone, ChunkSize: 0x10000})
	bad := append([]byte(nil), gz...)
	bad[len(bad)*3/4] ^= 0x20
	b.blobs[b.res.DataBlobID] = bad
	err := Unpack(context.Background(), b.rd, b.blobs, &bytes.Buffer{}, UnpackOptions{})
	if err == nil {
		t.Fatal("a flipped byte in the gzip layer went unnoticed")
	}
	t.Log(err)
	b.blobs[b.res.DataBlobID] = gz[:len(gz)/2]
	if err := Unpack(context.Background(), b.rd, b.blobs, &bytes.Buffer{}, UnpackOptions{}); err == nil {
		t.Fatal("a truncated gzip layer went unnoticed")
	}
	if _, err := CreateZranRef(context.Background(), bytes.NewReader(gz[:len(gz)-9]), &bytes.Buffer{}, 0, Options{}); err == nil {
		t.Fatal("a truncated gzip layer was built")
	}
	if _, err := CreateZranRef(context.Background(), bytes.NewReader(layer), &bytes.Buffer{}, 0, Options{}); err == nil {
		t.Fatal("a plain tar was built as a gzip layer")
	}
	if _, err := CreateZranRef(context.Background(), bytes.NewReader(gz), &bytes.Buffer{}, 0, Options{BatchSize: 0x10000}); err == nil {
		t.Fatal("batches were accepted")
	}
	_ = errors.New
}
