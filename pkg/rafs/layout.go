package rafs

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
)

// On-disk constants of RAFS v6 (docs/format.md §2).
const (
	// SuperOffset is the byte offset of the EROFS superblock.
	SuperOffset = 1024
	// SuperSize is the size of the EROFS superblock.
	SuperSize = 128
	// ExtOffset is the byte offset of the Nydus extended superblock.
	ExtOffset = SuperOffset + SuperSize
	// ExtSize is the size of the Nydus extended superblock.
	ExtSize = 256
	// DevSlotOffset is the byte offset of the first device slot.
	DevSlotOffset = 1408
	// DevSlotSize is the size of one device slot.
	DevSlotSize = 128
	// BlobEntrySize is the size of one blob table entry.
	BlobEntrySize = 256
	// ChunkInfoSize is the size of one entry of the trailing chunk table.
	ChunkInfoSize = 80
	// BlockSize is the EROFS block size used by RAFS v6 (4 KiB).
	BlockSize = 4096
	// blockBits is log2(BlockSize).
	blockBits = 12
	// SlotSize is the EROFS inode slot size; nid = offset / SlotSize.
	SlotSize = 32
	// CompactInodeSize is the size of a compact EROFS inode.
	CompactInodeSize = 32
	// ExtendedInodeSize is the size of an extended EROFS inode.
	ExtendedInodeSize = 64
	// DirentSize is the size of one EROFS directory entry (without name).
	DirentSize = 12
	// ChunkAddrSize is the size of one chunk index entry.
	ChunkAddrSize = 8

	// Magic is the EROFS superblock magic.
	Magic = 0xE0F5E1E2
	// FeatureCompatRafsV6 marks an EROFS image as a RAFS v6 bootstrap.
	FeatureCompatRafsV6 = 0x40000000
	// FeatureIncompatChunkedFile is EROFS_FEATURE_INCOMPAT_CHUNKED_FILE.
	FeatureIncompatChunkedFile = 0x4
	// FeatureIncompatDeviceTable is EROFS_FEATURE_INCOMPAT_DEVICE_TABLE.
	FeatureIncompatDeviceTable = 0x8

	// DefaultChunkSize is the default chunk size (1 MiB).
	DefaultChunkSize = 0x100000
	// MinChunkSize is the smallest chunk size allowed.
	MinChunkSize = 0x1000
	// MaxChunkSize is the largest chunk size allowed.
	MaxChunkSize = 0x1000000
	// MaxBlobs is the largest number of blobs one bootstrap may reference.
	MaxBlobs = 254
	// MaxChunksPerBlob is the largest chunk count of one blob (2^24).
	MaxChunksPerBlob = 1 << 24
	// MaxMetadataSize bounds the size of a bootstrap this package opens.
	MaxMetadataSize = 1 << 31
	// PlaceholderBlobID is the blob id an inline-meta layer bootstrap
	// carries before merge replaces it with the layer digest.
	PlaceholderBlobID = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
)

// EROFS inode data layouts (i_format bits 1..3).
const (
	LayoutFlatPlain  = 0
	LayoutFlatInline = 2
	LayoutChunkBased = 4
)

// chunkFormatIndexes is EROFS_CHUNK_FORMAT_INDEXES.
const chunkFormatIndexes = 0x20

// Flags are the RafsSuperFlags stored in the extended superblock.
type Flags uint64

// RafsSuperFlags bits (docs/format.md §2.3).
const (
	FlagCompressionNone Flags = 0x1
	FlagCompressionLZ4  Flags = 0x2
	FlagHashBlake3      Flags = 0x4
	FlagHashSHA256      Flags = 0x8
	FlagExplicitUIDGID  Flags = 0x10
	FlagHasXattr        Flags = 0x20
	FlagCompressionGzip Flags = 0x40
	FlagCompressionZstd Flags = 0x80
	FlagInlinedDigest   Flags = 0x100
	FlagTarfsMode       Flags = 0x200
	FlagEncryptionNone  Flags = 0x0100_0000
	FlagEncryptionAES   Flags = 0x0200_0000
)

const compressionFlags = FlagCompressionNone | FlagCompressionLZ4 | FlagCompressionGzip | FlagCompressionZstd
const hashFlags = FlagHashBlake3 | FlagHashSHA256

// Compressor returns the filesystem-wide compression algorithm.
func (f Flags) Compressor() compress.Algorithm {
	switch {
	case f&FlagCompressionLZ4 != 0:
		return compress.Lz4Block
	case f&FlagCompressionGzip != 0:
		return compress.GZip
	case f&FlagCompressionZstd != 0:
		return compress.Zstd
	}
	return compress.None
}

// Digester returns the filesystem-wide chunk digest algorithm.
func (f Flags) Digester() digester.Algorithm {
	if f&FlagHashSHA256 != 0 {
		return digester.Sha256
	}
	return digester.Blake3
}

// FlagsFor returns the compression and hash flags for the given algorithms.
func FlagsFor(c compress.Algorithm, d digester.Algorithm) Flags {
	var f Flags
	switch c {
	case compress.Lz4Block:
		f |= FlagCompressionLZ4
	case compress.GZip:
		f |= FlagCompressionGzip
	case compress.Zstd:
		f |= FlagCompressionZstd
	default:
		f |= FlagCompressionNone
	}
	if d == digester.Sha256 {
		f |= FlagHashSHA256
	} else {
		f |= FlagHashBlake3
	}
	return f
}

// Superblock is the 128-byte EROFS superblock at offset 1024.
type Superblock struct {
	Magic           uint32
	Checksum        uint32
	FeatureCompat   uint32
	BlkSzBits       uint8
	ExtSlots        uint8
	RootNid         uint16
	Inos            uint64
	BuildTime       uint64
	BuildTimeNsec   uint32
	Blocks          uint32
	MetaBlkAddr     uint32
	XattrBlkAddr    uint32
	UUID            [16]byte
	VolumeName      [16]byte
	FeatureIncompat uint32
	U               uint16
	ExtraDevices    uint16
	DevtSlotOff     uint16
}

func (s *Superblock) marshal(b []byte) {
	le := binary.LittleEndian
	le.PutUint32(b[0:], s.Magic)
	le.PutUint32(b[4:], s.Checksum)
	le.PutUint32(b[8:], s.FeatureCompat)
	b[12] = s.BlkSzBits
	b[13] = s.ExtSlots
	le.PutUint16(b[14:], s.RootNid)
	le.PutUint64(b[16:], s.Inos)
	le.PutUint64(b[24:], s.BuildTime)
	le.PutUint32(b[32:], s.BuildTimeNsec)
	le.PutUint32(b[36:], s.Blocks)
	le.PutUint32(b[40:], s.MetaBlkAddr)
	le.PutUint32(b[44:], s.XattrBlkAddr)
	copy(b[48:64], s.UUID[:])
	copy(b[64:80], s.VolumeName[:])
	le.PutUint32(b[80:], s.FeatureIncompat)
	le.PutUint16(b[84:], s.U)
	le.PutUint16(b[86:], s.ExtraDevices)
	le.PutUint16(b[88:], s.DevtSlotOff)
}

func unmarshalSuperblock(b []byte) Superblock {
	le := binary.LittleEndian
	var s Superblock
	s.Magic = le.Uint32(b[0:])
	s.Checksum = le.Uint32(b[4:])
	s.FeatureCompat = le.Uint32(b[8:])
	s.BlkSzBits = b[12]
	s.ExtSlots = b[13]
	s.RootNid = le.Uint16(b[14:])
	s.Inos = le.Uint64(b[16:])
	s.BuildTime = le.Uint64(b[24:])
	s.BuildTimeNsec = le.Uint32(b[32:])
	s.Blocks = le.Uint32(b[36:])
	s.MetaBlkAddr = le.Uint32(b[40:])
	s.XattrBlkAddr = le.Uint32(b[44:])
	copy(s.UUID[:], b[48:64])
	copy(s.VolumeName[:], b[64:80])
	s.FeatureIncompat = le.Uint32(b[80:])
	s.U = le.Uint16(b[84:])
	s.ExtraDevices = le.Uint16(b[86:])
	s.DevtSlotOff = le.Uint16(b[88:])
	return s
}

// SuperblockExt is the 256-byte Nydus extended superblock at offset 1152.
type SuperblockExt struct {
	Flags             Flags
	BlobTableOffset   uint64
	BlobTableSize     uint32
	ChunkSize         uint32
	ChunkTableOffset  uint64
	ChunkTableSize    uint64
	PrefetchTableOff  uint64
	PrefetchTableSize uint32
}

func (e *SuperblockExt) marshal(b []byte) {
	le := binary.LittleEndian
	le.PutUint64(b[0:], uint64(e.Flags))
	le.PutUint64(b[8:], e.BlobTableOffset)
	le.PutUint32(b[16:], e.BlobTableSize)
	le.PutUint32(b[20:], e.ChunkSize)
	le.PutUint64(b[24:], e.ChunkTableOffset)
	le.PutUint64(b[32:], e.ChunkTableSize)
	le.PutUint64(b[40:], e.PrefetchTableOff)
	le.PutUint32(b[48:], e.PrefetchTableSize)
}

func unmarshalExt(b []byte) SuperblockExt {
	le := binary.LittleEndian
	return SuperblockExt{
		Flags:             Flags(le.Uint64(b[0:])),
		BlobTableOffset:   le.Uint64(b[8:]),
		BlobTableSize:     le.Uint32(b[16:]),
		ChunkSize:         le.Uint32(b[20:]),
		ChunkTableOffset:  le.Uint64(b[24:]),
		ChunkTableSize:    le.Uint64(b[32:]),
		PrefetchTableOff:  le.Uint64(b[40:]),
		PrefetchTableSize: le.Uint32(b[48:]),
	}
}

// DeviceSlot is one EROFS device slot; RAFS stores one per blob.
type DeviceSlot struct {
	BlobID        string
	Blocks        uint32
	MappedBlkAddr uint32
}

// BlobInfo is one entry of the RAFS v6 blob table (docs/format.md §2.5).
type BlobInfo struct {
	// BlobID is the 64-character hex id of the blob.
	BlobID             string
	Index              uint32
	ChunkSize          uint32
	ChunkCount         uint32
	Compressor         compress.Algorithm
	Digester           digester.Algorithm
	Features           blob.Features
	CompressedSize     uint64
	UncompressedSize   uint64
	TOCSize            uint32
	CICompressor       compress.Algorithm
	CIOffset           uint64
	CICompressedSize   uint64
	CIUncompressedSize uint64
	TOCDigest          [32]byte
	MetaDigest         [32]byte
	MetaSize           uint64
	CipherIV           [8]byte
	CipherAlgo         uint32
}

func (bi *BlobInfo) marshal(b []byte) {
	le := binary.LittleEndian
	copy(b[0:64], bi.BlobID)
	le.PutUint32(b[64:], bi.Index)
	le.PutUint32(b[68:], bi.ChunkSize)
	le.PutUint32(b[72:], bi.ChunkCount)
	le.PutUint32(b[76:], uint32(bi.Compressor))
	le.PutUint32(b[80:], uint32(bi.Digester))
	le.PutUint32(b[84:], uint32(bi.Features))
	le.PutUint64(b[88:], bi.CompressedSize)
	le.PutUint64(b[96:], bi.UncompressedSize)
	le.PutUint32(b[104:], bi.TOCSize)
	le.PutUint32(b[108:], uint32(bi.CICompressor))
	le.PutUint64(b[112:], bi.CIOffset)
	le.PutUint64(b[120:], bi.CICompressedSize)
	le.PutUint64(b[128:], bi.CIUncompressedSize)
	copy(b[136:168], bi.TOCDigest[:])
	copy(b[168:200], bi.MetaDigest[:])
	le.PutUint64(b[200:], bi.MetaSize)
	copy(b[208:216], bi.CipherIV[:])
	le.PutUint32(b[216:], bi.CipherAlgo)
}

func unmarshalBlobInfo(b []byte) BlobInfo {
	le := binary.LittleEndian
	var bi BlobInfo
	bi.BlobID = trimNUL(b[0:64])
	bi.Index = le.Uint32(b[64:])
	bi.ChunkSize = le.Uint32(b[68:])
	bi.ChunkCount = le.Uint32(b[72:])
	bi.Compressor = compress.Algorithm(le.Uint32(b[76:]))
	bi.Digester = digester.Algorithm(le.Uint32(b[80:]))
	bi.Features = blob.Features(le.Uint32(b[84:]))
	bi.CompressedSize = le.Uint64(b[88:])
	bi.UncompressedSize = le.Uint64(b[96:])
	bi.TOCSize = le.Uint32(b[104:])
	bi.CICompressor = compress.Algorithm(le.Uint32(b[108:]))
	bi.CIOffset = le.Uint64(b[112:])
	bi.CICompressedSize = le.Uint64(b[120:])
	bi.CIUncompressedSize = le.Uint64(b[128:])
	copy(bi.TOCDigest[:], b[136:168])
	copy(bi.MetaDigest[:], b[168:200])
	bi.MetaSize = le.Uint64(b[200:])
	copy(bi.CipherIV[:], b[208:216])
	bi.CipherAlgo = le.Uint32(b[216:])
	return bi
}

// validate applies the blob table rules of upstream's RafsV6Blob::validate.
func (bi *BlobInfo) validate(idx uint32, chunkSize uint32) error {
	if len(bi.BlobID) != 64 {
		return fmt.Errorf("blob table entry %d: blob id %q is not 64 characters", idx, bi.BlobID)
	}
	if bi.Index != idx {
		return fmt.Errorf("blob table entry %d: blob_index field is %d", idx, bi.Index)
	}
	if !validChunkSize(uint64(bi.ChunkSize)) || bi.ChunkSize != chunkSize {
		return fmt.Errorf("blob table entry %d: chunk_size %#x does not match filesystem chunk size %#x", idx, bi.ChunkSize, chunkSize)
	}
	if bi.ChunkCount > MaxChunksPerBlob {
		return fmt.Errorf("blob table entry %d: chunk_count %d exceeds %d", idx, bi.ChunkCount, MaxChunksPerBlob)
	}
	if bi.Compressor > compress.Zstd || bi.CICompressor > compress.Zstd {
		return fmt.Errorf("blob table entry %d: unknown compression algorithm %d/%d", idx, bi.Compressor, bi.CICompressor)
	}
	if bi.Digester > digester.Sha256 {
		return fmt.Errorf("blob table entry %d: unknown digest algorithm %d", idx, bi.Digester)
	}
	if bi.CipherAlgo > 1 {
		return fmt.Errorf("blob table entry %d: unsupported cipher algorithm %d", idx, bi.CipherAlgo)
	}
	if bi.UncompressedSize > 1<<44 || bi.CompressedSize > 1<<40 {
		return fmt.Errorf("blob table entry %d: blob size out of range", idx)
	}
	if err := bi.Features.Validate(); err != nil {
		return fmt.Errorf("blob table entry %d: %w", idx, err)
	}
	return nil
}

// ChunkInfo is one 80-byte entry of the trailing chunk table
// (RafsV5ChunkInfo), describing one chunk of one blob.
type ChunkInfo struct {
	Digest             digester.Digest
	BlobIndex          uint32
	Flags              uint32
	CompressedSize     uint32
	UncompressedSize   uint32
	CompressedOffset   uint64
	UncompressedOffset uint64
	FileOffset         uint64
	// Index is the chunk's index in its blob's CI table.
	Index uint32
	CRC32 uint32
}

// Chunk flags of ChunkInfo.Flags.
const (
	ChunkCompressed = 0x1
	ChunkEncrypted  = 0x4
	ChunkBatch      = 0x8
	ChunkHasCRC32   = 0x10
)

// IsCompressed reports whether the chunk's data is stored compressed.
func (c *ChunkInfo) IsCompressed() bool { return c.Flags&ChunkCompressed != 0 }

func (c *ChunkInfo) marshal(b []byte) {
	le := binary.LittleEndian
	copy(b[0:32], c.Digest[:])
	le.PutUint32(b[32:], c.BlobIndex)
	le.PutUint32(b[36:], c.Flags)
	le.PutUint32(b[40:], c.CompressedSize)
	le.PutUint32(b[44:], c.UncompressedSize)
	le.PutUint64(b[48:], c.CompressedOffset)
	le.PutUint64(b[56:], c.UncompressedOffset)
	le.PutUint64(b[64:], c.FileOffset)
	le.PutUint32(b[72:], c.Index)
	le.PutUint32(b[76:], c.CRC32)
}

func unmarshalChunkInfo(b []byte) ChunkInfo {
	le := binary.LittleEndian
	var c ChunkInfo
	copy(c.Digest[:], b[0:32])
	c.BlobIndex = le.Uint32(b[32:])
	c.Flags = le.Uint32(b[36:])
	c.CompressedSize = le.Uint32(b[40:])
	c.UncompressedSize = le.Uint32(b[44:])
	c.CompressedOffset = le.Uint64(b[48:])
	c.UncompressedOffset = le.Uint64(b[56:])
	c.FileOffset = le.Uint64(b[64:])
	c.Index = le.Uint32(b[72:])
	c.CRC32 = le.Uint32(b[76:])
	return c
}

// ChunkAddr is one 8-byte entry of a chunk-based inode's index array.
type ChunkAddr struct {
	// BlobIndex is the blob table index (the on-disk device id minus one).
	BlobIndex uint32
	// CIIndex is the chunk's 24-bit index in its blob's CI table.
	CIIndex uint32
	// BlkAddr is the chunk's uncompressed offset in its blob, in blocks.
	BlkAddr uint32
}

// Hole is the EROFS block address that marks an unmapped chunk.
const Hole = 0xFFFFFFFF

func (c ChunkAddr) marshal(b []byte) {
	le := binary.LittleEndian
	le.PutUint16(b[0:], uint16(c.CIIndex))
	le.PutUint16(b[2:], uint16((c.BlobIndex+1)&0xff)|uint16((c.CIIndex>>16)&0xff)<<8)
	le.PutUint32(b[4:], c.BlkAddr)
}

// unmarshalChunkAddr decodes an index entry; ok is false when the device
// id is zero (invalid for RAFS).
func unmarshalChunkAddr(b []byte) (c ChunkAddr, ok bool) {
	le := binary.LittleEndian
	lo := le.Uint16(b[0:])
	hi := le.Uint16(b[2:])
	dev := uint32(hi & 0xff)
	c.CIIndex = uint32(hi>>8)<<16 | uint32(lo)
	c.BlkAddr = le.Uint32(b[4:])
	if dev == 0 {
		return c, false
	}
	c.BlobIndex = dev - 1
	return c, true
}

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// xattr name prefixes and their EROFS indexes.
var xattrPrefixes = []struct {
	prefix string
	index  uint8
}{
	{"user.", 1},
	{"system.posix_acl_access", 2},
	{"system.posix_acl_default", 3},
	{"trusted.", 4},
	{"security.", 6},
}

// XattrIndex returns the EROFS name index and prefix length for name, or
// ok=false when the namespace cannot be stored in RAFS v6.
func XattrIndex(name string) (index uint8, prefixLen int, ok bool) {
	for _, p := range xattrPrefixes {
		if len(name) >= len(p.prefix) && name[:len(p.prefix)] == p.prefix {
			return p.index, len(p.prefix), true
		}
	}
	return 0, 0, false
}

func xattrPrefix(index uint8) (string, bool) {
	for _, p := range xattrPrefixes {
		if p.index == index {
			return p.prefix, true
		}
	}
	return "", false
}

// xattrBodySize returns the aligned in-inode size of xattrs (0 if none).
func xattrBodySize(xs []Xattr) int {
	if len(xs) == 0 {
		return 0
	}
	size := 12
	for _, x := range xs {
		_, pl, _ := XattrIndex(x.Name)
		size += 4 + len(x.Name) - pl + len(x.Value)
		size = alignUp(size, 4)
	}
	return size
}

func validChunkSize(v uint64) bool {
	return v >= MinChunkSize && v <= MaxChunkSize && bits.OnesCount64(v) == 1
}

func alignUp(v, a int) int { return (v + a - 1) / a * a }

func alignUp64(v, a uint64) uint64 { return (v + a - 1) / a * a }

func trimNUL(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// EROFS directory entry file types.
const (
	ftUnknown = 0
	ftReg     = 1
	ftDir     = 2
	ftChr     = 3
	ftBlk     = 4
	ftFifo    = 5
	ftSock    = 6
	ftSymlink = 7
)

// Mode type bits (S_IFMT and friends), as stored in i_mode.
const (
	ModeType    = 0o170000
	ModeSocket  = 0o140000
	ModeSymlink = 0o120000
	ModeRegular = 0o100000
	ModeBlock   = 0o060000
	ModeDir     = 0o040000
	ModeChar    = 0o020000
	ModeFifo    = 0o010000
)

// TypeName names the file type of mode for messages: "regular file",
// "directory", "symlink", "character device", "block device", "fifo",
// "socket", or "mode 0o…" for anything else.
func TypeName(mode uint32) string {
	switch mode & ModeType {
	case ModeDir:
		return "directory"
	case ModeRegular:
		return "regular file"
	case ModeSymlink:
		return "symlink"
	case ModeChar:
		return "character device"
	case ModeBlock:
		return "block device"
	case ModeFifo:
		return "fifo"
	case ModeSocket:
		return "socket"
	}
	return fmt.Sprintf("mode %#o", mode)
}

func fileType(mode uint32) uint8 {
	switch mode & ModeType {
	case ModeRegular:
		return ftReg
	case ModeDir:
		return ftDir
	case ModeChar:
		return ftChr
	case ModeBlock:
		return ftBlk
	case ModeFifo:
		return ftFifo
	case ModeSocket:
		return ftSock
	case ModeSymlink:
		return ftSymlink
	}
	return ftUnknown
}
