package blob

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/errdefs"
)

// Layout names how a Reader found the sections of a blob.
type Layout int

// Blob layouts recognised by Open.
const (
	// LayoutTOC: the blob ends with a ToC.
	LayoutTOC Layout = iota + 1
	// LayoutTarHeaders: sections are found by walking tar headers
	// backwards (blobs with inline meta but without ToC).
	LayoutTarHeaders
	// LayoutPlain: no tar headers; the blob ends with the MetaHeader.
	LayoutPlain
)

// String returns "toc", "tar-headers" or "plain".
func (l Layout) String() string {
	switch l {
	case LayoutTOC:
		return "toc"
	case LayoutTarHeaders:
		return "tar-headers"
	case LayoutPlain:
		return "plain"
	}
	return fmt.Sprintf("Layout(%d)", int(l))
}

// location is where a ToC-described or tar section lives.
type location struct {
	off, csize, usize int64
	algo              compress.Algorithm
	sum               digester.Digest // sha256 of the uncompressed data; zero if unknown
	ok                bool
}

// Reader gives access to the sections of an existing blob through an
// io.ReaderAt. Open parses and validates the metadata; chunk data and the
// inline bootstrap are read on demand. A Reader is safe for concurrent use
// if the underlying io.ReaderAt is.
type Reader struct {
	r        io.ReaderAt
	size     int64
	layout   Layout
	toc      TOC
	sections []Section
	dataSize int64
	dataSpan int64 // uncompressed size from the "image.blob" ToC entry; 0 if unknown
	meta     *Meta
	digests  []digester.Digest
	boot     location
}

// Open locates the sections of a blob of the given size: through its ToC
// if it has one, else by walking its trailing tar headers, else by taking
// the last 4096 bytes as the MetaHeader of a plain blob. It reads and
// validates the CI array (decompressing it), the MetaHeader and the chunk
// digest array, and checks them against ToC digests where present.
func Open(r io.ReaderAt, size int64) (*Reader, error) {
	br := &Reader{r: r, size: size}
	if err := br.open(); err != nil {
		return nil, fmt.Errorf("open blob: %w", err)
	}
	return br, nil
}

func (br *Reader) open() error {
	if br.size < TarHeaderSize {
		return fmt.Errorf("blob size %d is too small: %w", br.size, ErrCorrupt)
	}
	var last [TarHeaderSize]byte
	if _, err := br.r.ReadAt(last[:], br.size-TarHeaderSize); err != nil {
		return fmt.Errorf("read last tar header at offset %d: %w", br.size-TarHeaderSize, err)
	}
	var metaLoc, hdrLoc, digestLoc location
	e, tarErr := ParseTarHeader(last[:])
	switch {
	case tarErr == nil && e.Name == SectionTOC:
		br.layout = LayoutTOC
		toc, err := ReadTOC(br.r, br.size)
		if err != nil {
			return err
		}
		br.toc = toc
		if metaLoc, hdrLoc, digestLoc, err = br.fromTOC(); err != nil {
			return err
		}
	case tarErr == nil:
		br.layout = LayoutTarHeaders
		secs, err := ReadTarSections(br.r, br.size)
		if err != nil {
			return err
		}
		br.sections = secs
		if metaLoc, hdrLoc, digestLoc, err = br.fromTarSections(); err != nil {
			return err
		}
	case string(last[tarMagic:tarMagic+5]) == "ustar":
		return fmt.Errorf("last tar header at offset %d: %w", br.size-TarHeaderSize, tarErr)
	default:
		br.layout = LayoutPlain
		if br.size < MetaHeaderSize {
			return fmt.Errorf("no ToC, tar header or blob meta header found (%v): %w", tarErr, ErrCorrupt)
		}
		hdrLoc = location{off: br.size - MetaHeaderSize, csize: MetaHeaderSize, usize: MetaHeaderSize, ok: true}
	}
	if hdrLoc.ok {
		if err := br.loadMeta(metaLoc, hdrLoc); err != nil {
			return err
		}
	} else if metaLoc.ok {
		return fmt.Errorf("section %q without a meta header: %w", SectionMeta, ErrCorrupt)
	}
	if digestLoc.ok {
		if err := br.loadDigests(digestLoc); err != nil {
			return err
		}
	}
	return nil
}

// checkRange reports whether [off, off+n) lies inside [0, limit).
func checkRange(off, n, limit int64) bool {
	return off >= 0 && n >= 0 && off <= limit && n <= limit-off
}

// fromTOC derives the sections from the ToC entries.
func (br *Reader) fromTOC() (metaLoc, hdrLoc, digestLoc location, err error) {
	limit := br.size - int64(br.toc.Size())
	seen := map[string]bool{}
	for i, e := range br.toc.Entries {
		if seen[e.Name] {
			return metaLoc, hdrLoc, digestLoc, fmt.Errorf("toc entry %d: duplicate name %q: %w", i, e.Name, ErrCorrupt)
		}
		seen[e.Name] = true
		algo, err := e.Compressor()
		if err != nil {
			return metaLoc, hdrLoc, digestLoc, fmt.Errorf("toc entry %d: %w", i, err)
		}
		if e.CompressedSize > 1<<62 || e.UncompressedSize > 1<<62 || e.CompressedOffset > 1<<62 {
			return metaLoc, hdrLoc, digestLoc, fmt.Errorf("toc entry %q: offset %d or sizes %d/%d out of range: %w", e.Name, e.CompressedOffset, e.CompressedSize, e.UncompressedSize, ErrCorrupt)
		}
		loc := location{off: int64(e.CompressedOffset), csize: int64(e.CompressedSize), usize: int64(e.UncompressedSize),
			algo: algo, sum: e.UncompressedDigest, ok: true}
		if e.Name == SectionChunkData {
			// See the TOCEntry quirk: chunk data starts at 0 whatever the
			// recorded offset; check that the tar header follows it.
			loc.off = 0
			if err := br.checkTarHeaderAt(loc.csize, SectionChunkData); err != nil {
				return metaLoc, hdrLoc, digestLoc, err
			}
			br.dataSize = loc.csize
			br.dataSpan = loc.usize
		}
		if !checkRange(loc.off, loc.csize, limit) {
			return metaLoc, hdrLoc, digestLoc, fmt.Errorf("toc entry %q: range %d+%d outside the blob data [0, %d): %w", e.Name, loc.off, loc.csize, limit, ErrCorrupt)
		}
		if algo == compress.None && loc.csize != loc.usize && e.Name != SectionChunkData {
			return metaLoc, hdrLoc, digestLoc, fmt.Errorf("toc entry %q: uncompressed entry with compressed size %d != uncompressed size %d: %w", e.Name, loc.csize, loc.usize, ErrCorrupt)
		}
		br.sections = append(br.sections, Section{Name: e.Name, Offset: loc.off, Size: loc.csize})
		switch e.Name {
		case SectionMeta:
			metaLoc = loc
		case SectionMetaHeader:
			if loc.csize != MetaHeaderSize || algo != compress.None {
				return metaLoc, hdrLoc, digestLoc, fmt.Errorf("toc entry %q: size %d compressor %v, want %d uncompressed: %w", e.Name, loc.csize, algo, MetaHeaderSize, ErrCorrupt)
			}
			hdrLoc = loc
		case SectionChunkDigest:
			if algo != compress.None {
				return metaLoc, hdrLoc, digestLoc, fmt.Errorf("toc entry %q: compressor %v, want none: %w", e.Name, algo, ErrCorrupt)
			}
			digestLoc = loc
		case SectionBootstrap:
			br.boot = loc
		}
	}
	if metaLoc.ok && !hdrLoc.ok {
		// Older ToCs may lack the header entry; it follows the CI data.
		hdrLoc = location{off: metaLoc.off + metaLoc.csize, csize: MetaHeaderSize, usize: MetaHeaderSize, ok: true}
		if !checkRange(hdrLoc.off, hdrLoc.csize, limit) {
			return metaLoc, hdrLoc, digestLoc, fmt.Errorf("meta header at %d beyond the blob data: %w", hdrLoc.off, ErrCorrupt)
		}
	}
	return metaLoc, hdrLoc, digestLoc, nil
}

// checkTarHeaderAt checks that a tar header for name, sized off, sits at
// off.
func (br *Reader) checkTarHeaderAt(off int64, name string) error {
	if !checkRange(off, TarHeaderSize, br.size) {
		return fmt.Errorf("tar header %q at offset %d beyond blob size %d: %w", name, off, br.size, ErrCorrupt)
	}
	var b [TarHeaderSize]byte
	if _, err := br.r.ReadAt(b[:], off); err != nil {
		return fmt.Errorf("read tar header %q at offset %d: %w", name, off, err)
	}
	e, err := ParseTarHeader(b[:])
	if err != nil {
		return fmt.Errorf("tar header %q at offset %d: %w", name, off, err)
	}
	if e.Name != name || e.Size != off {
		return fmt.Errorf("tar header at offset %d is %q of size %d, want %q of size %d: %w", off, e.Name, e.Size, name, off, ErrCorrupt)
	}
	return nil
}

// fromTarSections derives the sections from the tar headers.
func (br *Reader) fromTarSections() (metaLoc, hdrLoc, digestLoc location, err error) {
	seen := map[string]bool{}
	for _, s := range br.sections {
		if seen[s.Name] {
			return metaLoc, hdrLoc, digestLoc, fmt.Errorf("duplicate tar section %q at offset %d: %w", s.Name, s.Offset, ErrCorrupt)
		}
		seen[s.Name] = true
		loc := location{off: s.Offset, csize: s.Size, usize: s.Size, algo: compress.None, ok: true}
		switch s.Name {
		case SectionChunkData:
			if s.Offset != 0 {
				return metaLoc, hdrLoc, digestLoc, fmt.Errorf("section %q at offset %d, want 0: %w", s.Name, s.Offset, ErrCorrupt)
			}
			br.dataSize = s.Size
		case SectionMeta:
			if s.Size < MetaHeaderSize {
				return metaLoc, hdrLoc, digestLoc, fmt.Errorf("section %q is %d bytes, smaller than the meta header: %w", s.Name, s.Size, ErrCorrupt)
			}
			metaLoc = location{off: s.Offset, csize: s.Size - MetaHeaderSize, ok: true}
			hdrLoc = location{off: s.End() - MetaHeaderSize, csize: MetaHeaderSize, usize: MetaHeaderSize, ok: true}
		case SectionChunkDigest:
			digestLoc = loc
		case SectionBootstrap:
			br.boot = loc
		}
	}
	return metaLoc, hdrLoc, digestLoc, nil
}

// readSection reads [off, off+n) after checking it lies in the blob.
func (br *Reader) readSection(name string, off, n int64) ([]byte, error) {
	if !checkRange(off, n, br.size) {
		return nil, fmt.Errorf("section %q range %d+%d beyond blob size %d: %w", name, off, n, br.size, ErrCorrupt)
	}
	buf := make([]byte, n)
	if _, err := br.r.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("read section %q (%d bytes at offset %d): %w", name, n, off, err)
	}
	return buf, nil
}

// loadMeta reads and validates the MetaHeader and the CI data.
func (br *Reader) loadMeta(metaLoc, hdrLoc location) error {
	hb, err := br.readSection(SectionMetaHeader, hdrLoc.off, MetaHeaderSize)
	if err != nil {
		return err
	}
	if !hdrLoc.sum.IsZero() && sha256.Sum256(hb) != [32]byte(hdrLoc.sum) {
		return fmt.Errorf("meta header at offset %d does not match its ToC digest: %w", hdrLoc.off, ErrCorrupt)
	}
	h, err := UnmarshalMetaHeader(hb)
	if err != nil {
		return fmt.Errorf("read blob meta at offset %d: %w", hdrLoc.off, err)
	}
	if h.Features.Has(FeatureEncrypted) {
		return fmt.Errorf("encrypted blob meta: %w", ErrUnsupported)
	}
	// The CI data sits right before the header, at the offset the header
	// records (a ToC or tar section must agree).
	if h.CIOffset > uint64(hdrLoc.off) || uint64(hdrLoc.off)-h.CIOffset != h.CICompressedSize {
		return fmt.Errorf("meta header at offset %d: ci_offset %d + ci_compressed_size %d does not end at the header: %w",
			hdrLoc.off, h.CIOffset, h.CICompressedSize, ErrCorrupt)
	}
	if metaLoc.ok {
		if uint64(metaLoc.off) != h.CIOffset || uint64(metaLoc.csize) != h.CICompressedSize {
			return fmt.Errorf("section %q at %d+%d disagrees with meta header ci_offset %d ci_compressed_size %d: %w",
				SectionMeta, metaLoc.off, metaLoc.csize, h.CIOffset, h.CICompressedSize, ErrCorrupt)
		}
		if br.layout == LayoutTOC && (metaLoc.algo != h.CICompressor || uint64(metaLoc.usize) != h.CIUncompressedSize) {
			return fmt.Errorf("toc entry %q (%v, %d bytes) disagrees with meta header (%v, %d bytes): %w",
				SectionMeta, metaLoc.algo, metaLoc.usize, h.CICompressor, h.CIUncompressedSize, ErrCorrupt)
		}
	}
	stored, err := br.readSection(SectionMeta, int64(h.CIOffset), int64(h.CICompressedSize))
	if err != nil {
		return err
	}
	ci, err := compress.Decompress(h.CICompressor, nil, stored, int(h.CIUncompressedSize))
	if err != nil {
		return fmt.Errorf("decompress chunk infos at offset %d: %w", h.CIOffset, err)
	}
	if !metaLoc.sum.IsZero() && sha256.Sum256(ci) != [32]byte(metaLoc.sum) {
		return fmt.Errorf("chunk infos at offset %d do not match their ToC digest: %w", h.CIOffset, ErrCorrupt)
	}
	m, err := DecodeMeta(h, ci)
	if err != nil {
		return err
	}
	separate := h.Features.Has(FeatureSeparate)
	switch {
	case br.layout == LayoutPlain:
		// Upstream BlobInfo::compressed_data_size: without tar headers
		// the chunk data ends where the CI data starts.
		br.dataSize = int64(h.CIOffset)
	case br.dataSize == 0 && !separate && br.layout == LayoutTOC:
		// A ToC without an "image.blob" entry: the chunk data ends at its
		// tar header, right before the CI data.
		if h.CIOffset < TarHeaderSize {
			return fmt.Errorf("meta header ci_offset %d leaves no room for chunk data: %w", h.CIOffset, ErrCorrupt)
		}
		ds := int64(h.CIOffset) - TarHeaderSize
		if err := br.checkTarHeaderAt(ds, SectionChunkData); err != nil {
			return err
		}
		br.dataSize = ds
	}
	if br.dataSize == 0 && !separate {
		return fmt.Errorf("%d chunk infos but no chunk data: %w", len(m.ChunkInfos), ErrCorrupt)
	}
	lim := ChunkLimits{Features: h.Features, CompressedSize: uint64(br.dataSize), UncompressedSize: uint64(br.dataSpan),
		ZranContexts: m.ZranContexts, BatchContexts: m.BatchContexts}
	if err := ValidateChunkInfos(m.ChunkInfos, lim); err != nil {
		return err
	}
	br.meta = m
	return nil
}

// loadDigests reads the chunk digest array.
func (br *Reader) loadDigests(loc location) error {
	if br.meta == nil {
		return fmt.Errorf("section %q without chunk infos: %w", SectionChunkDigest, ErrCorrupt)
	}
	if want := int64(len(br.meta.ChunkInfos)) * digester.Size; loc.csize != want {
		return fmt.Errorf("section %q is %d bytes, want %d for %d chunks: %w", SectionChunkDigest, loc.csize, want, len(br.meta.ChunkInfos), ErrCorrupt)
	}
	b, err := br.readSection(SectionChunkDigest, loc.off, loc.csize)
	if err != nil {
		return err
	}
	if !loc.sum.IsZero() && sha256.Sum256(b) != [32]byte(loc.sum) {
		return fmt.Errorf("section %q does not match its ToC digest: %w", SectionChunkDigest, ErrCorrupt)
	}
	br.digests = make([]digester.Digest, len(b)/digester.Size)
	for i := range br.digests {
		copy(br.digests[i][:], b[i*digester.Size:])
	}
	return nil
}

// Size returns the blob size given to Open.
func (br *Reader) Size() int64 { return br.size }

// Layout returns how the sections were located.
func (br *Reader) Layout() Layout { return br.layout }

// TOC returns the blob's ToC, if it has one.
func (br *Reader) TOC() (TOC, bool) { return br.toc, br.layout == LayoutTOC }

// Sections returns the sections found through the ToC or tar headers (for
// a ToC, "image.blob" is reported at offset 0 whatever the entry says).
// It is empty for a plain blob.
func (br *Reader) Sections() []Section { return append([]Section(nil), br.sections...) }

// DataSize returns the size of the chunk-data area at offset 0 (0 for
// blobs whose chunks live elsewhere).
func (br *Reader) DataSize() int64 { return br.dataSize }

// MetaHeader returns the blob's MetaHeader, if it has chunk metadata.
func (br *Reader) MetaHeader() (MetaHeader, bool) {
	if br.meta == nil {
		return MetaHeader{}, false
	}
	return br.meta.Header, true
}

// Meta returns the decoded blob meta, or nil if the blob has none. The
// caller must not modify it.
func (br *Reader) Meta() *Meta { return br.meta }

// ChunkInfos returns the chunk infos (nil if the blob has none). The
// caller must not modify the slice.
func (br *Reader) ChunkInfos() []ChunkInfo {
	if br.meta == nil {
		return nil
	}
	return br.meta.ChunkInfos
}

// ChunkDigests returns the chunk digest array ("blob.digest"), if the blob
// has one. The caller must not modify the slice.
func (br *Reader) ChunkDigests() ([]digester.Digest, bool) {
	return br.digests, br.digests != nil
}

// MetaFile returns the content of the "<blob_id>.blob.meta" cache file for
// this blob (see [MarshalMetaFile]).
func (br *Reader) MetaFile() ([]byte, error) {
	if br.meta == nil {
		return nil, fmt.Errorf("blob meta file: blob has no chunk infos: %w", errdefs.ErrNotFound)
	}
	return MarshalMetaFile(br.meta.Header, br.meta.CI)
}

// Bootstrap reads and returns the inline RAFS bootstrap ("image.boot"),
// decompressed and checked against its ToC digest. Bootstraps above 2 GiB
// are rejected before anything is allocated. It returns an error wrapping
// errdefs.ErrNotFound if the blob has no inline bootstrap.
func (br *Reader) Bootstrap() ([]byte, error) {
	loc := br.boot
	if !loc.ok {
		return nil, fmt.Errorf("read inline bootstrap: %w", errdefs.ErrNotFound)
	}
	if loc.usize <= 0 || loc.usize > MaxBootstrapSize || loc.csize > MaxBootstrapSize {
		return nil, fmt.Errorf("read inline bootstrap: size %d (stored %d) not in [1, %d]: %w", loc.usize, loc.csize, int64(MaxBootstrapSize), ErrCorrupt)
	}
	if loc.algo == compress.Lz4Block {
		return nil, fmt.Errorf("read inline bootstrap: lz4_block entries cannot be extracted (upstream neither): %w", ErrUnsupported)
	}
	stored, err := br.readSection(SectionBootstrap, loc.off, loc.csize)
	if err != nil {
		return nil, fmt.Errorf("read inline bootstrap: %w", err)
	}
	boot, err := compress.Decompress(loc.algo, stored[:0:0], stored, int(loc.usize))
	if err != nil {
		return nil, fmt.Errorf("read inline bootstrap: %w", err)
	}
	if !loc.sum.IsZero() && sha256.Sum256(boot) != [32]byte(loc.sum) {
		return nil, fmt.Errorf("read inline bootstrap: content does not match its ToC digest: %w", ErrCorrupt)
	}
	return boot, nil
}

// readBufs pools buffers for compressed chunk data.
var readBufs = sync.Pool{New: func() any { return new([]byte) }}

// ReadChunk reads the chunk described by ci from the chunk-data area and
// returns its uncompressed bytes, in dst's backing array when it is large
// enough. algo is the blob's compressor from the blob table. Batch chunks
// are supported; zran and encrypted chunks are not.
func (br *Reader) ReadChunk(ci ChunkInfo, algo compress.Algorithm, dst []byte) ([]byte, error) {
	v2 := br.meta != nil && br.meta.Header.Features.Has(FeatureChunkInfoV2)
	if err := ci.validate(v2, false); err != nil {
		return nil, fmt.Errorf("read chunk at offset %d: %w", ci.CompressedOffset, err)
	}
	switch {
	case ci.IsZran():
		return nil, fmt.Errorf("read chunk at offset %d: zran chunk data lives in the original gzip blob: %w", ci.CompressedOffset, ErrUnsupported)
	case ci.IsEncrypted():
		return nil, fmt.Errorf("read chunk at offset %d: encrypted chunk: %w", ci.CompressedOffset, ErrUnsupported)
	case ci.IsBatch():
		return br.readBatchChunk(ci, algo, dst)
	}
	out, err := br.readStored(ci.CompressedOffset, uint64(ci.CompressedSize), uint64(ci.UncompressedSize), ci.Compressed, algo, dst)
	if err != nil {
		return nil, fmt.Errorf("read chunk at offset %d: %w", ci.CompressedOffset, err)
	}
	return out, nil
}

// readStored reads csize bytes at off from the data area and expands them
// to usize bytes.
func (br *Reader) readStored(off, csize, usize uint64, compressed bool, algo compress.Algorithm, dst []byte) ([]byte, error) {
	if off > uint64(br.dataSize) || csize > uint64(br.dataSize)-off {
		return nil, fmt.Errorf("range %d+%d beyond chunk data size %d: %w", off, csize, br.dataSize, ErrCorrupt)
	}
	if !compressed {
		if csize != usize {
			return nil, fmt.Errorf("uncompressed chunk with stored size %d != size %d: %w", csize, usize, ErrCorrupt)
		}
		out := dst[:0]
		if uint64(cap(out)) < usize {
			out = make([]byte, usize)
		}
		out = out[:usize]
		if _, err := br.r.ReadAt(out, int64(off)); err != nil {
			return nil, fmt.Errorf("read %d bytes: %w", csize, err)
		}
		return out, nil
	}
	if algo == compress.None {
		return nil, errors.New("chunk is compressed but the blob compressor is none")
	}
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	if uint64(cap(*bp)) < csize {
		*bp = make([]byte, csize)
	}
	raw := (*bp)[:csize]
	if _, err := br.r.ReadAt(raw, int64(off)); err != nil {
		return nil, fmt.Errorf("read %d bytes: %w", csize, err)
	}
	out, err := compress.Decompress(algo, dst, raw, int(usize))
	if err != nil {
		return nil, err
	}
	return out, nil
}

// readBatchChunk reads the batch containing ci and returns ci's part.
func (br *Reader) readBatchChunk(ci ChunkInfo, algo compress.Algorithm, dst []byte) ([]byte, error) {
	if br.meta == nil || int(ci.ContextIndex()) >= len(br.meta.BatchContexts) {
		return nil, fmt.Errorf("read batch chunk at offset %d: batch index %d has no context: %w", ci.CompressedOffset, ci.ContextIndex(), ErrCorrupt)
	}
	bc := br.meta.BatchContexts[ci.ContextIndex()]
	off := uint64(ci.ContextOffset())
	if off+uint64(ci.UncompressedSize) > uint64(bc.UncompressedSize) || bc.CompressedSize > bc.UncompressedSize {
		return nil, fmt.Errorf("read batch chunk at offset %d: range %d+%d outside batch of %d bytes: %w", ci.CompressedOffset, off, ci.UncompressedSize, bc.UncompressedSize, ErrCorrupt)
	}
	compressed := bc.CompressedSize != bc.UncompressedSize
	buf, err := br.readStored(ci.CompressedOffset, uint64(bc.CompressedSize), uint64(bc.UncompressedSize), compressed, algo, nil)
	if err != nil {
		return nil, fmt.Errorf("read batch %d at offset %d: %w", ci.ContextIndex(), ci.CompressedOffset, err)
	}
	return append(dst[:0], buf[off:off+uint64(ci.UncompressedSize)]...), nil
}
