package blob

import (
	"encoding/binary"
	"fmt"
)

// Sizes and limits of chunk-info (CI) entries (upstream storage/src/meta).
const (
	// ChunkInfoV1Size is the size of a V1 CI entry.
	ChunkInfoV1Size = 16
	// ChunkInfoV2Size is the size of a V2 CI entry.
	ChunkInfoV2Size = 24
	// MaxChunkSize is the largest chunk, compressed or not
	// (RAFS_MAX_CHUNK_SIZE, 16 MiB).
	MaxChunkSize = 16 << 20
	// MaxChunksPerBlob is the largest number of chunks in one blob
	// (RAFS_MAX_CHUNKS_PER_BLOB).
	MaxChunksPerBlob = 1 << 24
	// ChunkAlignment is the alignment of uncompressed chunk offsets; both
	// entry formats can only store multiples of it.
	ChunkAlignment = 4096
)

// Field masks of the on-disk entries (chunk_info_v1.rs, chunk_info_v2.rs).
const (
	compOffsetMask     = 0xff_ffff_ffff   // 40 bits, both versions
	v1UncompOffsetMask = 0xfff_ffff_f000  // bits 12..43, stored in place
	v1SizeLowMask      = 0x0f_ffff        // (size-1) bits 0..19
	v1SizeHighMask     = 0xf0_0000        // (size-1) bits 20..23
	v2UncompOffsetMask = 0xffff_ffff      // offset >> 12
	v2SizeMask         = 0xff_ffff        // 24-bit sizes
	maxCompressedV2    = v2SizeMask       // stored as is, not minus one
	maxUncompOffset    = 1<<44 - 1        // both versions
	chunkFlagCompress  = ChunkFlags(0x01) // carried by ChunkInfo.Compressed
	chunkFlagsKnown    = ChunkFlags(0x1f)
)

// ChunkFlags are the V2-only flag bits of a CI entry, other than
// COMPRESSED (0x01), which is [ChunkInfo.Compressed].
type ChunkFlags uint8

// V2 chunk flags with upstream's values.
const (
	// ChunkZran: the chunk lives in a gzip stream; Data holds the zran
	// context index (high 32 bits) and the offset in its output (low).
	ChunkZran ChunkFlags = 0x02
	// ChunkBatch: the chunk is part of a batch; Data holds the batch
	// index (high 32 bits) and the offset in the batch's uncompressed
	// buffer (low); CompressedSize is 0 and CompressedOffset is the
	// batch's offset.
	ChunkBatch ChunkFlags = 0x04
	// ChunkEncrypted: the chunk data is encrypted.
	ChunkEncrypted ChunkFlags = 0x08
	// ChunkHasCRC32: the low 32 bits of Data are a CRC32 of the chunk.
	ChunkHasCRC32 ChunkFlags = 0x10
)

// ChunkInfo describes where one chunk lives in the compressed blob and in
// the (4 KiB aligned) uncompressed address space of the blob.
type ChunkInfo struct {
	// CompressedOffset is the chunk's offset in the blob (40 bits).
	CompressedOffset uint64
	// CompressedSize is the chunk's stored size. In V1 it is 1..16 MiB; in
	// V2 it is 0..16 MiB-1, 0 only for batch chunks.
	CompressedSize uint32
	// UncompressedOffset is a multiple of 4 KiB below 2^44.
	UncompressedOffset uint64
	// UncompressedSize is 1..16 MiB.
	UncompressedSize uint32
	// Compressed reports whether the stored data is compressed. In V1 it
	// is implied by CompressedSize != UncompressedSize.
	Compressed bool
	// Flags holds the V2 flags other than COMPRESSED; zero in V1. Unknown
	// bits read from disk are kept (upstream only warns about them).
	Flags ChunkFlags
	// Data is the V2 per-chunk word (zran, batch or CRC32 data); zero in
	// V1.
	Data uint64
}

// CompressedEnd returns CompressedOffset + CompressedSize.
func (ci ChunkInfo) CompressedEnd() uint64 {
	return ci.CompressedOffset + uint64(ci.CompressedSize)
}

// UncompressedEnd returns UncompressedOffset + UncompressedSize.
func (ci ChunkInfo) UncompressedEnd() uint64 {
	return ci.UncompressedOffset + uint64(ci.UncompressedSize)
}

// AlignedUncompressedEnd returns UncompressedEnd rounded up to 4 KiB.
func (ci ChunkInfo) AlignedUncompressedEnd() uint64 {
	return roundUp4K(ci.UncompressedEnd())
}

// IsZran reports whether the chunk has the ZRAN flag.
func (ci ChunkInfo) IsZran() bool { return ci.Flags&ChunkZran != 0 }

// IsBatch reports whether the chunk has the BATCH flag.
func (ci ChunkInfo) IsBatch() bool { return ci.Flags&ChunkBatch != 0 }

// IsEncrypted reports whether the chunk has the ENCRYPTED flag.
func (ci ChunkInfo) IsEncrypted() bool { return ci.Flags&ChunkEncrypted != 0 }

// HasCRC32 reports whether the chunk has the HAS_CRC32 flag.
func (ci ChunkInfo) HasCRC32() bool { return ci.Flags&ChunkHasCRC32 != 0 }

// ContextIndex returns the high 32 bits of Data: the zran context index of
// a zran chunk or the batch index of a batch chunk.
func (ci ChunkInfo) ContextIndex() uint32 { return uint32(ci.Data >> 32) }

// ContextOffset returns the low 32 bits of Data: the offset in the zran
// context's output or in the batch's uncompressed buffer.
func (ci ChunkInfo) ContextOffset() uint32 { return uint32(ci.Data) }

// CRC32 returns the low 32 bits of Data, the chunk's CRC32 when HasCRC32.
func (ci ChunkInfo) CRC32() uint32 { return uint32(ci.Data) }

func roundUp4K(v uint64) uint64 {
	return (v + ChunkAlignment - 1) &^ (ChunkAlignment - 1)
}

// Validate checks that ci can be encoded exactly in the V1 or V2 format and
// is self-consistent under upstream's rules.
func (ci ChunkInfo) Validate(v2 bool) error {
	return ci.validate(v2, true)
}

// validate implements Validate; strict also rejects unknown V2 flags,
// which upstream tolerates when reading.
func (ci ChunkInfo) validate(v2, strict bool) error {
	if ci.UncompressedSize == 0 || ci.UncompressedSize > MaxChunkSize {
		return fmt.Errorf("uncompressed size %d not in [1, %d]: %w", ci.UncompressedSize, MaxChunkSize, ErrCorrupt)
	}
	if ci.UncompressedOffset%ChunkAlignment != 0 {
		return fmt.Errorf("uncompressed offset %#x not 4 KiB aligned: %w", ci.UncompressedOffset, ErrCorrupt)
	}
	if ci.UncompressedOffset > maxUncompOffset {
		return fmt.Errorf("uncompressed offset %#x exceeds %#x: %w", ci.UncompressedOffset, uint64(maxUncompOffset), ErrCorrupt)
	}
	if ci.CompressedOffset > compOffsetMask {
		return fmt.Errorf("compressed offset %#x exceeds 40 bits: %w", ci.CompressedOffset, ErrCorrupt)
	}
	if !v2 {
		if ci.CompressedSize == 0 || ci.CompressedSize > MaxChunkSize {
			return fmt.Errorf("compressed size %d not in [1, %d]: %w", ci.CompressedSize, MaxChunkSize, ErrCorrupt)
		}
		if ci.Flags != 0 || ci.Data != 0 {
			return fmt.Errorf("v1 entry with flags %#x and data %#x: %w", uint8(ci.Flags), ci.Data, ErrCorrupt)
		}
		if ci.Compressed != (ci.CompressedSize != ci.UncompressedSize) {
			return fmt.Errorf("v1 entry compressed=%v with compressed size %d and uncompressed size %d: %w",
				ci.Compressed, ci.CompressedSize, ci.UncompressedSize, ErrCorrupt)
		}
		return nil
	}
	if ci.CompressedSize > maxCompressedV2 {
		return fmt.Errorf("compressed size %d exceeds %d: %w", ci.CompressedSize, maxCompressedV2, ErrCorrupt)
	}
	if ci.CompressedSize == 0 && !ci.IsBatch() {
		return fmt.Errorf("compressed size 0 for a non-batch chunk: %w", ErrCorrupt)
	}
	if ci.Flags&chunkFlagCompress != 0 {
		return fmt.Errorf("flags %#x carry COMPRESSED; use the Compressed field: %w", uint8(ci.Flags), ErrCorrupt)
	}
	if strict && ci.Flags&^chunkFlagsKnown != 0 {
		return fmt.Errorf("unknown chunk flags %#x: %w", uint8(ci.Flags&^chunkFlagsKnown), ErrCorrupt)
	}
	if !ci.IsEncrypted() && !ci.Compressed && ci.CompressedSize != ci.UncompressedSize {
		return fmt.Errorf("uncompressed chunk with compressed size %d != uncompressed size %d: %w",
			ci.CompressedSize, ci.UncompressedSize, ErrCorrupt)
	}
	if ci.HasCRC32() && ci.CRC32() == 0 {
		return fmt.Errorf("HAS_CRC32 flag with a zero crc32: %w", ErrCorrupt)
	}
	if strict && ci.IsBatch() && ci.HasCRC32() {
		return fmt.Errorf("batch chunk with HAS_CRC32 (both use the data word): %w", ErrCorrupt)
	}
	if strict && ci.IsZran() && ci.IsBatch() {
		return fmt.Errorf("chunk flagged both zran and batch: %w", ErrCorrupt)
	}
	return nil
}

// AppendChunkInfo appends the 16-byte V1 or 24-byte V2 encoding of ci to
// dst. Fields that do not fit are silently masked, so call
// [ChunkInfo.Validate] first; the [Writer] does.
func AppendChunkInfo(dst []byte, ci ChunkInfo, v2 bool) []byte {
	if !v2 {
		us := uint64(ci.UncompressedSize - 1)
		cs := uint64(ci.CompressedSize - 1)
		uncomp := (us&v1SizeLowMask)<<44 | ci.UncompressedOffset&v1UncompOffsetMask | (us&v1SizeHighMask)>>12
		comp := (cs&v1SizeLowMask)<<44 | (cs&v1SizeHighMask)<<20 | ci.CompressedOffset&compOffsetMask
		dst = binary.LittleEndian.AppendUint64(dst, uncomp)
		return binary.LittleEndian.AppendUint64(dst, comp)
	}
	flags := ci.Flags &^ chunkFlagCompress
	if ci.Compressed {
		flags |= chunkFlagCompress
	}
	uncomp := (ci.UncompressedOffset>>12)&v2UncompOffsetMask |
		(uint64(ci.UncompressedSize-1)&v2SizeMask)<<32 |
		uint64(flags)<<56
	comp := ci.CompressedOffset&compOffsetMask | (uint64(ci.CompressedSize)&v2SizeMask)<<40
	dst = binary.LittleEndian.AppendUint64(dst, uncomp)
	dst = binary.LittleEndian.AppendUint64(dst, comp)
	return binary.LittleEndian.AppendUint64(dst, ci.Data)
}

// decodeChunkInfo decodes one entry; b must hold at least one entry.
func decodeChunkInfo(b []byte, v2 bool) ChunkInfo {
	uncomp := binary.LittleEndian.Uint64(b[0:])
	comp := binary.LittleEndian.Uint64(b[8:])
	if !v2 {
		ci := ChunkInfo{
			CompressedOffset:   comp & compOffsetMask,
			CompressedSize:     uint32((comp&0xf00_0000_0000)>>20|comp>>44) + 1,
			UncompressedOffset: uncomp & v1UncompOffsetMask,
			UncompressedSize:   uint32((uncomp&0xf00)<<12|uncomp>>44) + 1,
		}
		ci.Compressed = ci.CompressedSize != ci.UncompressedSize
		return ci
	}
	flags := ChunkFlags(uncomp >> 56)
	return ChunkInfo{
		CompressedOffset:   comp & compOffsetMask,
		CompressedSize:     uint32(comp >> 40),
		UncompressedOffset: (uncomp & v2UncompOffsetMask) << 12,
		UncompressedSize:   uint32((uncomp>>32)&v2SizeMask) + 1,
		Compressed:         flags&chunkFlagCompress != 0,
		Flags:              flags &^ chunkFlagCompress,
		Data:               binary.LittleEndian.Uint64(b[16:]),
	}
}

// ParseChunkInfo decodes and validates one V1 or V2 entry from the start
// of b.
func ParseChunkInfo(b []byte, v2 bool) (ChunkInfo, error) {
	size := entrySize(v2)
	if len(b) < size {
		return ChunkInfo{}, fmt.Errorf("chunk info: %d bytes, need %d: %w", len(b), size, ErrCorrupt)
	}
	ci := decodeChunkInfo(b, v2)
	if err := ci.validate(v2, false); err != nil {
		return ChunkInfo{}, fmt.Errorf("chunk info: %w", err)
	}
	return ci, nil
}

func entrySize(v2 bool) int {
	if v2 {
		return ChunkInfoV2Size
	}
	return ChunkInfoV1Size
}

// DecodeChunkInfos decodes count V1 or V2 entries from the start of data
// and validates each one. data may be longer than the entries (ZRAN and
// BATCH contexts follow them). Unknown V2 flag bits are accepted and kept,
// as upstream does. Cross-entry and blob-level checks are done by
// [ValidateChunkInfos].
func DecodeChunkInfos(data []byte, v2 bool, count uint32) ([]ChunkInfo, error) {
	if count > MaxChunksPerBlob {
		return nil, fmt.Errorf("decode chunk infos: count %d exceeds %d: %w", count, MaxChunksPerBlob, ErrCorrupt)
	}
	size := entrySize(v2)
	if need := uint64(count) * uint64(size); uint64(len(data)) < need {
		return nil, fmt.Errorf("decode chunk infos: %d entries need %d bytes, have %d: %w", count, need, len(data), ErrCorrupt)
	}
	cis := make([]ChunkInfo, count)
	for i := range cis {
		ci := decodeChunkInfo(data[i*size:], v2)
		if err := ci.validate(v2, false); err != nil {
			return nil, fmt.Errorf("decode chunk info %d at offset %d: %w", i, i*size, err)
		}
		cis[i] = ci
	}
	return cis, nil
}

// ChunkLimits gives the blob-level context for [ValidateChunkInfos]. Zero
// sizes disable the corresponding bound.
type ChunkLimits struct {
	// Features are the blob's features; ZRAN and BATCH chunk flags need
	// the matching feature, and SEPARATE disables the compressed bound.
	Features Features
	// CompressedSize is the size of the chunk-data area of the blob.
	CompressedSize uint64
	// UncompressedSize is the (4 KiB aligned) uncompressed blob size.
	UncompressedSize uint64
	// ZranContexts are the blob's zran contexts, if any.
	ZranContexts []ZranContext
	// BatchContexts are the blob's batch contexts, if any.
	BatchContexts []BatchContext
}

// ValidateChunkInfos checks the entries against the blob: chunk data
// within the data area, uncompressed ranges within the uncompressed size,
// and zran/batch references within their context tables (upstream
// BlobChunkInfoV2Ondisk::validate).
func ValidateChunkInfos(cis []ChunkInfo, lim ChunkLimits) error {
	for i, ci := range cis {
		if err := validateChunkAgainst(ci, lim); err != nil {
			return fmt.Errorf("chunk info %d: %w", i, err)
		}
	}
	return nil
}

func validateChunkAgainst(ci ChunkInfo, lim ChunkLimits) error {
	if lim.UncompressedSize != 0 && ci.UncompressedEnd() > lim.UncompressedSize {
		return fmt.Errorf("uncompressed end %#x beyond blob uncompressed size %#x: %w", ci.UncompressedEnd(), lim.UncompressedSize, ErrCorrupt)
	}
	compressedSize := uint64(ci.CompressedSize)
	switch {
	case ci.IsZran():
		if !lim.Features.Has(FeatureZran) {
			return fmt.Errorf("zran chunk in a blob without the zran feature: %w", ErrCorrupt)
		}
		idx := ci.ContextIndex()
		if uint64(idx) >= uint64(len(lim.ZranContexts)) {
			return fmt.Errorf("zran index %d out of range [0, %d): %w", idx, len(lim.ZranContexts), ErrCorrupt)
		}
		out := uint64(lim.ZranContexts[idx].OutLen)
		if off := uint64(ci.ContextOffset()); off >= out || off+uint64(ci.UncompressedSize) > out {
			return fmt.Errorf("zran range %#x+%#x outside context %d output size %#x: %w", off, ci.UncompressedSize, idx, out, ErrCorrupt)
		}
	case ci.IsBatch():
		if !lim.Features.Has(FeatureBatch) {
			return fmt.Errorf("batch chunk in a blob without the batch feature: %w", ErrCorrupt)
		}
		idx := ci.ContextIndex()
		if uint64(idx) >= uint64(len(lim.BatchContexts)) {
			return fmt.Errorf("batch index %d out of range [0, %d): %w", idx, len(lim.BatchContexts), ErrCorrupt)
		}
		bc := lim.BatchContexts[idx]
		if bc.CompressedSize > bc.UncompressedSize {
			return fmt.Errorf("batch %d compressed size %d exceeds its uncompressed size %d: %w", idx, bc.CompressedSize, bc.UncompressedSize, ErrCorrupt)
		}
		if end := uint64(ci.ContextOffset()) + uint64(ci.UncompressedSize); end > uint64(bc.UncompressedSize) {
			return fmt.Errorf("batch range end %d beyond batch %d size %d: %w", end, idx, bc.UncompressedSize, ErrCorrupt)
		}
		compressedSize = uint64(bc.CompressedSize)
	}
	if lim.CompressedSize != 0 && !lim.Features.Has(FeatureSeparate) && !ci.IsZran() {
		if end := ci.CompressedOffset + compressedSize; end > lim.CompressedSize {
			return fmt.Errorf("compressed end %#x beyond chunk data size %#x: %w", end, lim.CompressedSize, ErrCorrupt)
		}
	}
	return nil
}
