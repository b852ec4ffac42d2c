package rafs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/nydus-go/nydus/pkg/errdefs"
)

// ErrNotRafsV6 is returned by Open for input that is not a RAFS v6
// bootstrap (for example a RAFS v5 one).
var ErrNotRafsV6 = errors.New("not a RAFS v6 bootstrap")

// v5Magic is the magic of a RAFS v5 superblock at offset 0.
const v5Magic = 0x52414653

// Reader gives read access to a RAFS v6 bootstrap.
//
// A Reader is safe for concurrent use if its io.ReaderAt is.
type Reader struct {
	r    io.ReaderAt
	size int64

	// Super is the EROFS superblock.
	Super Superblock
	// Ext is the Nydus extended superblock.
	Ext SuperblockExt
	// Devices are the EROFS device slots.
	Devices []DeviceSlot
	// Blobs is the blob table.
	Blobs []BlobInfo
	// Prefetch lists the nids of the prefetch table.
	Prefetch []uint64

	metaAddr uint64
}

// Open parses and validates the superblocks and tables of a bootstrap of
// the given size. It reads only fixed-size headers and tables; inodes are
// read on demand.
func Open(ctx context.Context, r io.ReaderAt, size int64) (*Reader, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if size < BlockSize {
		if size >= 4 {
			var m [4]byte
			if _, err := r.ReadAt(m[:], 0); err == nil && binary.LittleEndian.Uint32(m[:]) == v5Magic {
				return nil, fmt.Errorf("%w: RAFS v5 bootstrap (only v6 is supported)", ErrNotRafsV6)
			}
		}
		return nil, fmt.Errorf("bootstrap size %d is smaller than one block (%d)", size, BlockSize)
	}
	if size > MaxMetadataSize {
		return nil, fmt.Errorf("bootstrap size %d exceeds the %d byte limit", size, int64(MaxMetadataSize))
	}
	head := make([]byte, BlockSize)
	if _, err := r.ReadAt(head, 0); err != nil {
		return nil, fmt.Errorf("read superblock: %w", err)
	}
	if binary.LittleEndian.Uint32(head[0:]) == v5Magic {
		return nil, fmt.Errorf("%w: RAFS v5 bootstrap (only v6 is supported)", ErrNotRafsV6)
	}
	rd := &Reader{r: r, size: size}
	rd.Super = unmarshalSuperblock(head[SuperOffset:])
	rd.Ext = unmarshalExt(head[ExtOffset:])
	if err := rd.validate(); err != nil {
		return nil, err
	}
	// Device slots.
	n := int(rd.Super.ExtraDevices)
	slots := make([]byte, n*DevSlotSize)
	if _, err := r.ReadAt(slots, DevSlotOffset); err != nil {
		return nil, fmt.Errorf("read device slots: %w", err)
	}
	for i := 0; i < n; i++ {
		s := slots[i*DevSlotSize:]
		rd.Devices = append(rd.Devices, DeviceSlot{
			BlobID:        trimNUL(s[0:64]),
			Blocks:        binary.LittleEndian.Uint32(s[64:]),
			MappedBlkAddr: binary.LittleEndian.Uint32(s[68:]),
		})
	}
	// Blob table.
	nb := int(rd.Ext.BlobTableSize / BlobEntrySize)
	bt := make([]byte, rd.Ext.BlobTableSize)
	if _, err := r.ReadAt(bt, int64(rd.Ext.BlobTableOffset)); err != nil {
		return nil, fmt.Errorf("read blob table at %#x: %w", rd.Ext.BlobTableOffset, err)
	}
	for i := 0; i < nb; i++ {
		bi := unmarshalBlobInfo(bt[i*BlobEntrySize:])
		if err := bi.validate(uint32(i), rd.Ext.ChunkSize); err != nil {
			return nil, err
		}
		rd.Blobs = append(rd.Blobs, bi)
	}
	if nb != n {
		return nil, fmt.Errorf("superblock has %d extra devices but the blob table has %d entries", n, nb)
	}
	// Prefetch table.
	if rd.Ext.PrefetchTableSize > 0 && rd.Ext.PrefetchTableOff != 0 {
		pt := make([]byte, rd.Ext.PrefetchTableSize)
		if _, err := r.ReadAt(pt, int64(rd.Ext.PrefetchTableOff)); err != nil {
			return nil, fmt.Errorf("read prefetch table: %w", err)
		}
		for i := 0; i+4 <= len(pt); i += 4 {
			rd.Prefetch = append(rd.Prefetch, uint64(binary.LittleEndian.Uint32(pt[i:])))
		}
	}
	// The root must be a directory.
	root, err := rd.Inode(ctx, rd.RootNid())
	if err != nil {
		return nil, fmt.Errorf("root inode: %w", err)
	}
	if !root.IsDir() {
		return nil, fmt.Errorf("root inode (nid %d) is not a directory", rd.RootNid())
	}
	return rd, nil
}

type span struct {
	name     string
	off, len uint64
}

func (rd *Reader) validate() error {
	s, e := &rd.Super, &rd.Ext
	size := uint64(rd.size)
	if s.Magic != Magic {
		return fmt.Errorf("bad EROFS magic %#x at offset %d (want %#x)", s.Magic, SuperOffset, uint32(Magic))
	}
	if size%BlockSize != 0 {
		return fmt.Errorf("bootstrap size %d is not a multiple of %d", size, BlockSize)
	}
	if s.Checksum != 0 {
		return fmt.Errorf("superblock field s_checksum is %#x, want 0", s.Checksum)
	}
	if s.BlkSzBits != blockBits {
		return fmt.Errorf("superblock field s_blkszbits is %d, only 12 (4096) is supported", s.BlkSzBits)
	}
	if s.ExtSlots != 0 {
		return fmt.Errorf("superblock field s_extslots is %d, want 0", s.ExtSlots)
	}
	if s.Inos == 0 {
		return errors.New("superblock field s_inos is 0")
	}
	if s.U != 0 {
		return fmt.Errorf("superblock field s_u is %d, want 0", s.U)
	}
	if s.XattrBlkAddr != 0 {
		return fmt.Errorf("superblock field s_xattr_blkaddr is %d: shared xattrs are not supported", s.XattrBlkAddr)
	}
	if s.FeatureIncompat != FeatureIncompatChunkedFile|FeatureIncompatDeviceTable {
		return fmt.Errorf("superblock field s_feature_incompat is %#x, want %#x", s.FeatureIncompat, FeatureIncompatChunkedFile|FeatureIncompatDeviceTable)
	}
	if s.FeatureCompat&FeatureCompatRafsV6 == 0 {
		return fmt.Errorf("superblock field s_feature_compat %#x lacks the RAFS v6 bit %#x", s.FeatureCompat, FeatureCompatRafsV6)
	}
	if uint64(s.DevtSlotOff)*DevSlotSize != DevSlotOffset {
		return fmt.Errorf("superblock field s_devt_slotoff is %d, want %d", s.DevtSlotOff, DevSlotOffset/DevSlotSize)
	}
	if s.ExtraDevices > MaxBlobs {
		return fmt.Errorf("superblock field s_extra_devices is %d, limit %d", s.ExtraDevices, MaxBlobs)
	}
	if s.ExtraDevices == 0 && s.Blocks != 0 && s.Blocks != 4096 {
		return fmt.Errorf("superblock field s_blocks is %d with no extra devices", s.Blocks)
	}
	rd.metaAddr = uint64(s.MetaBlkAddr) * BlockSize
	if rd.metaAddr > size {
		return fmt.Errorf("superblock field s_meta_blkaddr %d points past the end (%d bytes)", s.MetaBlkAddr, size)
	}
	if n := e.Flags & compressionFlags; n == 0 || n&(n-1) != 0 {
		return fmt.Errorf("extended superblock flags %#x: need exactly one compression algorithm", uint64(e.Flags))
	}
	if n := e.Flags & hashFlags; n == 0 || n&(n-1) != 0 {
		return fmt.Errorf("extended superblock flags %#x: need exactly one digest algorithm", uint64(e.Flags))
	}
	if !validChunkSize(uint64(e.ChunkSize)) {
		return fmt.Errorf("extended superblock field s_chunk_size %#x is not a power of two in [4 KiB, 16 MiB]", e.ChunkSize)
	}
	devEnd := uint64(DevSlotOffset) + uint64(s.ExtraDevices)*DevSlotSize
	bo, bs := e.BlobTableOffset, uint64(e.BlobTableSize)
	if bo%BlockSize != 0 || bo < BlockSize || bo < devEnd || bs%BlobEntrySize != 0 || bo+bs > size {
		return fmt.Errorf("extended superblock: invalid blob table offset %#x / size %#x", bo, bs)
	}
	spans := []span{{"blob table", bo, bs}}
	if e.ChunkTableSize > 0 {
		co, cs := e.ChunkTableOffset, e.ChunkTableSize
		if co%BlockSize != 0 || co < BlockSize || co < devEnd || cs%ChunkInfoSize != 0 || co+cs < co || co+cs > size {
			return fmt.Errorf("extended superblock: invalid chunk table offset %#x / size %#x", co, cs)
		}
		spans = append(spans, span{"chunk table", co, cs})
	}
	if e.PrefetchTableSize > 0 && e.PrefetchTableOff != 0 {
		po, ps := e.PrefetchTableOff, uint64(e.PrefetchTableSize)
		if po < BlockSize || ps%4 != 0 || po < devEnd || po+ps > size {
			return fmt.Errorf("extended superblock: invalid prefetch table offset %#x / size %#x", po, ps)
		}
		spans = append(spans, span{"prefetch table", po, ps})
	}
	for i := range spans {
		for j := i + 1; j < len(spans); j++ {
			a, b := spans[i], spans[j]
			if a.len > 0 && b.len > 0 && a.off < b.off+b.len && b.off < a.off+a.len {
				return fmt.Errorf("extended superblock: %s overlaps %s", a.name, b.name)
			}
		}
	}
	return nil
}

// Size returns the size of the bootstrap in bytes.
func (rd *Reader) Size() int64 { return rd.size }

// RootNid returns the nid of the root directory.
func (rd *Reader) RootNid() uint64 { return uint64(rd.Super.RootNid) }

// ChunkSize returns the filesystem-wide chunk size.
func (rd *Reader) ChunkSize() uint32 { return rd.Ext.ChunkSize }

// InodeOffset returns the byte offset of the inode with the given nid.
func (rd *Reader) InodeOffset(nid uint64) uint64 { return rd.metaAddr + nid*SlotSize }

// DiskInode is an inode as read from the bootstrap.
type DiskInode struct {
	Nid       uint64
	Compact   bool
	Layout    uint16
	Mode      uint32
	Nlink     uint32
	Size      uint64
	U         uint32
	Ino       uint32
	UID, GID  uint32
	Mtime     uint64
	MtimeNsec uint32
	// Xattrs are the inline extended attributes.
	Xattrs []Xattr
	// bodyOff is where inline data (tail or chunk indexes) starts.
	bodyOff uint64
}

// IsDir reports whether the inode is a directory.
func (i *DiskInode) IsDir() bool { return i.Mode&ModeType == ModeDir }

// IsRegular reports whether the inode is a regular file.
func (i *DiskInode) IsRegular() bool { return i.Mode&ModeType == ModeRegular }

// IsSymlink reports whether the inode is a symbolic link.
func (i *DiskInode) IsSymlink() bool { return i.Mode&ModeType == ModeSymlink }

// Rdev returns the device number of a character or block device.
func (i *DiskInode) Rdev() uint32 {
	switch i.Mode & ModeType {
	case ModeChar, ModeBlock:
		return i.U
	}
	return 0
}

func (rd *Reader) readAt(b []byte, off uint64, what string) error {
	if off > uint64(rd.size) || uint64(len(b)) > uint64(rd.size)-off {
		return fmt.Errorf("%s at offset %#x (%d bytes) is outside the bootstrap (%d bytes)", what, off, len(b), rd.size)
	}
	if _, err := rd.r.ReadAt(b, int64(off)); err != nil {
		return fmt.Errorf("read %s at offset %#x: %w", what, off, err)
	}
	return nil
}

// Inode reads the inode with the given nid.
func (rd *Reader) Inode(ctx context.Context, nid uint64) (*DiskInode, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if nid > (uint64(rd.size)-rd.metaAddr)/SlotSize {
		return nil, fmt.Errorf("nid %d is outside the bootstrap", nid)
	}
	off := rd.InodeOffset(nid)
	var hdr [ExtendedInodeSize]byte
	n := ExtendedInodeSize
	if uint64(rd.size)-off < ExtendedInodeSize {
		n = CompactInodeSize
	}
	if _, err := rd.r.ReadAt(hdr[:n], int64(off)); err != nil {
		return nil, fmt.Errorf("read inode %d at offset %#x: %w", nid, off, err)
	}
	le := binary.LittleEndian
	format := le.Uint16(hdr[0:])
	ino := &DiskInode{Nid: nid, Compact: format&1 == 0, Layout: (format >> 1) & 0x7}
	if format>>4 != 0 {
		return nil, fmt.Errorf("inode %d: unsupported i_format %#x", nid, format)
	}
	icount := le.Uint16(hdr[2:])
	ino.Mode = uint32(le.Uint16(hdr[4:]))
	isize := uint64(ExtendedInodeSize)
	if ino.Compact {
		isize = CompactInodeSize
		ino.Nlink = uint32(le.Uint16(hdr[6:]))
		ino.Size = uint64(le.Uint32(hdr[8:]))
		ino.U = le.Uint32(hdr[16:])
		ino.Ino = le.Uint32(hdr[20:])
		ino.UID = uint32(le.Uint16(hdr[24:]))
		ino.GID = uint32(le.Uint16(hdr[26:]))
	} else {
		if n < ExtendedInodeSize {
			return nil, fmt.Errorf("inode %d: extended inode truncated at end of bootstrap", nid)
		}
		ino.Size = le.Uint64(hdr[8:])
		ino.U = le.Uint32(hdr[16:])
		ino.Ino = le.Uint32(hdr[20:])
		ino.UID = le.Uint32(hdr[24:])
		ino.GID = le.Uint32(hdr[28:])
		ino.Mtime = le.Uint64(hdr[32:])
		ino.MtimeNsec = le.Uint32(hdr[40:])
		ino.Nlink = le.Uint32(hdr[44:])
	}
	switch ino.Layout {
	case LayoutFlatPlain, LayoutFlatInline, LayoutChunkBased:
	default:
		return nil, fmt.Errorf("inode %d: unsupported data layout %d", nid, ino.Layout)
	}
	if fileType(ino.Mode) == ftUnknown {
		return nil, fmt.Errorf("inode %d: invalid file mode %#o", nid, ino.Mode)
	}
	ino.bodyOff = off + isize
	if icount > 0 {
		xsize := 12 + 4*(uint64(icount)-1)
		xb := make([]byte, xsize)
		if err := rd.readAt(xb, off+isize, fmt.Sprintf("xattrs of inode %d", nid)); err != nil {
			return nil, err
		}
		xs, err := parseXattrs(xb)
		if err != nil {
			return nil, fmt.Errorf("inode %d: %w", nid, err)
		}
		ino.Xattrs = xs
		ino.bodyOff += xsize
	}
	if ino.IsRegular() && ino.Layout != LayoutChunkBased && ino.Size > 0 {
		return nil, fmt.Errorf("inode %d: regular file with data layout %d (want chunk-based)", nid, ino.Layout)
	}
	if (ino.IsDir() || ino.IsSymlink()) && ino.Layout == LayoutChunkBased {
		return nil, fmt.Errorf("inode %d: directory or symlink with chunk-based layout", nid)
	}
	return ino, nil
}

func parseXattrs(b []byte) ([]Xattr, error) {
	if b[4] != 0 {
		return nil, fmt.Errorf("shared xattrs (%d) are not supported", b[4])
	}
	var xs []Xattr
	p := 12
	for p+4 <= len(b) {
		nameLen := int(b[p])
		idx := b[p+1]
		vlen := int(binary.LittleEndian.Uint16(b[p+2:]))
		end := p + 4 + nameLen + vlen
		if end > len(b) {
			return nil, fmt.Errorf("xattr entry at %d overruns the xattr area (%d bytes)", p, len(b))
		}
		prefix, ok := xattrPrefix(idx)
		if !ok {
			return nil, fmt.Errorf("xattr entry at %d has unknown name index %d", p, idx)
		}
		name := prefix + string(b[p+4:p+4+nameLen])
		val := append([]byte{}, b[p+4+nameLen:end]...)
		xs = append(xs, Xattr{Name: name, Value: val})
		p = alignUp(end, 4)
	}
	return xs, nil
}

// data returns the first n bytes of a FLAT_PLAIN/FLAT_INLINE inode's data.
func (rd *Reader) data(ino *DiskInode, limit uint64) ([]byte, error) {
	if ino.Size > limit {
		return nil, fmt.Errorf("inode %d: data size %d exceeds limit %d", ino.Nid, ino.Size, limit)
	}
	if ino.Size > uint64(rd.size) {
		return nil, fmt.Errorf("inode %d: data size %d is larger than the bootstrap", ino.Nid, ino.Size)
	}
	out := make([]byte, ino.Size)
	switch ino.Layout {
	case LayoutFlatPlain:
		if ino.Size == 0 {
			return out, nil
		}
		if err := rd.readAt(out, uint64(ino.U)*BlockSize, fmt.Sprintf("data of inode %d", ino.Nid)); err != nil {
			return nil, err
		}
	case LayoutFlatInline:
		full := ino.Size / BlockSize * BlockSize
		if full > 0 {
			if err := rd.readAt(out[:full], uint64(ino.U)*BlockSize, fmt.Sprintf("data of inode %d", ino.Nid)); err != nil {
				return nil, err
			}
		}
		tail := ino.Size - full
		if ino.bodyOff%BlockSize+tail > BlockSize {
			return nil, fmt.Errorf("inode %d: inline data crosses a block boundary", ino.Nid)
		}
		if err := rd.readAt(out[full:], ino.bodyOff, fmt.Sprintf("inline data of inode %d", ino.Nid)); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("inode %d: not a flat inode", ino.Nid)
	}
	return out, nil
}

// maxDirSize bounds the directory size a Reader accepts (1M entries worth).
const maxDirSize = 256 << 20

// Dirent is one directory entry.
type Dirent struct {
	Name string
	Nid  uint64
	// Type is the EROFS file type (1 reg, 2 dir, 3 chr, 4 blk, 5 fifo,
	// 6 sock, 7 symlink).
	Type uint8
}

// ReadDir returns the entries of a directory, excluding "." and "..".
//
// It enforces what EROFS requires of a directory, so that nothing built
// on a Reader (a mount, check, unpack) sees an ambiguous tree: names are
// 1 to 255 bytes without '/' or NUL, unique and in strictly increasing
// byte order across all of the directory's blocks, and "." names the
// directory itself. ".." must exist; [Reader.Walk], which knows the
// parent, checks that it names it.
func (rd *Reader) ReadDir(ctx context.Context, ino *DiskInode) ([]Dirent, error) {
	ents, _, err := rd.readDir(ctx, ino)
	return ents, err
}

// readDir is ReadDir, also returning the nid ".." names.
func (rd *Reader) readDir(ctx context.Context, ino *DiskInode) ([]Dirent, uint64, error) {
	if !ino.IsDir() {
		return nil, 0, fmt.Errorf("inode %d is not a directory", ino.Nid)
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	data, err := rd.data(ino, maxDirSize)
	if err != nil {
		return nil, 0, err
	}
	var (
		out          []Dirent
		prev         []byte
		dot, dotdot  bool
		dotdotNid    uint64
		entriesSoFar int
	)
	for blk := 0; blk < len(data); blk += BlockSize {
		end := blk + BlockSize
		if end > len(data) {
			end = len(data)
		}
		b := data[blk:end]
		if len(b) < DirentSize {
			return nil, 0, fmt.Errorf("directory inode %d: block at %d is too short", ino.Nid, blk)
		}
		first := int(binary.LittleEndian.Uint16(b[8:]))
		if first < DirentSize || first%DirentSize != 0 || first > len(b) {
			return nil, 0, fmt.Errorf("directory inode %d: invalid nameoff %d in block at %d", ino.Nid, first, blk)
		}
		n := first / DirentSize
		for i := 0; i < n; i++ {
			e := b[i*DirentSize:]
			nameoff := int(binary.LittleEndian.Uint16(e[8:]))
			var nameEnd int
			if i+1 < n {
				nameEnd = int(binary.LittleEndian.Uint16(b[(i+1)*DirentSize+8:]))
			} else {
				nameEnd = len(b)
			}
			if nameoff < first || nameEnd > len(b) || nameEnd < nameoff {
				return nil, 0, fmt.Errorf("directory inode %d: entry %d has invalid name offset %d..%d", ino.Nid, entriesSoFar+i, nameoff, nameEnd)
			}
			name := b[nameoff:nameEnd]
			if i+1 == n {
				// The block's last name is NUL-padded to the block end.
				if j := bytes.IndexByte(name, 0); j >= 0 {
					if bytes.ContainsFunc(name[j:], func(r rune) bool { return r != 0 }) {
						return nil, 0, fmt.Errorf("directory inode %d: entry %d: name %q contains NUL", ino.Nid, entriesSoFar+i, name)
					}
					name = name[:j]
				}
			} else if bytes.IndexByte(name, 0) >= 0 {
				return nil, 0, fmt.Errorf("directory inode %d: entry %d: name %q contains NUL", ino.Nid, entriesSoFar+i, name)
			}
			if len(name) == 0 || len(name) > 255 {
				return nil, 0, fmt.Errorf("directory inode %d: entry %d has an invalid name length %d", ino.Nid, entriesSoFar+i, len(name))
			}
			if bytes.IndexByte(name, '/') >= 0 {
				return nil, 0, fmt.Errorf("directory inode %d: entry name %q contains '/'", ino.Nid, name)
			}
			if prev != nil && bytes.Compare(prev, name) >= 0 {
				if bytes.Equal(prev, name) {
					return nil, 0, fmt.Errorf("directory inode %d: duplicate entry %q", ino.Nid, name)
				}
				return nil, 0, fmt.Errorf("directory inode %d: entry %q after %q: names are not in strictly increasing order", ino.Nid, name, prev)
			}
			prev = name
			nid := binary.LittleEndian.Uint64(e[0:])
			switch s := string(name); s {
			case ".":
				if nid != ino.Nid {
					return nil, 0, fmt.Errorf("directory inode %d: \".\" names inode %d, not the directory itself", ino.Nid, nid)
				}
				dot = true
			case "..":
				dotdot, dotdotNid = true, nid
			default:
				out = append(out, Dirent{Name: s, Nid: nid, Type: e[10]})
			}
		}
		entriesSoFar += n
	}
	if !dot || !dotdot {
		return nil, 0, fmt.Errorf("directory inode %d: no \".\" or \"..\" entry", ino.Nid)
	}
	return out, dotdotNid, nil
}

// Readlink returns the target of a symbolic link.
func (rd *Reader) Readlink(ctx context.Context, ino *DiskInode) (string, error) {
	if !ino.IsSymlink() {
		return "", fmt.Errorf("inode %d is not a symlink", ino.Nid)
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	b, err := rd.data(ino, 4096)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// ChunkAddrs returns the chunk index array of a regular file: one entry per
// filesystem chunk.
func (rd *Reader) ChunkAddrs(ctx context.Context, ino *DiskInode) ([]ChunkAddr, error) {
	if !ino.IsRegular() {
		return nil, fmt.Errorf("inode %d is not a regular file", ino.Nid)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if ino.Size == 0 {
		return nil, nil
	}
	if ino.U&chunkFormatIndexes == 0 {
		return nil, fmt.Errorf("inode %d: chunk format %#x lacks EROFS_CHUNK_FORMAT_INDEXES", ino.Nid, ino.U)
	}
	cs := uint64(rd.Ext.ChunkSize)
	n := (ino.Size + cs - 1) / cs
	if n > uint64(rd.size)/ChunkAddrSize {
		return nil, fmt.Errorf("inode %d: size %d needs %d chunk indexes, more than fit the bootstrap", ino.Nid, ino.Size, n)
	}
	off := alignUp64(ino.bodyOff, ChunkAddrSize)
	buf := make([]byte, n*ChunkAddrSize)
	if err := rd.readAt(buf, off, fmt.Sprintf("chunk indexes of inode %d", ino.Nid)); err != nil {
		return nil, err
	}
	out := make([]ChunkAddr, n)
	for i := range out {
		c, ok := unmarshalChunkAddr(buf[i*ChunkAddrSize:])
		if !ok {
			return nil, fmt.Errorf("inode %d: chunk %d has device id 0", ino.Nid, i)
		}
		if int(c.BlobIndex) >= len(rd.Blobs) {
			return nil, fmt.Errorf("inode %d: chunk %d refers to blob %d, but the blob table has %d entries", ino.Nid, i, c.BlobIndex, len(rd.Blobs))
		}
		out[i] = c
	}
	return out, nil
}

// FileChunkSize returns how many bytes chunk k of a file of the given
// size holds: the chunk size, or what is left of the file in its last
// chunk. A chunk record of another size does not belong to the file.
func FileChunkSize(fileSize uint64, chunkSize uint32, k int) uint32 {
	off := uint64(k) * uint64(chunkSize)
	if off >= fileSize {
		return 0
	}
	return uint32(min(fileSize-off, uint64(chunkSize)))
}

// ChunkTable reads the trailing chunk info table.
func (rd *Reader) ChunkTable(ctx context.Context) ([]ChunkInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if rd.Ext.ChunkTableSize == 0 {
		return nil, nil
	}
	buf := make([]byte, rd.Ext.ChunkTableSize)
	if err := rd.readAt(buf, rd.Ext.ChunkTableOffset, "chunk table"); err != nil {
		return nil, err
	}
	out := make([]ChunkInfo, len(buf)/ChunkInfoSize)
	for i := range out {
		out[i] = unmarshalChunkInfo(buf[i*ChunkInfoSize:])
		if int(out[i].BlobIndex) >= len(rd.Blobs) {
			return nil, fmt.Errorf("chunk table entry %d refers to blob %d, but the blob table has %d entries", i, out[i].BlobIndex, len(rd.Blobs))
		}
	}
	return out, nil
}

// Lookup resolves an absolute slash-separated path to an inode, following
// no symlinks.
func (rd *Reader) Lookup(ctx context.Context, p string) (*DiskInode, error) {
	cur, err := rd.Inode(ctx, rd.RootNid())
	if err != nil {
		return nil, err
	}
	p = path.Clean("/" + p)
	if p == "/" {
		return cur, nil
	}
	for _, name := range strings.Split(p[1:], "/") {
		if !cur.IsDir() {
			return nil, fmt.Errorf("%s: %w", p, errdefs.ErrNotFound)
		}
		ents, err := rd.ReadDir(ctx, cur)
		if err != nil {
			return nil, err
		}
		found := false
		for _, e := range ents {
			if e.Name == name {
				cur, err = rd.Inode(ctx, e.Nid)
				if err != nil {
					return nil, err
				}
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("%s: %w", p, errdefs.ErrNotFound)
		}
	}
	return cur, nil
}

// WalkFunc is called by Walk for every entry; path is absolute.
type WalkFunc func(path string, ino *DiskInode) error

// Walk visits every entry of the tree in depth-first, name order. It
// rejects directory loops and trees with more entries than maxEntries
// (0 means no limit beyond what the bootstrap can hold).
func (rd *Reader) Walk(ctx context.Context, fn WalkFunc) error {
	root, err := rd.Inode(ctx, rd.RootNid())
	if err != nil {
		return err
	}
	onPath := map[uint64]bool{}
	visitedDirs := map[uint64]bool{}
	// Every entry but the root has its own dirent of at least 13 bytes,
	// so a valid tree has fewer entries than that bound.
	budget := rd.size/(DirentSize+1) + 1
	return rd.walk(ctx, "/", root, root.Nid, onPath, visitedDirs, &budget, fn)
}

func (rd *Reader) walk(ctx context.Context, p string, ino *DiskInode, parent uint64, onPath, visited map[uint64]bool, budget *int64, fn WalkFunc) error {
	if *budget--; *budget < 0 {
		return fmt.Errorf("more entries than a bootstrap of %d bytes can hold: overlapping directories", rd.size)
	}
	if err := fn(p, ino); err != nil {
		return err
	}
	if !ino.IsDir() {
		return nil
	}
	if onPath[ino.Nid] || visited[ino.Nid] {
		return fmt.Errorf("directory loop at %s (nid %d)", p, ino.Nid)
	}
	onPath[ino.Nid] = true
	visited[ino.Nid] = true
	defer delete(onPath, ino.Nid)
	ents, dotdot, err := rd.readDir(ctx, ino)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if dotdot != parent {
		return fmt.Errorf("%s: \"..\" names inode %d, not the parent directory %d", p, dotdot, parent)
	}
	for _, e := range ents {
		child, err := rd.Inode(ctx, e.Nid)
		if err != nil {
			return fmt.Errorf("%s: entry %q: %w", p, e.Name, err)
		}
		if fileType(child.Mode) != e.Type && e.Type != ftUnknown {
			return fmt.Errorf("%s: entry %q: dirent type %d does not match inode mode %#o", p, e.Name, e.Type, child.Mode)
		}
		cp := p + e.Name
		if p != "/" {
			cp = p + "/" + e.Name
		}
		if err := rd.walk(ctx, cp, child, ino.Nid, onPath, visited, budget, fn); err != nil {
			return err
		}
	}
	return nil
}
