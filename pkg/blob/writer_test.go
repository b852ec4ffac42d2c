package blob

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"strings"
	"testing"

	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/errdefs"
)

// genChunk returns uncompressed chunk data: random bytes (incompressible)
// or repetitive text, so that both stored forms occur.
func genChunk(r *rand.Rand, maxSize int) []byte {
	n := 1 + r.Intn(maxSize)
	b := make([]byte, n)
	if r.Intn(3) == 0 {
		r.Read(b)
	} else {
		for i := range b {
			b[i] = "nydus rafs v6 "[i%14] + byte(i/4096)
		}
	}
	return b
}

// built is a blob produced by buildBlob with the inputs that went in.
type built struct {
	blob   []byte
	res    Result
	chunks [][]byte
	cis    []ChunkInfo
	sums   []digester.Digest
	boot   []byte
}

// buildBlob writes n random chunks with opts and returns the blob.
func buildBlob(t testing.TB, seed int64, n int, opts WriterOptions, digests bool, boot []byte) built {
	t.Helper()
	r := rand.New(rand.NewSource(seed))
	var out bytes.Buffer
	w, err := NewWriter(onlyWriter{&out}, opts)
	if err != nil {
		t.Fatal(err)
	}
	var b built
	var uoff uint64
	for range n {
		data := genChunk(r, 64<<10)
		stored, compressed, err := compress.CompressIfSmaller(opts.Compressor, nil, data)
		if err != nil {
			t.Fatal(err)
		}
		off, err := w.WriteChunkData(stored)
		if err != nil {
			t.Fatal(err)
		}
		ci := ChunkInfo{CompressedOffset: off, CompressedSize: uint32(len(stored)),
			UncompressedOffset: uoff, UncompressedSize: uint32(len(data)), Compressed: compressed}
		if opts.ChunkInfoV2 && r.Intn(2) == 0 {
			ci.Flags = ChunkHasCRC32
			ci.Data = uint64(1 + r.Intn(1<<30))
		}
		uoff = ci.AlignedUncompressedEnd()
		b.chunks = append(b.chunks, data)
		b.cis = append(b.cis, ci)
		b.sums = append(b.sums, digester.Sum(digester.Blake3, data))
	}
	p := FinishParams{ChunkInfos: b.cis}
	if digests {
		p.ChunkDigests = b.sums
	}
	if opts.InlineMeta {
		b.boot = boot
		p.Bootstrap = boot
	}
	if b.res, err = w.Finish(p); err != nil {
		t.Fatal(err)
	}
	b.blob = out.Bytes()
	return b
}

func fakeBootstrap(n int) []byte {
	b := make([]byte, n)
	for i := 1024; i < n; i++ {
		b[i] = byte(i % 251)
	}
	return b
}

func TestWriterReaderRoundTrip(t *testing.T) {
	for _, v2 := range []bool{false, true} {
		for _, algo := range []compress.Algorithm{compress.None, compress.Lz4Block, compress.Zstd} {
			for _, mode := range []struct{ inline, toc bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
				name := fmt.Sprintf("v2=%v/%v/inline=%v/toc=%v", v2, algo, mode.inline, mode.toc)
				t.Run(name, func(t *testing.T) {
					opts := WriterOptions{Compressor: algo, ChunkInfoV2: v2, InlineMeta: mode.inline, TOC: mode.toc}
					b := buildBlob(t, int64(len(name)), 40, opts, mode.toc, fakeBootstrap(20480))
					checkRoundTrip(t, b, opts)
				})
			}
		}
	}
}

func checkRoundTrip(t *testing.T, b built, opts WriterOptions) {
	t.Helper()
	res := b.res
	if res.Size != int64(len(b.blob)) || res.Digest != sha256.Sum256(b.blob) {
		t.Fatalf("result size %d digest %s for a %d-byte blob", res.Size, res.Digest, len(b.blob))
	}
	wantF := FeatureCapTarTOC | FeatureAligned
	if opts.ChunkInfoV2 {
		wantF |= FeatureChunkInfoV2
	}
	if opts.InlineMeta {
		wantF |= FeatureInlinedFSMeta | FeatureHasTarHeader
	}
	if opts.TOC {
		wantF |= FeatureHasTOC | FeatureHasTarHeader | FeatureInlinedChunkDigest
	}
	if res.Features != wantF || res.MetaHeader.Features != wantF {
		t.Errorf("features %v, want %v", res.Features, wantF)
	}
	r := openBytes(t, b.blob)
	switch {
	case opts.TOC:
		if r.Layout() != LayoutTOC {
			t.Errorf("layout %v", r.Layout())
		}
		toc, _ := r.TOC()
		if toc.Digest() != res.TOCDigest || toc.Size() != res.TOCSize {
			t.Errorf("toc digest/size %s/%d, result %s/%d", toc.Digest(), toc.Size(), res.TOCDigest, res.TOCSize)
		}
		if _, err := ReadTOCAt(bytes.NewReader(b.blob), res.Size, res.TOCSize, res.TOCDigest); err != nil {
			t.Errorf("ReadTOCAt: %v", err)
		}
		if e, _ := toc.Entry(SectionChunkData); e.CompressedOffset != 0 || e.UncompressedSize != res.UncompressedSize {
			t.Errorf("image.blob entry %+v", e)
		}
		// blob_hash skips the digest array payload.
		d, _ := toc.Entry(SectionChunkDigest)
		if !bytes.Equal(res.BlobHash[:], sumWithout(b.blob, int(d.CompressedOffset), int(d.CompressedOffset+d.CompressedSize))) {
			t.Error("blob hash")
		}
	case opts.InlineMeta:
		if r.Layout() != LayoutTarHeaders {
			t.Errorf("layout %v", r.Layout())
		}
	default:
		if r.Layout() != LayoutPlain {
			t.Errorf("layout %v", r.Layout())
		}
		if res.BlobHash != res.Digest {
			t.Error("blob hash differs from digest without a digest array")
		}
	}
	if r.DataSize() != int64(res.CompressedDataSize) {
		t.Errorf("data size %d, result %d", r.DataSize(), res.CompressedDataSize)
	}
	h, _ := r.MetaHeader()
	if h != res.MetaHeader || h.CIOffset != res.CIOffset || h.CICompressor != res.CICompressor {
		t.Errorf("meta header %+v, result %+v", h, res.MetaHeader)
	}
	cis := r.ChunkInfos()
	if len(cis) != len(b.cis) {
		t.Fatalf("%d chunk infos, wrote %d", len(cis), len(b.cis))
	}
	buf := make([]byte, 0, 64<<10)
	for i, ci := range cis {
		if ci != b.cis[i] {
			t.Fatalf("chunk info %d = %+v, wrote %+v", i, ci, b.cis[i])
		}
		data, err := r.ReadChunk(ci, opts.Compressor, buf)
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		if !bytes.Equal(data, b.chunks[i]) {
			t.Fatalf("chunk %d data differs", i)
		}
	}
	digests, ok := r.ChunkDigests()
	if ok != opts.TOC {
		t.Errorf("chunk digests present=%v", ok)
	}
	for i := range digests {
		if digests[i] != b.sums[i] {
			t.Fatalf("digest %d differs", i)
		}
	}
	boot, err := r.Bootstrap()
	if opts.InlineMeta {
		if err != nil || !bytes.Equal(boot, b.boot) {
			t.Errorf("bootstrap: %v", err)
		}
		if opts.TOC {
			e, _ := r.toc.Entry(SectionBootstrap)
			if c, _ := e.Compressor(); c != compress.Zstd || e.CompressedSize >= e.UncompressedSize {
				t.Errorf("bootstrap entry %+v is not zstd-compressed", e)
			}
		}
	} else if !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("bootstrap: %v", err)
	}
	mf, err := r.MetaFile()
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseMetaFile(mf)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.ChunkInfos) != len(cis) || m.ChunkInfos[len(cis)-1] != cis[len(cis)-1] {
		t.Error("meta file chunk infos")
	}
	if secs, err := ReadTarSections(bytes.NewReader(b.blob), res.Size); (err == nil) != (opts.TOC || opts.InlineMeta) {
		t.Errorf("ReadTarSections: %v %v", secs, err)
	}
}

// TestWriterCompressesCI checks that a compressible CI array is stored
// compressed with the blob compressor.
func TestWriterCompressesCI(t *testing.T) {
	b := buildBlob(t, 1, 500, WriterOptions{Compressor: compress.Zstd, TOC: true}, true, nil)
	if b.res.CICompressor != compress.Zstd || b.res.CICompressedSize >= b.res.CIUncompressedSize {
		t.Errorf("CI stored with %v, %d of %d bytes", b.res.CICompressor, b.res.CICompressedSize, b.res.CIUncompressedSize)
	}
	r := openBytes(t, b.blob)
	if len(r.ChunkInfos()) != 500 {
		t.Fatal("chunk infos")
	}
	toc, _ := r.TOC()
	if e, _ := toc.Entry(SectionMeta); e.Flags != TOCCompressionZstd || e.UncompressedSize != 500*16 {
		t.Errorf("blob.meta entry %+v", e)
	}
}

func TestWriterBatch(t *testing.T) {
	r := rand.New(rand.NewSource(7))
	var out bytes.Buffer
	w, err := NewWriter(onlyWriter{&out}, WriterOptions{Compressor: compress.Zstd, ChunkInfoV2: true, TOC: true})
	if err != nil {
		t.Fatal(err)
	}
	var chunks [][]byte
	var cis []ChunkInfo
	var sums []digester.Digest
	var batches []BatchContext
	var uoff uint64
	// Two batches of small chunks, then one normal chunk.
	for bi := range 2 {
		var buf []byte
		var members []ChunkInfo
		for range 5 {
			data := genChunk(r, 3000)
			members = append(members, ChunkInfo{UncompressedOffset: uoff, UncompressedSize: uint32(len(data)),
				Compressed: true, Flags: ChunkBatch, Data: uint64(bi)<<32 | uint64(len(buf))})
			uoff = roundUp4K(uoff + uint64(len(data)))
			buf = append(buf, data...)
			chunks = append(chunks, data)
			sums = append(sums, digester.Sum(digester.Blake3, data))
		}
		stored, _, err := compress.CompressIfSmaller(compress.Zstd, nil, buf)
		if err != nil {
			t.Fatal(err)
		}
		off, err := w.WriteChunkData(stored)
		if err != nil {
			t.Fatal(err)
		}
		for i := range members {
			members[i].CompressedOffset = off
		}
		cis = append(cis, members...)
		batches = append(batches, BatchContext{CompressedSize: uint32(len(stored)), UncompressedSize: uint32(len(buf))})
	}
	data := genChunk(r, 100000)
	stored, compressed, _ := compress.CompressIfSmaller(compress.Zstd, nil, data)
	off, _ := w.WriteChunkData(stored)
	cis = append(cis, ChunkInfo{CompressedOffset: off, CompressedSize: uint32(len(stored)), UncompressedOffset: uoff,
		UncompressedSize: uint32(len(data)), Compressed: compressed})
	chunks = append(chunks, data)
	sums = append(sums, digester.Sum(digester.Blake3, data))

	res, err := w.Finish(FinishParams{ChunkInfos: cis, ChunkDigests: sums, BatchContexts: batches})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Features.Has(FeatureBatch|FeatureChunkInfoV2) || res.MetaHeader.ContextCount != 2 ||
		res.MetaHeader.ContextOffset != uint64(len(cis))*ChunkInfoV2Size || res.MetaHeader.ContextSize != 80 {
		t.Fatalf("result %+v", res.MetaHeader)
	}
	rd := openBytes(t, out.Bytes())
	if m := rd.Meta(); len(m.BatchContexts) != 2 || m.BatchContexts[1] != batches[1] {
		t.Fatalf("batch contexts %+v", m.BatchContexts)
	}
	for i, ci := range rd.ChunkInfos() {
		if ci != cis[i] {
			t.Fatalf("chunk info %d = %+v, wrote %+v", i, ci, cis[i])
		}
		got, err := rd.ReadChunk(ci, compress.Zstd, nil)
		if err != nil || !bytes.Equal(got, chunks[i]) {
			t.Fatalf("chunk %d: %v", i, err)
		}
	}
	// Batch chunks need the batch feature and a valid context.
	if _, err := w.Finish(FinishParams{}); err == nil {
		t.Error("second Finish accepted")
	}
	w2, _ := NewWriter(io.Discard, WriterOptions{Compressor: compress.Zstd, ChunkInfoV2: true})
	w2.WriteChunkData(make([]byte, 100))
	_, err = w2.Finish(FinishParams{ChunkInfos: []ChunkInfo{{CompressedOffset: 0, UncompressedSize: 10, Compressed: true, Flags: ChunkBatch}}})
	if err == nil || !strings.Contains(err.Error(), "batch chunk in a blob without the batch feature") {
		t.Errorf("batch chunk without contexts: %v", err)
	}
}

func TestWriterBootstrapFunc(t *testing.T) {
	var out bytes.Buffer
	w, _ := NewWriter(onlyWriter{&out}, WriterOptions{Compressor: compress.Zstd, InlineMeta: true, TOC: true})
	data := bytes.Repeat([]byte("x"), 10000)
	stored, _ := compress.Compress(compress.Zstd, nil, data)
	w.WriteChunkData(stored)
	var pre Result
	boot := fakeBootstrap(8192)
	res, err := w.Finish(FinishParams{
		ChunkInfos:   []ChunkInfo{{CompressedSize: uint32(len(stored)), UncompressedSize: 10000, Compressed: true}},
		ChunkDigests: []digester.Digest{digester.Sum(digester.Blake3, data)},
		BootstrapFunc: func(r Result) ([]byte, error) {
			pre = r
			return boot, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	toc := res.TOC
	e, _ := toc.Entry(SectionBootstrap)
	if pre.Size != int64(e.CompressedOffset) || pre.TOCSize != 0 || !pre.TOCDigest.IsZero() || pre.Features != res.Features ||
		pre.CIOffset != res.CIOffset || pre.UncompressedSize != 12288 {
		t.Errorf("pre-bootstrap result %+v, bootstrap entry %+v", pre, e)
	}
	got, err := openBytes(t, out.Bytes()).Bootstrap()
	if err != nil || !bytes.Equal(got, boot) {
		t.Errorf("bootstrap: %v", err)
	}
	// An error from the callback is returned.
	w, _ = NewWriter(io.Discard, WriterOptions{Compressor: compress.Zstd, InlineMeta: true})
	_, err = w.Finish(FinishParams{BootstrapFunc: func(Result) ([]byte, error) { return nil, errors.New("boom") }})
	if err == nil || !strings.Contains(err.Error(), "build inline bootstrap: boom") {
		t.Errorf("callback error: %v", err)
	}
}

// TestWriterNoChunks mirrors upstream for layers without file data.
func TestWriterNoChunks(t *testing.T) {
	var out bytes.Buffer
	w, _ := NewWriter(onlyWriter{&out}, WriterOptions{Compressor: compress.Zstd, InlineMeta: true, TOC: true})
	boot := fakeBootstrap(4096)
	res, err := w.Finish(FinishParams{Bootstrap: boot})
	if err != nil {
		t.Fatal(err)
	}
	if res.Features != FeatureCapTarTOC|FeatureInlinedFSMeta|FeatureHasTarHeader|FeatureHasTOC || res.ChunkCount != 0 {
		t.Errorf("result %+v", res)
	}
	if len(res.TOC.Entries) != 1 || res.TOC.Entries[0].Name != SectionBootstrap {
		t.Errorf("toc %+v", res.TOC.Entries)
	}
	r := openBytes(t, out.Bytes())
	if r.ChunkInfos() != nil || r.DataSize() != 0 {
		t.Error("chunk infos in an empty blob")
	}
	if _, ok := r.MetaHeader(); ok {
		t.Error("meta header in an empty blob")
	}
	if _, err := r.MetaFile(); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("MetaFile: %v", err)
	}
	if got, err := r.Bootstrap(); err != nil || !bytes.Equal(got, boot) {
		t.Errorf("bootstrap: %v", err)
	}

	out.Reset()
	w, _ = NewWriter(onlyWriter{&out}, WriterOptions{Compressor: compress.Zstd, TOC: true})
	if res, err := w.Finish(FinishParams{}); err != nil || res.Size != 0 || out.Len() != 0 {
		t.Errorf("empty blob without inline meta: %d bytes, %v", out.Len(), err)
	}
}

// TestWriterFIFO streams a blob through a pipe, as to the snapshotter's
// FIFO.
func TestWriterFIFO(t *testing.T) {
	pr, pw := io.Pipe()
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(pr)
		got <- b
	}()
	w, _ := NewWriter(pw, WriterOptions{Compressor: compress.Zstd, InlineMeta: true, TOC: true})
	data := bytes.Repeat([]byte("fifo"), 5000)
	stored, _ := compress.Compress(compress.Zstd, nil, data)
	w.WriteChunkData(stored)
	res, err := w.Finish(FinishParams{
		ChunkInfos:   []ChunkInfo{{CompressedSize: uint32(len(stored)), UncompressedSize: uint32(len(data)), Compressed: true}},
		ChunkDigests: []digester.Digest{digester.Sum(digester.Blake3, data)},
		Bootstrap:    fakeBootstrap(4096),
	})
	pw.Close()
	if err != nil {
		t.Fatal(err)
	}
	b := <-got
	if res.Digest != sha256.Sum256(b) {
		t.Fatal("digest of streamed blob")
	}
	openBytes(t, b)
}

type failWriter struct{ after int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.after < len(p) {
		n := max(f.after, 0)
		f.after = 0
		return n, errors.New("disk full")
	}
	f.after -= len(p)
	return len(p), nil
}

func TestWriterErrors(t *testing.T) {
	newW := func(o WriterOptions) *Writer {
		w, err := NewWriter(io.Discard, o)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	zstd := WriterOptions{Compressor: compress.Zstd}
	ci := ChunkInfo{CompressedSize: 10, UncompressedSize: 100, Compressed: true}
	cases := []struct {
		name string
		opts WriterOptions
		data int
		p    FinishParams
		want string
	}{
		{"digests without toc", zstd, 10, FinishParams{ChunkInfos: []ChunkInfo{ci}, ChunkDigests: make([]digester.Digest, 1)}, "chunk digests are stored only with the ToC option"},
		{"digest count", WriterOptions{Compressor: compress.Zstd, TOC: true}, 10, FinishParams{ChunkInfos: []ChunkInfo{ci}, ChunkDigests: make([]digester.Digest, 2)}, "2 chunk digests for 1 chunks"},
		{"bootstrap without inline", zstd, 10, FinishParams{ChunkInfos: []ChunkInfo{ci}, Bootstrap: []byte{1}}, "a bootstrap was given without the InlineMeta option"},
		{"inline without bootstrap", WriterOptions{Compressor: compress.Zstd, InlineMeta: true}, 0, FinishParams{}, "inline meta needs a bootstrap"},
		{"both bootstraps", WriterOptions{Compressor: compress.Zstd, InlineMeta: true}, 0, FinishParams{Bootstrap: []byte{1}, BootstrapFunc: func(Result) ([]byte, error) { return nil, nil }}, "both Bootstrap and BootstrapFunc"},
		{"empty bootstrap", WriterOptions{Compressor: compress.Zstd, InlineMeta: true}, 0, FinishParams{Bootstrap: []byte{}}, "inline bootstrap size 0"},
		{"data without chunks", zstd, 10, FinishParams{}, "10 bytes of chunk data but no chunk infos"},
		{"unaligned", zstd, 10, FinishParams{ChunkInfos: []ChunkInfo{{CompressedSize: 10, UncompressedOffset: 100, UncompressedSize: 100, Compressed: true}}}, "chunk info 0: uncompressed offset 0x64 not 4 KiB aligned"},
		{"beyond data", zstd, 5, FinishParams{ChunkInfos: []ChunkInfo{ci}}, "chunk info 0: compressed end 0xa beyond chunk data size 0x5"},
		{"v1 flags", zstd, 10, FinishParams{ChunkInfos: []ChunkInfo{{CompressedSize: 10, UncompressedSize: 100, Compressed: true, Flags: ChunkHasCRC32, Data: 1}}}, "v1 entry with flags 0x10"},
		{"zran", WriterOptions{Compressor: compress.Zstd, ChunkInfoV2: true}, 10, FinishParams{ChunkInfos: []ChunkInfo{{CompressedSize: 10, UncompressedSize: 100, Compressed: true, Flags: ChunkZran}}}, "zran chunks outside a zran blob: unsupported"},
		{"batch v1", zstd, 10, FinishParams{ChunkInfos: []ChunkInfo{ci}, BatchContexts: []BatchContext{{}}}, "batch and zran contexts need chunk-info v2"},
	}
	for _, c := range cases {
		w := newW(c.opts)
		if c.data > 0 {
			if _, err := w.WriteChunkData(make([]byte, c.data)); err != nil {
				t.Fatal(err)
			}
		}
		_, err := w.Finish(c.p)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "finish blob: ") {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
		if _, err := w.WriteChunkData([]byte{1}); err == nil || !strings.Contains(err.Error(), "already finished") {
			t.Errorf("%s: write after finish: %v", c.name, err)
		}
	}
	if _, err := NewWriter(io.Discard, WriterOptions{Compressor: 9}); err == nil {
		t.Error("unknown compressor accepted")
	}
	if _, err := NewWriter(io.Discard, WriterOptions{Compressor: compress.GZip, TOC: true}); err == nil || !strings.Contains(err.Error(), "cannot be recorded in a ToC entry") {
		t.Errorf("gzip with ToC: %v", err)
	}

	// A failing io.Writer poisons the Writer.
	w, _ := NewWriter(&failWriter{after: 15}, zstd)
	if _, err := w.WriteChunkData(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteChunkData(make([]byte, 10)); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("write error: %v", err)
	}
	if w.Offset() != 15 {
		t.Errorf("offset after short write %d", w.Offset())
	}
	if _, err := w.Finish(FinishParams{ChunkInfos: []ChunkInfo{ci}}); err == nil || !strings.Contains(err.Error(), "write blob at offset 15: disk full") {
		t.Errorf("finish after write error: %v", err)
	}
}

func TestInlineMetaBlobID(t *testing.T) {
	if InlineMetaBlobID != strings.Repeat("x", 64) {
		t.Error("placeholder blob id")
	}
}
