package blob

import (
	"encoding/binary"
	"fmt"

	"github.com/nydus-go/nydus/pkg/compress"
)

// MetaHeader layout constants (upstream BlobCompressionContextHeader,
// storage/src/meta/mod.rs).
const (
	// MetaHeaderSize is the size of the MetaHeader.
	MetaHeaderSize = 4096
	// MetaMagic is stored at offsets 0 and 4092 of the MetaHeader.
	MetaMagic = 0xB10BB10B
	// ContextSize is the size of one ZranContext or BatchContext entry.
	ContextSize = 40
	// maxContextCIUncompressed caps the CI data size of ZRAN/BATCH blobs,
	// whose contexts and dictionaries follow the entries; upstream has no
	// explicit cap, so use the general decompression limit.
	maxContextCIUncompressed = compress.MaxSize
)

// MetaHeader is the 4096-byte blob compression-context header that follows
// the chunk-info (CI) array in a blob and ends a ".blob.meta" cache file:
//
//	off  0 u32 magic 0xB10BB10B     off 32 u64 ci_uncompressed_size
//	off  4 u32 features             off 40 u64 context (zran/batch) offset
//	off  8 u32 ci_compressor        off 48 u64 context size
//	off 12 u32 ci_entries           off 56 u32 context count
//	off 16 u64 ci_offset            off 60 reserved (zero)
//	off 24 u64 ci_compressed_size   off 4092 u32 magic 0xB10BB10B
type MetaHeader struct {
	// Features are the blob features; the blob table records the same
	// value.
	Features Features
	// CICompressor compressed the CI data in the blob (a cache file
	// always holds it uncompressed but keeps this value).
	CICompressor compress.Algorithm
	// CIEntries is the number of chunks.
	CIEntries uint32
	// CIOffset is the offset of the (compressed) CI data in the blob.
	CIOffset uint64
	// CICompressedSize is the stored size of the CI data.
	CICompressedSize uint64
	// CIUncompressedSize is the size of the uncompressed CI data: the
	// entries plus, for ZRAN and BATCH, the context table (and zran
	// dictionaries).
	CIUncompressedSize uint64
	// ContextOffset is the offset of the ZRAN or BATCH context table
	// inside the uncompressed CI data (upstream s_ci_zran_offset).
	ContextOffset uint64
	// ContextSize is the size of the context table, including zran
	// dictionaries (s_ci_zran_size).
	ContextSize uint64
	// ContextCount is the number of contexts (s_ci_zran_count).
	ContextCount uint32
}

// entrySize returns the CI entry size for h's format.
func (h MetaHeader) entrySize() uint64 {
	return uint64(entrySize(h.Features.Has(FeatureChunkInfoV2)))
}

// Validate applies upstream's consistency rules (validate_header and the
// RafsV6Blob checks) to h.
func (h MetaHeader) Validate() error {
	if err := h.Features.Validate(); err != nil {
		return fmt.Errorf("meta header: %w", err)
	}
	if !h.CICompressor.Valid() {
		return fmt.Errorf("meta header: unknown ci_compressor %d: %w", uint32(h.CICompressor), ErrCorrupt)
	}
	if h.CIEntries == 0 || h.CIEntries > MaxChunksPerBlob {
		return fmt.Errorf("meta header: ci_entries %d not in [1, %d]: %w", h.CIEntries, MaxChunksPerBlob, ErrCorrupt)
	}
	if h.CIOffset+h.CICompressedSize < h.CIOffset {
		return fmt.Errorf("meta header: ci_offset %#x + ci_compressed_size %#x overflows: %w", h.CIOffset, h.CICompressedSize, ErrCorrupt)
	}
	if h.CICompressedSize > h.CIUncompressedSize {
		return fmt.Errorf("meta header: ci_compressed_size %d exceeds ci_uncompressed_size %d: %w", h.CICompressedSize, h.CIUncompressedSize, ErrCorrupt)
	}
	if h.CICompressor == compress.None && !h.Features.Has(FeatureEncrypted) && h.CICompressedSize != h.CIUncompressedSize {
		return fmt.Errorf("meta header: uncompressed CI with ci_compressed_size %d != ci_uncompressed_size %d: %w", h.CICompressedSize, h.CIUncompressedSize, ErrCorrupt)
	}
	entries := uint64(h.CIEntries) * h.entrySize()
	withContexts := h.Features&(FeatureZran|FeatureBatch) != 0
	switch {
	case withContexts || (h.Features.Has(FeatureChunkInfoV2) && h.Features.Has(FeatureEncrypted)):
		if h.CIUncompressedSize < entries {
			return fmt.Errorf("meta header: ci_uncompressed_size %d too small for %d entries (%d bytes): %w", h.CIUncompressedSize, h.CIEntries, entries, ErrCorrupt)
		}
		if h.CIUncompressedSize > maxContextCIUncompressed {
			return fmt.Errorf("meta header: ci_uncompressed_size %d exceeds %d: %w", h.CIUncompressedSize, maxContextCIUncompressed, ErrCorrupt)
		}
	case h.Features.Has(FeatureChunkDictGenerated):
		if h.CIUncompressedSize < entries {
			return fmt.Errorf("meta header: ci_uncompressed_size %d too small for %d entries (%d bytes): %w", h.CIUncompressedSize, h.CIEntries, entries, ErrCorrupt)
		}
		if h.CIUncompressedSize > MaxChunksPerBlob*h.entrySize() {
			return fmt.Errorf("meta header: ci_uncompressed_size %d exceeds %d: %w", h.CIUncompressedSize, MaxChunksPerBlob*h.entrySize(), ErrCorrupt)
		}
	default:
		if h.CIUncompressedSize != entries {
			return fmt.Errorf("meta header: ci_uncompressed_size %d != %d entries × %d: %w", h.CIUncompressedSize, h.CIEntries, h.entrySize(), ErrCorrupt)
		}
	}
	if withContexts {
		if h.ContextOffset != entries {
			return fmt.Errorf("meta header: context offset %d != end of entries %d: %w", h.ContextOffset, entries, ErrCorrupt)
		}
		if h.ContextSize > h.CIUncompressedSize-h.ContextOffset {
			return fmt.Errorf("meta header: context table %d+%d beyond ci_uncompressed_size %d: %w", h.ContextOffset, h.ContextSize, h.CIUncompressedSize, ErrCorrupt)
		}
		if uint64(h.ContextCount)*ContextSize > h.ContextSize {
			return fmt.Errorf("meta header: %d contexts need %d bytes, context size is %d: %w", h.ContextCount, uint64(h.ContextCount)*ContextSize, h.ContextSize, ErrCorrupt)
		}
		if h.Features.Has(FeatureZran) && h.ContextCount > h.CIEntries {
			return fmt.Errorf("meta header: %d zran contexts for %d chunks: %w", h.ContextCount, h.CIEntries, ErrCorrupt)
		}
	}
	return nil
}

// MarshalBinary returns the 4096-byte encoding of h after validating it.
func (h MetaHeader) MarshalBinary() ([]byte, error) {
	return h.AppendBinary(make([]byte, 0, MetaHeaderSize))
}

// AppendBinary appends the 4096-byte encoding of h to b after validating
// it.
func (h MetaHeader) AppendBinary(b []byte) ([]byte, error) {
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("marshal %w", err)
	}
	start := len(b)
	b = append(b, make([]byte, MetaHeaderSize)...)
	p := b[start:]
	le := binary.LittleEndian
	le.PutUint32(p[0:], MetaMagic)
	le.PutUint32(p[4:], uint32(h.Features))
	le.PutUint32(p[8:], uint32(h.CICompressor))
	le.PutUint32(p[12:], h.CIEntries)
	le.PutUint64(p[16:], h.CIOffset)
	le.PutUint64(p[24:], h.CICompressedSize)
	le.PutUint64(p[32:], h.CIUncompressedSize)
	le.PutUint64(p[40:], h.ContextOffset)
	le.PutUint64(p[48:], h.ContextSize)
	le.PutUint32(p[56:], h.ContextCount)
	le.PutUint32(p[MetaHeaderSize-4:], MetaMagic)
	return b, nil
}

// UnmarshalMetaHeader decodes and validates a 4096-byte MetaHeader. The
// reserved bytes are ignored.
func UnmarshalMetaHeader(b []byte) (MetaHeader, error) {
	if len(b) != MetaHeaderSize {
		return MetaHeader{}, fmt.Errorf("meta header: %d bytes, want %d: %w", len(b), MetaHeaderSize, ErrCorrupt)
	}
	le := binary.LittleEndian
	if m := le.Uint32(b[0:]); m != MetaMagic {
		return MetaHeader{}, fmt.Errorf("meta header: magic %#x at offset 0, want %#x: %w", m, uint32(MetaMagic), ErrCorrupt)
	}
	if m := le.Uint32(b[MetaHeaderSize-4:]); m != MetaMagic {
		return MetaHeader{}, fmt.Errorf("meta header: magic %#x at offset %d, want %#x: %w", m, MetaHeaderSize-4, uint32(MetaMagic), ErrCorrupt)
	}
	h := MetaHeader{
		Features:           Features(le.Uint32(b[4:])),
		CICompressor:       compress.Algorithm(le.Uint32(b[8:])),
		CIEntries:          le.Uint32(b[12:]),
		CIOffset:           le.Uint64(b[16:]),
		CICompressedSize:   le.Uint64(b[24:]),
		CIUncompressedSize: le.Uint64(b[32:]),
		ContextOffset:      le.Uint64(b[40:]),
		ContextSize:        le.Uint64(b[48:]),
		ContextCount:       le.Uint32(b[56:]),
	}
	if err := h.Validate(); err != nil {
		return MetaHeader{}, err
	}
	return h, nil
}

// ZranContext is one 40-byte zlib random-access context (upstream
// ZranInflateContext): where to restart inflating a gzip stream.
type ZranContext struct {
	// InOffset is the offset in the compressed gzip stream.
	InOffset uint64
	// OutOffset is the offset in the uncompressed stream.
	OutOffset uint64
	// DictOffset is the offset of the inflate dictionary in the
	// dictionary table.
	DictOffset uint64
	// InLen is the size of the compressed range.
	InLen uint32
	// OutLen is the size of the uncompressed range.
	OutLen uint32
	// DictSize is the size of the inflate dictionary.
	DictSize uint32
	// CtxByte is the previous byte of the compressed stream, used when
	// CtxBits is non-zero.
	CtxByte uint8
	// CtxBits is the number of bits of CtxByte to feed to inflate.
	CtxBits uint8
}

// AppendBinary appends the 40-byte encoding of c to b.
func (c ZranContext) AppendBinary(b []byte) ([]byte, error) {
	le := binary.LittleEndian
	b = le.AppendUint64(b, c.InOffset)
	b = le.AppendUint64(b, c.OutOffset)
	b = le.AppendUint64(b, c.DictOffset)
	b = le.AppendUint32(b, c.InLen)
	b = le.AppendUint32(b, c.OutLen)
	b = le.AppendUint32(b, c.DictSize)
	return append(b, c.CtxByte, c.CtxBits, 0, 0), nil
}

func decodeZranContext(b []byte) ZranContext {
	le := binary.LittleEndian
	return ZranContext{
		InOffset:   le.Uint64(b[0:]),
		OutOffset:  le.Uint64(b[8:]),
		DictOffset: le.Uint64(b[16:]),
		InLen:      le.Uint32(b[24:]),
		OutLen:     le.Uint32(b[28:]),
		DictSize:   le.Uint32(b[32:]),
		CtxByte:    b[36],
		CtxBits:    b[37],
	}
}

// BatchContext is one 40-byte batch context (upstream
// BatchInflateContext): the sizes of one batch of small chunks compressed
// together.
type BatchContext struct {
	// CompressedSize is the stored size of the whole batch.
	CompressedSize uint32
	// UncompressedSize is the size of the batch's uncompressed buffer
	// (not 4 KiB aligned).
	UncompressedSize uint32
}

// AppendBinary appends the 40-byte encoding of c to b.
func (c BatchContext) AppendBinary(b []byte) ([]byte, error) {
	le := binary.LittleEndian
	b = le.AppendUint32(b, c.CompressedSize)
	b = le.AppendUint32(b, c.UncompressedSize)
	return append(b, make([]byte, 32)...), nil
}

// Meta is decoded blob meta: the header, the chunk infos and the optional
// context tables, as loaded from a blob or a cache file.
type Meta struct {
	// Header is the MetaHeader.
	Header MetaHeader
	// ChunkInfos has Header.CIEntries entries.
	ChunkInfos []ChunkInfo
	// ZranContexts is set for ZRAN blobs.
	ZranContexts []ZranContext
	// ZranDicts is the zran dictionary table that follows the contexts;
	// ZranContext.DictOffset indexes into it.
	ZranDicts []byte
	// BatchContexts is set for BATCH blobs.
	BatchContexts []BatchContext
	// CI is the uncompressed CI data the above was decoded from.
	CI []byte
}

// DecodeMeta decodes the uncompressed CI data ci described by h: the
// entries and, for ZRAN and BATCH blobs, the context table. It checks that
// every zran and batch chunk refers to a valid context and every zran
// dictionary lies inside the dictionary table. h is validated first.
func DecodeMeta(h MetaHeader, ci []byte) (*Meta, error) {
	if err := h.Validate(); err != nil {
		return nil, err
	}
	if uint64(len(ci)) != h.CIUncompressedSize {
		return nil, fmt.Errorf("decode blob meta: CI data is %d bytes, header says %d: %w", len(ci), h.CIUncompressedSize, ErrCorrupt)
	}
	cis, err := DecodeChunkInfos(ci, h.Features.Has(FeatureChunkInfoV2), h.CIEntries)
	if err != nil {
		return nil, fmt.Errorf("decode blob meta: %w", err)
	}
	m := &Meta{Header: h, ChunkInfos: cis, CI: ci}
	if h.Features&(FeatureZran|FeatureBatch) != 0 {
		table := ci[h.ContextOffset : h.ContextOffset+h.ContextSize]
		n := int(h.ContextCount)
		if h.Features.Has(FeatureBatch) {
			// Upstream prefers BATCH when both bits are set.
			m.BatchContexts = make([]BatchContext, n)
			for i := range m.BatchContexts {
				p := table[i*ContextSize:]
				m.BatchContexts[i] = BatchContext{
					CompressedSize:   binary.LittleEndian.Uint32(p[0:]),
					UncompressedSize: binary.LittleEndian.Uint32(p[4:]),
				}
			}
		} else {
			m.ZranContexts = make([]ZranContext, n)
			m.ZranDicts = table[n*ContextSize:]
			for i := range m.ZranContexts {
				c := decodeZranContext(table[i*ContextSize:])
				if c.DictOffset > uint64(len(m.ZranDicts)) || uint64(c.DictSize) > uint64(len(m.ZranDicts))-c.DictOffset {
					return nil, fmt.Errorf("decode blob meta: zran context %d dictionary %d+%d beyond dictionary table size %d: %w",
						i, c.DictOffset, c.DictSize, len(m.ZranDicts), ErrCorrupt)
				}
				m.ZranContexts[i] = c
			}
		}
	}
	err = ValidateChunkInfos(cis, ChunkLimits{Features: h.Features, ZranContexts: m.ZranContexts, BatchContexts: m.BatchContexts})
	if err != nil {
		return nil, fmt.Errorf("decode blob meta: %w", err)
	}
	return m, nil
}

// ZranDict returns the inflate dictionary of zran context i.
func (m *Meta) ZranDict(i int) []byte {
	c := m.ZranContexts[i]
	return m.ZranDicts[c.DictOffset : c.DictOffset+uint64(c.DictSize)]
}

// MetaFileSize returns the size of the "<blob_id>.blob.meta" cache file
// for h: the CI data rounded up to 4 KiB plus the header.
func MetaFileSize(h MetaHeader) uint64 {
	return roundUp4K(h.CIUncompressedSize) + MetaHeaderSize
}

// MarshalMetaFile builds the content of the "<blob_id>.blob.meta" cache
// file that nydusd keeps next to a blob: the uncompressed CI data ci,
// zero-padded to 4 KiB, followed by the header h exactly as stored in the
// blob (upstream BlobCompressionContextInfo::read_metadata).
func MarshalMetaFile(h MetaHeader, ci []byte) ([]byte, error) {
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("marshal meta file: %w", err)
	}
	if uint64(len(ci)) != h.CIUncompressedSize {
		return nil, fmt.Errorf("marshal meta file: CI data is %d bytes, header says %d: %w", len(ci), h.CIUncompressedSize, ErrCorrupt)
	}
	out := make([]byte, roundUp4K(uint64(len(ci))), MetaFileSize(h))
	copy(out, ci)
	return h.AppendBinary(out)
}

// ParseMetaFile parses a "<blob_id>.blob.meta" cache file: the header is
// the last 4096 bytes and the file size must be exactly
// [MetaFileSize]. The CI data and contexts are decoded and validated.
func ParseMetaFile(b []byte) (*Meta, error) {
	if len(b) < MetaHeaderSize {
		return nil, fmt.Errorf("parse meta file: %d bytes, shorter than the %d-byte header: %w", len(b), MetaHeaderSize, ErrCorrupt)
	}
	h, err := UnmarshalMetaHeader(b[len(b)-MetaHeaderSize:])
	if err != nil {
		return nil, fmt.Errorf("parse meta file: %w", err)
	}
	if want := MetaFileSize(h); uint64(len(b)) != want {
		return nil, fmt.Errorf("parse meta file: size %d, want %d for ci_uncompressed_size %d: %w", len(b), want, h.CIUncompressedSize, ErrCorrupt)
	}
	m, err := DecodeMeta(h, b[:h.CIUncompressedSize])
	if err != nil {
		return nil, fmt.Errorf("parse meta file: %w", err)
	}
	return m, nil
}
