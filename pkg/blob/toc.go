package blob

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/errdefs"
)

// ToC constants (upstream storage/src/meta/toc.rs).
const (
	// TOCEntrySize is the size of one ToC entry.
	TOCEntrySize = 128
	// TOCNameSize is the size of the NUL-padded entry name.
	TOCNameSize = 16
	// tocAutoDetectSize is how much of the blob tail ReadTOC reads.
	tocAutoDetectSize = 0x1000
	// maxTOCSize is the largest blob_toc_size upstream accepts.
	maxTOCSize = 0x10000
)

// ToC entry flags: the compression of the entry's data.
const (
	// TOCCompressionNone marks uncompressed entry data.
	TOCCompressionNone uint32 = 0x1
	// TOCCompressionZstd marks zstd-compressed entry data.
	TOCCompressionZstd uint32 = 0x2
	// TOCCompressionLz4Block marks lz4_block-compressed entry data, which
	// upstream cannot extract.
	TOCCompressionLz4Block uint32 = 0x4
	// tocCompressionMask covers the compression bits.
	tocCompressionMask uint32 = 0xf
)

// TOCEntry is one 128-byte ToC entry:
//
//	off  0 u32 flags            off 56 u64 compressed_offset
//	off  4 u32 reserved         off 64 u64 compressed_size
//	off  8 u8  name[16]         off 72 u64 uncompressed_size
//	off 24 u8  sha256[32]       off 80 u8  reserved[48]
//
// Quirk: blobs built by nydus-image before upstream commit 747edc95
// (2023-02, "fix invalid compressed offset in image.blob toc entry"),
// including both ToC fixtures, store the data length instead of 0 as the
// compressed_offset of "image.blob". Chunk data always starts at offset 0
// of a native blob; locate it through the CI array, not this entry. The
// "image.blob" digest covers the chunk data and its tar header.
type TOCEntry struct {
	// Flags holds the compression bits (TOCCompression*).
	Flags uint32
	// Name is the section name, at most 16 bytes (trailing NULs
	// dropped).
	Name string
	// UncompressedDigest is the sha256 of the uncompressed data; zero
	// means unknown.
	UncompressedDigest digester.Digest
	// CompressedOffset is the offset of the stored data in the blob.
	CompressedOffset uint64
	// CompressedSize is the size of the stored data.
	CompressedSize uint64
	// UncompressedSize is the size of the data once decompressed.
	UncompressedSize uint64
}

// tocFlags maps a compressor to its ToC flag (upstream
// TryFrom<compress::Algorithm> for TocEntryFlags).
func tocFlags(a compress.Algorithm) (uint32, error) {
	switch a {
	case compress.None:
		return TOCCompressionNone, nil
	case compress.Zstd:
		return TOCCompressionZstd, nil
	case compress.Lz4Block:
		return TOCCompressionLz4Block, nil
	}
	return 0, fmt.Errorf("compressor %v cannot be recorded in a ToC entry: %w", a, ErrUnsupported)
}

// Compressor returns the compression algorithm recorded in the flags.
func (e TOCEntry) Compressor() (compress.Algorithm, error) {
	if e.Flags&^tocCompressionMask != 0 {
		return 0, fmt.Errorf("toc entry %q: unknown flags %#x: %w", e.Name, e.Flags, ErrCorrupt)
	}
	switch e.Flags & tocCompressionMask {
	case TOCCompressionNone:
		return compress.None, nil
	case TOCCompressionZstd:
		return compress.Zstd, nil
	case TOCCompressionLz4Block:
		return compress.Lz4Block, nil
	}
	return 0, fmt.Errorf("toc entry %q: unknown compression flags %#x: %w", e.Name, e.Flags, ErrCorrupt)
}

// MarshalBinary returns the 128-byte encoding of e.
func (e TOCEntry) MarshalBinary() ([]byte, error) {
	return e.AppendBinary(make([]byte, 0, TOCEntrySize))
}

// AppendBinary appends the 128-byte encoding of e to b. The name must be
// 1 to 16 bytes.
func (e TOCEntry) AppendBinary(b []byte) ([]byte, error) {
	if len(e.Name) == 0 || len(e.Name) > TOCNameSize {
		return nil, fmt.Errorf("marshal toc entry %q: name length %d not in [1, %d]", e.Name, len(e.Name), TOCNameSize)
	}
	le := binary.LittleEndian
	b = le.AppendUint32(b, e.Flags)
	b = le.AppendUint32(b, 0)
	var name [TOCNameSize]byte
	copy(name[:], e.Name)
	b = append(b, name[:]...)
	b = append(b, e.UncompressedDigest[:]...)
	b = le.AppendUint64(b, e.CompressedOffset)
	b = le.AppendUint64(b, e.CompressedSize)
	b = le.AppendUint64(b, e.UncompressedSize)
	return append(b, make([]byte, 48)...), nil
}

// UnmarshalTOCEntry decodes a 128-byte ToC entry. Reserved bytes are
// ignored; flags are checked only by [TOCEntry.Compressor].
func UnmarshalTOCEntry(b []byte) (TOCEntry, error) {
	if len(b) != TOCEntrySize {
		return TOCEntry{}, fmt.Errorf("toc entry: %d bytes, want %d: %w", len(b), TOCEntrySize, ErrCorrupt)
	}
	le := binary.LittleEndian
	e := TOCEntry{
		Flags:            le.Uint32(b[0:]),
		Name:             string(bytes.TrimRight(b[8:8+TOCNameSize], "\x00")),
		CompressedOffset: le.Uint64(b[56:]),
		CompressedSize:   le.Uint64(b[64:]),
		UncompressedSize: le.Uint64(b[72:]),
	}
	copy(e.UncompressedDigest[:], b[24:56])
	return e, nil
}

// TOC is a blob's table of contents: the entries and the tar header
// "rafs.blob.toc" that follows them.
type TOC struct {
	// Entries lists the sections in the order they were written.
	Entries []TOCEntry
	// raw holds the entries and tar header exactly as read, so that
	// Digest matches even if another writer encoded the header
	// differently.
	raw []byte
}

// Entry returns the first entry named name.
func (t TOC) Entry(name string) (TOCEntry, bool) {
	for _, e := range t.Entries {
		if e.Name == name {
			return e, true
		}
	}
	return TOCEntry{}, false
}

// Size returns the blob_toc_size recorded in the blob table: the entries
// plus the 512-byte tar header.
func (t TOC) Size() uint32 {
	if t.raw != nil {
		return uint32(len(t.raw))
	}
	return uint32(len(t.Entries)*TOCEntrySize + TarHeaderSize)
}

// MarshalBinary returns the bytes stored at the end of a blob: the entries
// followed by the tar header "rafs.blob.toc". For a parsed ToC these are
// the bytes read.
func (t TOC) MarshalBinary() ([]byte, error) {
	if t.raw != nil {
		return bytes.Clone(t.raw), nil
	}
	b := make([]byte, 0, len(t.Entries)*TOCEntrySize+TarHeaderSize)
	for _, e := range t.Entries {
		var err error
		if b, err = e.AppendBinary(b); err != nil {
			return nil, fmt.Errorf("marshal toc: %w", err)
		}
	}
	hdr := TarHeader(SectionTOC, int64(len(b)))
	return append(b, hdr[:]...), nil
}

// Digest returns the blob_toc_digest recorded in the blob table: the
// sha256 of the entries followed by their tar header. It returns the zero
// digest if an entry cannot be encoded.
func (t TOC) Digest() digester.Digest {
	b, err := t.MarshalBinary()
	if err != nil {
		return digester.Digest{}
	}
	return sha256.Sum256(b)
}

// ParseTOC parses the ToC at the end of buf, which must end with the tar
// header "rafs.blob.toc" (upstream TocEntryList::parse_toc_header). Bytes
// before the entries are ignored.
func ParseTOC(buf []byte) (TOC, error) {
	if len(buf) < TarHeaderSize {
		return TOC{}, fmt.Errorf("parse toc: %d bytes, too small for a tar header: %w", len(buf), ErrCorrupt)
	}
	end := len(buf) - TarHeaderSize
	e, err := ParseTarHeader(buf[end:])
	if err != nil {
		return TOC{}, fmt.Errorf("parse toc: %w", err)
	}
	if e.Name != SectionTOC {
		return TOC{}, fmt.Errorf("parse toc: last tar header is %q, not %q: %w", e.Name, SectionTOC, errdefs.ErrNotFound)
	}
	if !e.GNU {
		return TOC{}, fmt.Errorf("parse toc: tar header is not a GNU header: %w", ErrCorrupt)
	}
	if e.Size > int64(end) {
		return TOC{}, fmt.Errorf("parse toc: entries size %d exceeds the %d bytes available: %w", e.Size, end, ErrCorrupt)
	}
	if e.Size%TOCEntrySize != 0 {
		return TOC{}, fmt.Errorf("parse toc: entries size %d is not a multiple of %d: %w", e.Size, TOCEntrySize, ErrCorrupt)
	}
	start := end - int(e.Size)
	t := TOC{raw: bytes.Clone(buf[start:])}
	t.Entries = make([]TOCEntry, 0, e.Size/TOCEntrySize)
	for off := start; off < end; off += TOCEntrySize {
		ent, err := UnmarshalTOCEntry(buf[off : off+TOCEntrySize])
		if err != nil {
			return TOC{}, fmt.Errorf("parse toc: entry %d: %w", len(t.Entries), err)
		}
		t.Entries = append(t.Entries, ent)
	}
	return t, nil
}

// ReadTOC reads the ToC of a blob of the given size with upstream's
// auto-detection: it reads the last min(4096, size rounded down to 128)
// bytes and parses the trailing tar header "rafs.blob.toc" and the entries
// before it. A blob whose last tar header has another name yields an error
// wrapping errdefs.ErrNotFound.
func ReadTOC(r io.ReaderAt, size int64) (TOC, error) {
	if size <= 0 {
		return TOC{}, fmt.Errorf("read toc: blob size %d: %w", size, ErrCorrupt)
	}
	n := size &^ (TOCEntrySize - 1)
	if size > tocAutoDetectSize {
		n = tocAutoDetectSize
	}
	if n < TarHeaderSize {
		return TOC{}, fmt.Errorf("read toc: blob size %d is too small for a ToC: %w", size, ErrCorrupt)
	}
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, size-n); err != nil {
		return TOC{}, fmt.Errorf("read toc: read %d bytes at offset %d: %w", n, size-n, err)
	}
	t, err := ParseTOC(buf)
	if err != nil {
		return TOC{}, fmt.Errorf("read toc: %w", err)
	}
	return t, nil
}

// ReadTOCAt reads a ToC whose size is known from the blob table
// (blob_toc_size): the last tocSize bytes of the blob. If want is not zero
// the ToC must hash to it (blob_toc_digest).
func ReadTOCAt(r io.ReaderAt, size int64, tocSize uint32, want digester.Digest) (TOC, error) {
	if tocSize < TarHeaderSize || tocSize > maxTOCSize || tocSize%TOCEntrySize != 0 {
		return TOC{}, fmt.Errorf("read toc: blob_toc_size %d not a multiple of %d in [%d, %d]: %w", tocSize, TOCEntrySize, TarHeaderSize, maxTOCSize, ErrCorrupt)
	}
	if int64(tocSize) > size {
		return TOC{}, fmt.Errorf("read toc: blob_toc_size %d exceeds blob size %d: %w", tocSize, size, ErrCorrupt)
	}
	buf := make([]byte, tocSize)
	if _, err := r.ReadAt(buf, size-int64(tocSize)); err != nil {
		return TOC{}, fmt.Errorf("read toc: read %d bytes at offset %d: %w", tocSize, size-int64(tocSize), err)
	}
	t, err := ParseTOC(buf)
	if err != nil {
		return TOC{}, fmt.Errorf("read toc: %w", err)
	}
	if t.Size() != tocSize {
		return TOC{}, fmt.Errorf("read toc: ToC is %d bytes, blob_toc_size says %d: %w", t.Size(), tocSize, ErrCorrupt)
	}
	if got := t.Digest(); !want.IsZero() && got != want {
		return TOC{}, fmt.Errorf("read toc: digest %s, blob_toc_digest says %s: %w", got, want, ErrCorrupt)
	}
	return t, nil
}
