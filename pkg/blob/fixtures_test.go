package blob

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"testing"

	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/errdefs"
)

// Upstream fixtures (dragonflyoss/nydus tests/texture, see
// testdata/upstream/README.md).
const (
	fxDir  = "../../testdata/upstream/nydus/"
	fxBE7D = fxDir + "blobs/be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
	fxTOC  = fxDir + "toc/2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"
	fxZran = fxDir + "zran/233c72f2b6b698c07021c4da367cfe2dff4f049efbaa885ca0ff760ea297865a.blob.meta"

	be7dID        = "be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef"
	be7dTOCSum    = "cfc89ed0739aef4eb1bf0904f0dfdb1c857134eca7319465baae95a99b84acde"
	tocBlobID     = "2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca"
	tocBlobTOCSum = "4fdfbb36ef74a3c63a28e2abafa54044c7594155beb6ddad9f36825cfe58286c"
)

func readFixture(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	return b
}

func openBytes(t testing.TB, b []byte) *Reader {
	t.Helper()
	r, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return r
}

func mustDigest(t testing.TB, s string) digester.Digest {
	t.Helper()
	d, err := digester.ParseDigest(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

type tocRow struct {
	flags             uint32
	name              string
	off, csize, usize uint64
}

func checkTOC(t *testing.T, toc TOC, want []tocRow) {
	t.Helper()
	if len(toc.Entries) != len(want) {
		t.Fatalf("toc has %d entries, want %d: %+v", len(toc.Entries), len(want), toc.Entries)
	}
	for i, w := range want {
		e := toc.Entries[i]
		got := tocRow{e.Flags, e.Name, e.CompressedOffset, e.CompressedSize, e.UncompressedSize}
		if got != w {
			t.Errorf("toc entry %d = %+v, want %+v", i, got, w)
		}
	}
}

// TestFixtureBE7D checks the worked example of nydus-format.md §2.12.
func TestFixtureBE7D(t *testing.T) {
	b := readFixture(t, fxBE7D)
	r := openBytes(t, b)
	if r.Layout() != LayoutTOC {
		t.Fatalf("layout %v", r.Layout())
	}
	toc, ok := r.TOC()
	if !ok {
		t.Fatal("no ToC")
	}
	// image.blob shows the pre-747edc95 offset quirk: 7802, not 0.
	checkTOC(t, toc, []tocRow{
		{TOCCompressionNone, "image.blob", 7802, 7802, 36864},
		{TOCCompressionNone, "blob.meta", 8314, 32, 32},
		{TOCCompressionNone, "blob.meta.header", 8346, 4096, 4096},
		{TOCCompressionNone, "blob.digest", 12954, 64, 64},
	})
	if toc.Size() != 1024 {
		t.Errorf("toc size %d, want 1024 (blob table blob_toc_size)", toc.Size())
	}
	if got := toc.Digest().String(); got != be7dTOCSum {
		t.Errorf("toc digest %s, want %s", got, be7dTOCSum)
	}
	if _, err := ReadTOCAt(bytes.NewReader(b), int64(len(b)), 1024, mustDigest(t, be7dTOCSum)); err != nil {
		t.Errorf("ReadTOCAt with the right digest: %v", err)
	}
	// The image.blob digest covers the chunk data and its tar header.
	if e, _ := toc.Entry(SectionChunkData); e.UncompressedDigest != sha256.Sum256(b[:7802+512]) {
		t.Error("image.blob digest does not cover data + tar header")
	}

	h, ok := r.MetaHeader()
	if !ok {
		t.Fatal("no meta header")
	}
	wantH := MetaHeader{Features: 0x70000021, CICompressor: compress.None, CIEntries: 2, CIOffset: 8314, CICompressedSize: 32, CIUncompressedSize: 32}
	if h != wantH {
		t.Errorf("meta header %+v, want %+v", h, wantH)
	}
	if h.Features != FeatureAligned|FeatureInlinedChunkDigest|FeatureHasTarHeader|FeatureHasTOC|FeatureCapTarTOC {
		t.Errorf("features %v", h.Features)
	}
	wantCI := []ChunkInfo{
		{CompressedOffset: 0, CompressedSize: 4828, UncompressedOffset: 0, UncompressedSize: 16931, Compressed: true},
		{CompressedOffset: 4828, CompressedSize: 2974, UncompressedOffset: 20480, UncompressedSize: 13400, Compressed: true},
	}
	cis := r.ChunkInfos()
	if len(cis) != 2 || cis[0] != wantCI[0] || cis[1] != wantCI[1] {
		t.Errorf("chunk infos %+v, want %+v", cis, wantCI)
	}
	digests, ok := r.ChunkDigests()
	if !ok || len(digests) != 2 {
		t.Fatalf("chunk digests %v %v", digests, ok)
	}
	for i, ci := range cis {
		data, err := r.ReadChunk(ci, compress.Zstd, nil)
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if len(data) != int(ci.UncompressedSize) {
			t.Errorf("chunk %d: %d bytes", i, len(data))
		}
		if got := digester.Sum(digester.Blake3, data); got != digests[i] {
			t.Errorf("chunk %d: blake3 %s, blob.digest has %s", i, got, digests[i])
		}
	}
	if _, err := r.Bootstrap(); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Bootstrap on a blob without image.boot: %v", err)
	}
	if r.DataSize() != 7802 {
		t.Errorf("data size %d", r.DataSize())
	}
	// The blob id (file name) is upstream's blob_hash, which skips the
	// digest array payload.
	if got := hex.EncodeToString(sumWithout(b, 12954, 13018)); got != be7dID {
		t.Errorf("blob hash %s, want the file name", got)
	}
}

func sumWithout(b []byte, from, to int) []byte {
	h := sha256.New()
	h.Write(b[:from])
	h.Write(b[to:])
	return h.Sum(nil)
}

// TestFixtureBE7DRebuild rebuilds the be7d blob with the Writer from its
// chunks and metadata and expects the same bytes, except for the ToC
// "image.blob" offset that current upstream writes as 0.
func TestFixtureBE7DRebuild(t *testing.T) {
	b := readFixture(t, fxBE7D)
	r := openBytes(t, b)
	digests, _ := r.ChunkDigests()
	var out bytes.Buffer
	w, err := NewWriter(onlyWriter{&out}, WriterOptions{Compressor: compress.Zstd, TOC: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, ci := range r.ChunkInfos() {
		off, err := w.WriteChunkData(b[ci.CompressedOffset:ci.CompressedEnd()])
		if err != nil || off != ci.CompressedOffset {
			t.Fatalf("WriteChunkData: off %d err %v", off, err)
		}
	}
	res, err := w.Finish(FinishParams{ChunkInfos: r.ChunkInfos(), ChunkDigests: digests})
	if err != nil {
		t.Fatal(err)
	}
	got := out.Bytes()
	if len(got) != len(b) || res.Size != int64(len(b)) {
		t.Fatalf("rebuilt %d bytes (result %d), fixture %d", len(got), res.Size, len(b))
	}
	const tocOff = 13530
	if !bytes.Equal(got[:tocOff], b[:tocOff]) {
		t.Fatalf("rebuilt blob differs before the ToC at offset %d", firstDiff(got, b))
	}
	patched := bytes.Clone(b)
	binary.LittleEndian.PutUint64(patched[tocOff+56:], 0) // image.blob compressed_offset
	for i := range 4 {
		// Bytes 124..127 of each entry were struct padding, left
		// uninitialized before upstream commit 85bef056 (2023-02); they
		// are zero now.
		copy(patched[tocOff+i*TOCEntrySize+124:], []byte{0, 0, 0, 0})
	}
	if !bytes.Equal(got, patched) {
		t.Fatalf("rebuilt ToC differs at offset %d", firstDiff(got, patched))
	}
	// The fixture's blob hash (its name) covers the old ToC bytes; ours
	// follows the same rule over the bytes we wrote.
	if !bytes.Equal(res.BlobHash[:], sumWithout(got, 12954, 13018)) {
		t.Errorf("blob hash %s does not skip the digest array", res.BlobHash)
	}
	if res.Digest != sha256.Sum256(got) || res.BlobID() != res.Digest.String() {
		t.Error("digest is not the sha256 of the blob")
	}
	if res.Features != 0x70000021 || res.TOCSize != 1024 || res.CIOffset != 8314 || res.CICompressedSize != 32 ||
		res.CIUncompressedSize != 32 || res.CICompressor != compress.None || res.UncompressedSize != 36864 ||
		res.CompressedDataSize != 7802 || res.ChunkCount != 2 {
		t.Errorf("result %+v", res)
	}
	if res.TOCDigest != sha256.Sum256(got[tocOff:]) {
		t.Error("toc digest")
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestFixtureTOCBlob checks the second example of nydus-format.md §2.12
// and the ToC of §2.9.
func TestFixtureTOCBlob(t *testing.T) {
	b := readFixture(t, fxTOC)
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != tocBlobID {
		t.Fatalf("fixture sha256 %x is not its name", sum)
	}
	r := openBytes(t, b)
	toc, _ := r.TOC()
	checkTOC(t, toc, []tocRow{
		{TOCCompressionNone, "image.blob", 2829, 2829, 12288},
		{TOCCompressionNone, "blob.meta", 3341, 48, 48},
		{TOCCompressionNone, "blob.meta.header", 3389, 4096, 4096},
		{TOCCompressionZstd, "image.boot", 7997, 501, 20480},
	})
	if got := toc.Digest().String(); got != tocBlobTOCSum {
		t.Errorf("toc digest %s, want %s", got, tocBlobTOCSum)
	}
	// Upstream's own test: TocLocation::with_digest(9010, 1024, digest).
	if _, err := ReadTOCAt(bytes.NewReader(b), int64(len(b)), 1024, mustDigest(t, tocBlobTOCSum)); err != nil {
		t.Errorf("ReadTOCAt: %v", err)
	}
	h, _ := r.MetaHeader()
	if h.Features != FeatureAligned || h.CIEntries != 3 || h.CIOffset != 3341 {
		t.Errorf("meta header %+v", h)
	}
	wantCI := []ChunkInfo{
		{CompressedOffset: 0, CompressedSize: 1211, UncompressedOffset: 0, UncompressedSize: 2816, Compressed: true},
		{CompressedOffset: 1211, CompressedSize: 407, UncompressedOffset: 4096, UncompressedSize: 678, Compressed: true},
		{CompressedOffset: 1618, CompressedSize: 1211, UncompressedOffset: 8192, UncompressedSize: 3115, Compressed: true},
	}
	for i, ci := range r.ChunkInfos() {
		if ci != wantCI[i] {
			t.Errorf("chunk info %d = %+v, want %+v", i, ci, wantCI[i])
		}
		if _, err := r.ReadChunk(ci, compress.Zstd, nil); err != nil {
			t.Errorf("chunk %d: %v", i, err)
		}
	}
	if _, ok := r.ChunkDigests(); ok {
		t.Error("unexpected chunk digests")
	}
	boot, err := r.Bootstrap()
	if err != nil {
		t.Fatal(err)
	}
	if len(boot) != 20480 {
		t.Fatalf("bootstrap is %d bytes, want 20480", len(boot))
	}
	if !bytes.Equal(boot[:1024], make([]byte, 1024)) {
		t.Error("bootstrap does not start with 1024 zero bytes")
	}
	if m := binary.LittleEndian.Uint32(boot[1024:]); m != 0xE0F5E1E2 {
		t.Errorf("EROFS magic %#x", m)
	}
}

func TestFixtureTarSections(t *testing.T) {
	cases := []struct {
		path string
		want []Section
	}{
		{fxBE7D, []Section{{"image.blob", 0, 7802}, {"blob.meta", 8314, 4128}, {"blob.digest", 12954, 64}, {"rafs.blob.toc", 13530, 512}}},
		{fxTOC, []Section{{"image.blob", 0, 2829}, {"blob.meta", 3341, 4144}, {"image.boot", 7997, 501}, {"rafs.blob.toc", 9010, 512}}},
	}
	for _, c := range cases {
		b := readFixture(t, c.path)
		secs, err := ReadTarSections(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		if len(secs) != len(c.want) {
			t.Fatalf("%s: sections %+v", c.path, secs)
		}
		for i, s := range secs {
			if s != c.want[i] {
				t.Errorf("section %d = %+v, want %+v", i, s, c.want[i])
			}
			// Every header upstream wrote is byte-identical to ours.
			hdr := TarHeader(s.Name, s.Size)
			if !bytes.Equal(hdr[:], b[s.End():s.End()+TarHeaderSize]) {
				t.Errorf("%s: tar header %q differs from TarHeader", c.path, s.Name)
			}
		}
	}
}

func TestFixtureZranMetaFile(t *testing.T) {
	b := readFixture(t, fxZran)
	m, err := ParseMetaFile(b)
	if err != nil {
		t.Fatal(err)
	}
	want := MetaHeader{Features: 0xF, CICompressor: compress.None, CIEntries: 163, CIOffset: 0,
		CICompressedSize: 660112, CIUncompressedSize: 660112, ContextOffset: 3912, ContextSize: 656200, ContextCount: 21}
	if m.Header != want {
		t.Errorf("header %+v, want %+v", m.Header, want)
	}
	if len(m.ChunkInfos) != 163 || len(m.ZranContexts) != 21 || m.BatchContexts != nil {
		t.Fatalf("%d chunks, %d zran contexts", len(m.ChunkInfos), len(m.ZranContexts))
	}
	ci0 := ChunkInfo{CompressedOffset: 184, CompressedSize: 649, UncompressedOffset: 0, UncompressedSize: 1404, Compressed: true, Flags: ChunkZran, Data: 0x400}
	if m.ChunkInfos[0] != ci0 {
		t.Errorf("chunk 0 = %+v, want %+v", m.ChunkInfos[0], ci0)
	}
	for i, ci := range m.ChunkInfos {
		if !ci.IsZran() || !ci.Compressed {
			t.Errorf("chunk %d is not a compressed zran chunk", i)
		}
	}
	z0 := ZranContext{InOffset: 10, OutOffset: 0, DictOffset: 0, InLen: 200380, OutLen: 1052790}
	z1 := ZranContext{InOffset: 187761, OutOffset: 987149, DictOffset: 0, InLen: 592813, OutLen: 1801715, DictSize: 32768, CtxByte: 103, CtxBits: 5}
	if m.ZranContexts[0] != z0 || m.ZranContexts[1] != z1 {
		t.Errorf("contexts %+v %+v", m.ZranContexts[0], m.ZranContexts[1])
	}
	if len(m.ZranDict(1)) != 32768 || len(m.ZranDicts) != 656200-21*40 {
		t.Errorf("dictionary sizes %d %d", len(m.ZranDict(1)), len(m.ZranDicts))
	}
	if m.Header.Features.String() != "aligned chunk-v2 fs-meta zran" {
		t.Errorf("features string %q", m.Header.Features)
	}
	again, err := MarshalMetaFile(m.Header, m.CI)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, b) {
		t.Errorf("MarshalMetaFile does not reproduce the fixture (first difference at %d)", firstDiff(again, b))
	}
	if MetaFileSize(m.Header) != uint64(len(b)) {
		t.Error("MetaFileSize")
	}
}

// TestFixtureMetaFileFromBlob builds the cache file of a real blob and
// parses it back.
func TestFixtureMetaFileFromBlob(t *testing.T) {
	b := readFixture(t, fxBE7D)
	r := openBytes(t, b)
	mf, err := r.MetaFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(mf) != 4096+4096 {
		t.Fatalf("meta file is %d bytes", len(mf))
	}
	if !bytes.Equal(mf[:32], b[8314:8346]) || !bytes.Equal(mf[4096:], b[8346:8346+4096]) {
		t.Error("meta file content")
	}
	m, err := ParseMetaFile(mf)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.ChunkInfos) != 2 || m.ChunkInfos[1].UncompressedOffset != 20480 {
		t.Errorf("parsed %+v", m.ChunkInfos)
	}
}

// onlyWriter hides every method but Write, like a FIFO.
type onlyWriter struct{ w *bytes.Buffer }

func (o onlyWriter) Write(p []byte) (int, error) { return o.w.Write(p) }
