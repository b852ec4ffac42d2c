package builder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/nydus-go/nydus/pkg/storage"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// memBlob is a blob held in memory, readable as a storage.RangeReader.
type memBlob struct {
	data []byte
	comp compress.Algorithm
}

func (m *memBlob) ReadRange(ctx context.Context, id string, off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off+n > int64(len(m.data)) {
		return nil, errors.New("range beyond blob")
	}
	return append([]byte(nil), m.data[off:off+n]...), nil
}

type built struct {
	res  *Result
	blob []byte
	rd   *rafs.Reader
}

func build(t testing.TB, layer []byte, o Options) *built {
	t.Helper()
	var out bytes.Buffer
	res, err := Create(context.Background(), bytes.NewReader(layer), &out, o)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	boot := res.Bootstrap
	rd, err := rafs.Open(context.Background(), bytes.NewReader(boot), int64(len(boot)))
	if err != nil {
		t.Fatalf("open output bootstrap: %v", err)
	}
	return &built{res: res, blob: out.Bytes(), rd: rd}
}

func unpack(t testing.TB, b *built, comp compress.Algorithm) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := Unpack(context.Background(), b.rd, &memBlob{b.blob, comp}, &out, UnpackOptions{}); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	return out.Bytes()
}

func tree(t testing.TB, tarBytes []byte) treetest.Tree {
	t.Helper()
	tr, err := treetest.FromTar(bytes.NewReader(tarBytes), treetest.Options{})
	if err != nil {
		t.Fatalf("read tar: %v", err)
	}
	return tr
}

// TestRoundTrip: tar → create → unpack → tar gives the same tree, and
// building the unpacked tar again gives the same bootstrap and blob.
func TestRoundTrip(t *testing.T) {
	layer := treetest.Tar(treetest.Sample())
	for _, comp := range []compress.Algorithm{compress.Zstd, compress.Lz4Block, compress.None} {
		for _, dig := range []digester.Algorithm{digester.Blake3, digester.Sha256} {
			for _, batch := range []uint32{0, 0x8000} {
				t.Run(fmt.Sprintf("%s/%s/batch-%#x", comp, dig, batch), func(t *testing.T) {
					o := Options{Compressor: comp, Digester: dig, Whiteout: WhiteoutNone, ChunkSize: 0x10000, BatchSize: batch}
					b := build(t, layer, o)
					out := unpack(t, b, comp)
					if d := treetest.Diff(tree(t, layer), tree(t, out)); d != "" {
						t.Fatalf("unpacked tree differs:\n%s", d)
					}
					// The unpacked tar is in canonical order, so building it
					// again is a fixed point: same bootstrap, same blob.
					b2 := build(t, out, o)
					out2 := unpack(t, b2, comp)
					if !bytes.Equal(out, out2) {
						t.Fatal("unpacking the rebuilt image changed the tar")
					}
					b3 := build(t, out2, o)
					if !bytes.Equal(b2.res.Bootstrap, b3.res.Bootstrap) {
						t.Fatal("rebuilding the unpacked tar changed the bootstrap")
					}
					if !bytes.Equal(b2.blob, b3.blob) {
						t.Fatal("rebuilding the unpacked tar changed the blob")
					}
					if batch > 0 && b.res.Stats.BatchedChunks == 0 {
						t.Fatal("no chunk was batched")
					}
				})
			}
		}
	}
}

func TestReproducibleAcrossWorkers(t *testing.T) {
	layer := treetest.Tar(treetest.Sample())
	var first *built
	for _, w := range []int{1, 2, 7} {
		for _, toc := range []bool{false, true} {
			b := build(t, layer, Options{Workers: w, InlineMeta: toc, TOC: toc, ChunkSize: 0x4000})
			if !toc {
				if first == nil {
					first = b
				} else if !bytes.Equal(first.blob, b.blob) || !bytes.Equal(first.res.Bootstrap, b.res.Bootstrap) {
					t.Fatalf("output with %d workers differs", w)
				}
			}
		}
	}
}

func TestDedupWithinLayer(t *testing.T) {
	b := build(t, treetest.Tar(treetest.Sample()), Options{Whiteout: WhiteoutNone})
	s := b.res.Stats
	// big.bin and big-copy.bin share all 4 chunks; the 2 MiB of zeros
	// are two identical chunks.
	if s.DedupChunks != 5 {
		t.Fatalf("dedup chunks = %d, stats %+v", s.DedupChunks, s)
	}
	if s.StoredBytes+s.DedupBytes != s.Bytes {
		t.Fatalf("byte accounting: %+v", s)
	}
	if b.res.Stats.Files != 17 {
		t.Fatalf("files = %d", b.res.Stats.Files)
	}
}

func TestParentAndChunkDictDedup(t *testing.T) {
	base := treetest.Tar([]treetest.File{treetest.Reg("a", 0o644, treetest.Random(5, 5<<20))})
	pb := build(t, base, Options{})
	upper := treetest.Tar([]treetest.File{
		treetest.Reg("copy-of-a", 0o644, treetest.Random(5, 5<<20)),
		treetest.Reg("new", 0o644, []byte("new data")),
	})
	ub := build(t, upper, Options{Parent: pb.rd})
	if ub.res.Stats.DedupChunks != 5 || ub.res.Stats.UniqueChunks != 1 {
		t.Fatalf("parent dedup stats %+v", ub.res.Stats)
	}
	if len(ub.rd.Blobs) != 2 || ub.rd.Blobs[0].BlobID != pb.res.BlobID {
		t.Fatalf("blob table %+v", ub.rd.Blobs)
	}
	// The merged view has the parent's file too.
	if _, err := ub.rd.Lookup(context.Background(), "/a"); err != nil {
		t.Fatal(err)
	}
	db := build(t, upper, Options{ChunkDict: pb.rd})
	if db.res.Stats.DedupChunks != 5 {
		t.Fatalf("chunk dict dedup stats %+v", db.res.Stats)
	}
	if _, err := db.rd.Lookup(context.Background(), "/a"); err == nil {
		t.Fatal("chunk dictionary tree leaked into the layer")
	}
	// A deleted-then-readded file costs nothing in a later layer.
	readd := treetest.Tar([]treetest.File{treetest.Reg(".wh.a", 0o644, nil), treetest.Reg("b", 0o644, treetest.Random(5, 5<<20))})
	rb := build(t, readd, Options{Parent: pb.rd})
	if rb.res.Stats.UniqueChunks != 0 || rb.res.HasBlob {
		t.Fatalf("re-added data stored again: %+v", rb.res.Stats)
	}
	if _, err := rb.rd.Lookup(context.Background(), "/a"); err == nil {
		t.Fatal("whiteout did not remove /a")
	}
}

func TestBadInput(t *testing.T) {
	good := treetest.Tar([]treetest.File{treetest.Reg("f", 0o644, bytes.Repeat([]byte("x"), 5000))})
	cases := []struct {
		name  string
		input []byte
		want  string
	}{
		{"truncated data", good[:1800], "ends at offset"},
		{"truncated at entry boundary", good[:1024], "without the end-of-archive marker"},
		{"truncated header", good[:300], "tar entry 0"},
		{"garbage", bytes.Repeat([]byte{0xAB}, 2048), "tar entry 0"},
		{"hard link to missing target", treetest.Tar([]treetest.File{{Header: hdrLink("l", "missing")}}), `hard link target "missing" does not exist`},
		{"dotdot name", treetest.Tar([]treetest.File{treetest.Reg("../escape", 0o644, []byte("x"))}), `"../escape": entry name`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Create(context.Background(), bytes.NewReader(tc.input), io.Discard, Options{})
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestUnpackDetectsCorruptChunk(t *testing.T) {
	b := build(t, treetest.Tar([]treetest.File{treetest.Reg("f", 0o644, treetest.Random(9, 100000))}), Options{Compressor: compress.None})
	b.blob[500] ^= 0xff
	err := Unpack(context.Background(), b.rd, &memBlob{b.blob, compress.None}, io.Discard, UnpackOptions{})
	if !errors.Is(err, ErrDigestMismatch) || !strings.Contains(err.Error(), "/f: chunk 0") {
		t.Fatalf("corruption not reported: %v", err)
	}
	_, err = Check(context.Background(), b.rd, &memBlob{b.blob, compress.None})
	var ce *ChunkError
	if !errors.As(err, &ce) || ce.Path != "/f" || ce.Chunk != 0 {
		t.Fatalf("Check: %v", err)
	}
}

func TestUpstreamFixtureData(t *testing.T) {
	ctx := context.Background()
	dir := "../../testdata/upstream/nydus"
	boot, err := os.ReadFile(filepath.Join(dir, "bootstrap/rafs-v6-2.2.boot"))
	if err != nil {
		t.Fatal(err)
	}
	rd, err := rafs.Open(ctx, bytes.NewReader(boot), int64(len(boot)))
	if err != nil {
		t.Fatal(err)
	}
	src := &storage.FileSource{File: filepath.Join(dir, "blobs/be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef")}
	defer src.Close()
	var out bytes.Buffer
	if err := Unpack(ctx, rd, src, &out, UnpackOptions{}); err != nil {
		t.Fatal(err)
	}
	tr := tree(t, out.Bytes())
	want := map[string]int64{"/lib.rs": 16931, "/sync_io.rs": 13400}
	for p, size := range want {
		e := tr[p]
		if e == nil || e.Size != size {
			t.Fatalf("%s: %+v", p, e)
		}
		t.Logf("%s sha256 %s", p, e.SHA256)
	}
	if !strings.HasPrefix(tr["/lib.rs"].SHA256, libRSPrefix) || !strings.HasPrefix(tr["/sync_io.rs"].SHA256, syncIORSPrefix) {
		t.Fatalf("content digests changed: %s %s", tr["/lib.rs"].SHA256, tr["/sync_io.rs"].SHA256)
	}
	sum, err := Check(ctx, rd, src)
	if err != nil || sum.Files != 2 || sum.UniqueChunks != 2 {
		t.Fatalf("check: %+v %v", sum, err)
	}
}

func hdrLink(name, target string) (h tarHdr) {
	h.Typeflag = '1'
	h.Name = name
	h.Linkname = target
	return
}

// TestUpstreamTOCFixture reads upstream's layer blob with a ToC: the CI
// table, the chunk digests and the inline bootstrap come from the blob
// itself, and every file of the inline bootstrap is read and verified.
func TestUpstreamTOCFixture(t *testing.T) {
	ctx := context.Background()
	p := "../../testdata/upstream/nydus/toc/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"
	raw, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	br, err := blob.Open(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	toc, ok := br.TOC()
	if !ok || len(toc.Entries) != 4 {
		t.Fatalf("ToC: %+v", toc)
	}
	if cis := br.ChunkInfos(); len(cis) != 3 {
		t.Fatalf("CI table has %d entries, want 3", len(cis))
	}
	boot, err := br.Bootstrap()
	if err != nil || len(boot) != 20480 {
		t.Fatalf("inline bootstrap: %d bytes, %v", len(boot), err)
	}
	rd, err := rafs.Open(ctx, bytes.NewReader(boot), int64(len(boot)))
	if err != nil {
		t.Fatal(err)
	}
	if len(rd.Blobs) != 1 || !strings.HasPrefix(rd.Blobs[0].BlobID, "d788a0ea") {
		t.Fatalf("inline bootstrap blobs: %+v", rd.Blobs)
	}
	src := &storage.FileSource{File: p}
	defer src.Close()
	var out bytes.Buffer
	if err := Unpack(ctx, rd, src, &out, UnpackOptions{}); err != nil {
		t.Fatal(err)
	}
	tr := tree(t, out.Bytes())
	var files []string
	var total int64
	for p, e := range tr {
		if e.Type == '0' {
			files = append(files, p)
			total += e.Size
		}
	}
	if len(files) == 0 || total == 0 {
		t.Fatalf("no file data read: %v", tr)
	}
	t.Logf("%d files, %d bytes: %v", len(files), total, files)
	sum, err := Check(ctx, rd, src)
	if err != nil || sum.UniqueChunks != 3 {
		t.Fatalf("check: %+v %v", sum, err)
	}
}

// TestMergeSemantics: a whiteout hides only lower layers, even when the
// layer's own entry sorts before it; an explicit directory entry with
// epoch mtime (reproducible builders write those) overrides the lower
// directory, while an implicit parent does not.
func TestMergeSemantics(t *testing.T) {
	ctx := context.Background()
	lower := treetest.Tar([]treetest.File{
		treetest.Reg("-x", 0o644, []byte("lower")),
		owned(treetest.Dir("e/", 0o700), 5, 5),
		owned(treetest.Dir("i/", 0o700), 6, 6),
		treetest.Reg("i/f", 0o644, []byte("lower")),
	})
	epoch := treetest.Dir("e/", 0o755)
	epoch.Header.ModTime = time.Unix(0, 0)
	upper := treetest.Tar([]treetest.File{
		treetest.Reg("-x", 0o644, []byte("upper")),
		treetest.Reg(".wh.-x", 0o644, nil),
		epoch,
		treetest.Reg("i/g", 0o644, []byte("implicit parent")),
	})
	var srcs []MergeSource
	for _, l := range [][]byte{lower, upper} {
		b := build(t, l, Options{Whiteout: WhiteoutNone, InlineMeta: true})
		rd := b.rd
		for i := range rd.Blobs {
			if rd.Blobs[i].BlobID == rafs.PlaceholderBlobID {
				rd.Blobs[i].BlobID = b.res.BlobID
			}
		}
		srcs = append(srcs, MergeSource{Reader: rd, Path: b.res.BlobID})
		t.Cleanup(func() {})
		blobs[b.res.BlobID] = b.blob
	}
	m, err := Merge(ctx, srcs, MergeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rd, err := rafs.Open(ctx, bytes.NewReader(m.Bootstrap), int64(len(m.Bootstrap)))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Unpack(ctx, rd, multiBlob(blobs), &out, UnpackOptions{}); err != nil {
		t.Fatal(err)
	}
	got := tree(t, out.Bytes())
	want := treetest.ApplyOCI(tree(t, lower), tree(t, upper))
	want["/"] = got["/"]
	if d := treetest.Diff(want, got); d != "" {
		t.Fatalf("merged tree differs:\n%s", d)
	}
	if got["/-x"] == nil || got["/e"].Mode != 0o755 || got["/e"].UID != 0 || got["/i"].Mode != 0o700 || got["/i"].UID != 6 {
		t.Fatalf("-x %+v e %+v i %+v", got["/-x"], got["/e"], got["/i"])
	}
}

var blobs = map[string][]byte{}

// multiBlob serves several in-memory blobs by id.
type multiBlob map[string][]byte

func (m multiBlob) ReadRange(ctx context.Context, id string, off, n int64) ([]byte, error) {
	b, ok := m[id]
	if !ok || off+n > int64(len(b)) {
		return nil, fmt.Errorf("blob %s range %d+%d unavailable", id, off, n)
	}
	return append([]byte(nil), b[off:off+n]...), nil
}

func owned(f treetest.File, uid, gid int) treetest.File {
	f.Header.Uid, f.Header.Gid = uid, gid
	return f
}

// TestBatchLimit: with a batch limit, no batch of two or more files
// stores more than the limit, a single file larger than it stays whole,
// the blob is the same with 1 and 3 workers, and the image unpacks to
// its source; without the limit the same files form fewer, larger
// batches.
func TestBatchLimit(t *testing.T) {
	files := []treetest.File{treetest.Dir("d", 0o755)}
	for i := range 200 {
		var data []byte
		switch i % 3 {
		case 0: // incompressible
			data = treetest.Random(int64(i), 1000+i*37)
		case 1: // text
			data = []byte(strings.Repeat(fmt.Sprintf("line %d of file %d: the quick brown fox\n", i%7, i), 20+i))
		default: // half and half
			data = append(treetest.Random(int64(i), 2000), bytes.Repeat([]byte{byte(i)}, 3000)...)
		}
		files = append(files, treetest.Reg(fmt.Sprintf("d/f%03d", i), 0o644, data))
	}
	files = append(files, treetest.Reg("d/alone", 0o644, treetest.Random(7, 0x6000)))
	layer := treetest.Tar(files)
	const limit = 0x2000
	batches := func(b *built) map[uint64]int { // batch offset -> members
		table, err := b.rd.ChunkTable(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		m := map[uint64]int{}
		for _, c := range table {
			if c.Flags&rafs.ChunkBatch != 0 {
				m[c.CompressedOffset]++
			}
		}
		return m
	}
	var first *built
	for _, w := range []int{1, 3} {
		b := build(t, layer, Options{Whiteout: WhiteoutNone, BatchSize: 0x100000, BatchLimit: limit, Workers: w})
		if first == nil {
			first = b
		} else if !bytes.Equal(first.blob, b.blob) || !bytes.Equal(first.res.Bootstrap, b.res.Bootstrap) {
			t.Fatalf("output with %d workers differs", w)
		}
		if d := treetest.Diff(tree(t, layer), tree(t, unpack(t, b, compress.Zstd))); d != "" {
			t.Fatalf("unpacked tree differs:\n%s", d)
		}
	}
	meta, err := blob.ParseMetaFile(first.res.BlobMeta)
	if err != nil {
		t.Fatal(err)
	}
	members := batches(first)
	if len(meta.BatchContexts) != len(members) || len(members) < 4 {
		t.Fatalf("%d batch contexts, %d batches in the bootstrap", len(meta.BatchContexts), len(members))
	}
	offs := make([]uint64, 0, len(members))
	for off := range members {
		offs = append(offs, off)
	}
	slices.Sort(offs) // contexts are in blob order
	var multi, over int
	for i, bc := range meta.BatchContexts {
		n := members[offs[i]]
		if n > 1 {
			multi++
		}
		if bc.CompressedSize > limit {
			over++
			if n != 1 {
				t.Fatalf("a batch of %d files stores %d bytes, over the limit %#x", n, bc.CompressedSize, limit)
			}
		}
	}
	if over == 0 || multi < 3 {
		t.Fatalf("%d batches over the limit (want the files larger than it, alone), %d with several files", over, multi)
	}
	unlimited := build(t, layer, Options{Whiteout: WhiteoutNone, BatchSize: 0x100000})
	if n := len(batches(unlimited)); n != 1 {
		t.Fatalf("without a limit the files form %d batches, want 1", n)
	}
}
