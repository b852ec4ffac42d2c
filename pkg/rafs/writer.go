package rafs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
)

// WriterOptions configure Marshal.
type WriterOptions struct {
	// ChunkSize is the filesystem-wide chunk size (default 1 MiB).
	ChunkSize uint32
	// Flags are the compression, hash and other RafsSuperFlags. The
	// writer adds FlagHasXattr and FlagInlinedDigest where they apply and
	// FlagEncryptionNone unless FlagEncryptionAES is set.
	Flags Flags
	// Blobs is the blob table; BlobInfo.Index must equal the position.
	Blobs []BlobInfo
	// Prefetch lists inodes whose nids go into the prefetch table.
	Prefetch []*Inode
}

type direntRec struct {
	name  string
	inode *Inode
}

// Marshal lays out the tree rooted at root as a RAFS v6 bootstrap.
//
// Output is a deterministic function of the tree and options: inodes are
// placed breadth-first in name order, directory and symlink bodies follow
// the inode area, and the chunk table is sorted by (digest, blob).
func Marshal(root *Node, opts WriterOptions) ([]byte, error) {
	if root == nil || root.Inode == nil || !root.Inode.IsDir() {
		return nil, errors.New("rafs: root must be a directory")
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if !validChunkSize(uint64(opts.ChunkSize)) {
		return nil, fmt.Errorf("rafs: invalid chunk size %#x", opts.ChunkSize)
	}
	if len(opts.Blobs) > MaxBlobs {
		return nil, fmt.Errorf("rafs: %d blobs exceed the limit of %d", len(opts.Blobs), MaxBlobs)
	}
	for i := range opts.Blobs {
		b := &opts.Blobs[i]
		if b.Index != uint32(i) {
			return nil, fmt.Errorf("rafs: blob %d has index %d", i, b.Index)
		}
		if len(b.BlobID) != 64 {
			return nil, fmt.Errorf("rafs: blob %d: id %q is not 64 characters", i, b.BlobID)
		}
	}

	// Collect unique inodes in breadth-first order and count links.
	var order []*Inode
	var dirs []*Node
	root.Inode.Nlink = 0
	queue := []*Node{root}
	parents := map[*Inode]*Inode{root.Inode: root.Inode}
	seen := map[*Inode]bool{}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		ino := n.Inode
		if seen[ino] {
			if ino.IsDir() {
				return nil, fmt.Errorf("rafs: directory %q is linked twice", n.Name)
			}
			ino.Nlink++
			continue
		}
		seen[ino] = true
		order = append(order, ino)
		ino.Nlink = 1
		if ino.IsDir() {
			ino.Nlink = 2
			dirs = append(dirs, n)
			for _, c := range n.Children {
				if c.Inode == nil {
					return nil, fmt.Errorf("rafs: entry %q has no inode", c.Name)
				}
				if c.Name == "" || c.Name == "." || c.Name == ".." || bytes.IndexByte([]byte(c.Name), '/') >= 0 || bytes.IndexByte([]byte(c.Name), 0) >= 0 {
					return nil, fmt.Errorf("rafs: invalid entry name %q", c.Name)
				}
				if len(c.Name) > 255 {
					return nil, fmt.Errorf("rafs: entry name %q is longer than 255 bytes", c.Name)
				}
				if c.Inode.IsDir() {
					parents[c.Inode] = ino
				}
				queue = append(queue, c)
			}
		}
	}
	for _, d := range dirs {
		for _, c := range d.Children {
			if c.Inode.IsDir() {
				d.Inode.Nlink++
			}
		}
	}

	hasXattr := false
	for i, ino := range order {
		ino.Ino = uint32(i + 1)
		if ino.Implicit && ino.IsDir() {
			ino.Ino = 0
		}
		if len(ino.Xattrs) > 0 {
			hasXattr = true
			for _, x := range ino.Xattrs {
				idx, pl, ok := XattrIndex(x.Name)
				_ = idx
				if !ok {
					return nil, fmt.Errorf("rafs: xattr %q: namespace not supported by RAFS v6", x.Name)
				}
				if len(x.Name)-pl > 255 || len(x.Value) > 0xffff {
					return nil, fmt.Errorf("rafs: xattr %q is too large", x.Name)
				}
			}
			if xattrBodySize(ino.Xattrs) > 0xffff*4 {
				return nil, errors.New("rafs: extended attributes of one inode are too large")
			}
		}
		switch {
		case ino.IsRegular():
			want := (ino.Size + uint64(opts.ChunkSize) - 1) / uint64(opts.ChunkSize)
			if uint64(len(ino.Chunks)) != want {
				return nil, fmt.Errorf("rafs: inode %d: %d chunks for size %d, want %d", ino.Ino, len(ino.Chunks), ino.Size, want)
			}
			for _, c := range ino.Chunks {
				if int(c.BlobIndex) >= len(opts.Blobs) {
					return nil, fmt.Errorf("rafs: inode %d: chunk refers to blob %d of %d", ino.Ino, c.BlobIndex, len(opts.Blobs))
				}
			}
		case ino.IsSymlink():
			ino.Size = uint64(len(ino.Symlink))
			ino.dataSize = ino.Size
		case ino.IsDir():
		default:
			ino.Size = 0
		}
	}

	// Directory sizes: pack dirents into blocks.
	for _, d := range dirs {
		recs := make([]direntRec, 0, len(d.Children)+2)
		recs = append(recs, direntRec{".", d.Inode}, direntRec{"..", parents[d.Inode]})
		for _, c := range d.Children {
			recs = append(recs, direntRec{c.Name, c.Inode})
		}
		sort.Slice(recs, func(i, j int) bool { return less(recs[i].name, recs[j].name) })
		var blocks [][]direntRec
		var cur []direntRec
		used := 0
		for _, r := range recs {
			l := DirentSize + len(r.name)
			if used+l > BlockSize {
				blocks = append(blocks, cur)
				cur, used = nil, 0
			}
			cur = append(cur, r)
			used += l
		}
		blocks = append(blocks, cur)
		d.Inode.dirBlocks = blocks
		d.Inode.dataSize = uint64(len(blocks)-1)*BlockSize + uint64(used)
		d.Inode.Size = d.Inode.dataSize
	}

	// Fixed tables.
	nblobs := uint64(len(opts.Blobs))
	blobTableOff := alignUp64(DevSlotOffset+nblobs*DevSlotSize, BlockSize)
	blobTableSize := nblobs * BlobEntrySize
	prefetchOff, prefetchSize := uint64(0), uint64(0)
	if len(opts.Prefetch) > 0 && nblobs > 0 {
		prefetchOff = blobTableOff + blobTableSize
		prefetchSize = uint64(len(opts.Prefetch)) * 4
	}
	metaAddr := alignUp64(blobTableOff+blobTableSize+prefetchSize, BlockSize)
	// The inode area starts one block after meta_blkaddr so that the root
	// nid is never 0.
	inodeStart := metaAddr + BlockSize

	// Place inodes.
	alloc := &allocator{off: inodeStart}
	for _, ino := range order {
		isize := uint64(ExtendedInodeSize + xattrBodySize(ino.Xattrs))
		switch {
		case ino.IsRegular():
			total := alignUp64(isize, ChunkAddrSize) + uint64(len(ino.Chunks))*ChunkAddrSize
			ino.offset = alloc.place(total, false)
			ino.layout = LayoutChunkBased
		case ino.IsDir() || ino.IsSymlink():
			tail := ino.dataSize % BlockSize
			if tail != 0 && isize+tail <= BlockSize {
				ino.layout = LayoutFlatInline
				ino.offset = alloc.place(isize+tail, true)
			} else {
				ino.layout = LayoutFlatPlain
				ino.offset = alloc.place(isize, false)
			}
		default:
			ino.layout = LayoutFlatPlain
			ino.offset = alloc.place(isize, false)
		}
		ino.nid = (ino.offset - metaAddr) / SlotSize
	}
	rootNid := root.Inode.nid
	if rootNid > 0xffff {
		return nil, fmt.Errorf("rafs: root nid %d does not fit 16 bits", rootNid)
	}

	// Place out-of-line data blocks.
	dataOff := alignUp64(alloc.off, BlockSize)
	for _, ino := range order {
		if !(ino.IsDir() || ino.IsSymlink()) {
			continue
		}
		var nblk uint64
		if ino.layout == LayoutFlatInline {
			nblk = ino.dataSize / BlockSize
		} else {
			nblk = (ino.dataSize + BlockSize - 1) / BlockSize
		}
		if nblk > 0 {
			if dataOff/BlockSize > 0xffffffff {
				return nil, errors.New("rafs: metadata too large")
			}
			ino.dataBlk = uint32(dataOff / BlockSize)
			dataOff += nblk * BlockSize
		}
	}
	metaEnd := dataOff
	if metaEnd > MaxMetadataSize {
		return nil, fmt.Errorf("rafs: metadata size %d exceeds %d", metaEnd, MaxMetadataSize)
	}

	// Chunk table: unique (digest, blob) pairs in sorted order.
	type ckey struct {
		d    [32]byte
		blob uint32
	}
	chunkMap := map[ckey]ChunkInfo{}
	for _, ino := range order {
		for _, c := range ino.Chunks {
			k := ckey{c.Digest, c.BlobIndex}
			if _, ok := chunkMap[k]; !ok {
				chunkMap[k] = c
			}
		}
	}
	keys := make([]ckey, 0, len(chunkMap))
	for k := range chunkMap {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if c := bytes.Compare(keys[i].d[:], keys[j].d[:]); c != 0 {
			return c < 0
		}
		return keys[i].blob < keys[j].blob
	})
	chunkTableOff := uint64(0)
	chunkTableSize := uint64(len(keys)) * ChunkInfoSize
	total := metaEnd
	if len(keys) > 0 {
		chunkTableOff = metaEnd
		total = alignUp64(metaEnd+chunkTableSize, BlockSize)
	}
	if total > MaxMetadataSize {
		return nil, fmt.Errorf("rafs: bootstrap size %d exceeds %d", total, MaxMetadataSize)
	}

	buf := make([]byte, total)
	le := binary.LittleEndian

	// Inodes and their bodies.
	for _, ino := range order {
		b := buf[ino.offset:]
		format := uint16(1) | ino.layout<<1
		le.PutUint16(b[0:], format)
		xsize := xattrBodySize(ino.Xattrs)
		if xsize > 0 {
			le.PutUint16(b[2:], uint16((xsize-12)/4+1))
		}
		le.PutUint16(b[4:], uint16(ino.Mode))
		le.PutUint64(b[8:], ino.Size)
		var u uint32
		switch {
		case ino.IsRegular():
			u = chunkFormatIndexes | uint32(chunkBits(ino, opts.ChunkSize)-blockBits)
		case ino.IsDir() || ino.IsSymlink():
			u = ino.dataBlk
		case ino.Mode&ModeType == ModeChar || ino.Mode&ModeType == ModeBlock:
			u = ino.Rdev
		}
		le.PutUint32(b[16:], u)
		le.PutUint32(b[20:], ino.Ino)
		le.PutUint32(b[24:], ino.UID)
		le.PutUint32(b[28:], ino.GID)
		le.PutUint64(b[32:], ino.Mtime)
		le.PutUint32(b[40:], ino.MtimeNsec)
		le.PutUint32(b[44:], ino.Nlink)
		p := ExtendedInodeSize
		if xsize > 0 {
			writeXattrs(b[p:p+xsize], ino.Xattrs)
			p += xsize
		}
		switch {
		case ino.IsRegular():
			p = alignUp(p, ChunkAddrSize)
			for _, c := range ino.Chunks {
				ChunkAddr{BlobIndex: c.BlobIndex, CIIndex: c.Index, BlkAddr: uint32(c.UncompressedOffset / BlockSize)}.marshal(b[p:])
				p += ChunkAddrSize
			}
		case ino.IsSymlink():
			body := []byte(ino.Symlink)
			writeBody(buf, ino, p, body)
		case ino.IsDir():
			body := make([]byte, 0, ino.dataSize)
			for bi, blk := range ino.dirBlocks {
				start := len(body)
				nameoff := DirentSize * len(blk)
				for _, r := range blk {
					var e [DirentSize]byte
					le.PutUint64(e[0:], r.inode.nid)
					le.PutUint16(e[8:], uint16(nameoff))
					e[10] = fileType(r.inode.Mode)
					body = append(body, e[:]...)
					nameoff += len(r.name)
				}
				for _, r := range blk {
					body = append(body, r.name...)
				}
				if bi < len(ino.dirBlocks)-1 {
					body = append(body, make([]byte, BlockSize-(len(body)-start))...)
				}
			}
			writeBody(buf, ino, p, body)
		}
	}

	// Chunk table.
	for i, k := range keys {
		c := chunkMap[k]
		c.marshal(buf[chunkTableOff+uint64(i)*ChunkInfoSize:])
	}

	// Superblock, extension, device slots, blob table, prefetch table.
	var blocks uint64
	inlinedDigest := true
	pos := total
	for i := range opts.Blobs {
		b := &opts.Blobs[i]
		cnt := b.UncompressedSize / BlockSize
		if cnt > 0xffffffff || blocks+cnt > 0xffffffff {
			return nil, fmt.Errorf("rafs: blob %s is too large", b.BlobID)
		}
		mapped := alignUp64(pos, 0x80000) / BlockSize
		pos = (mapped + cnt) * BlockSize
		blocks += cnt
		s := buf[DevSlotOffset+uint64(i)*DevSlotSize:]
		copy(s[0:64], b.BlobID)
		le.PutUint32(s[64:], uint32(cnt))
		le.PutUint32(s[68:], uint32(mapped))
		b.marshal(buf[blobTableOff+uint64(i)*BlobEntrySize:])
		if b.Features&0x20 == 0 { // INLINED_CHUNK_DIGEST
			inlinedDigest = false
		}
	}
	if prefetchSize > 0 {
		for i, ino := range opts.Prefetch {
			le.PutUint32(buf[prefetchOff+uint64(i)*4:], uint32(ino.nid))
		}
	}
	flags := opts.Flags
	if hasXattr {
		flags |= FlagHasXattr
	}
	if inlinedDigest {
		flags |= FlagInlinedDigest
	}
	if flags&FlagEncryptionAES == 0 {
		flags |= FlagEncryptionNone
	}
	sb := Superblock{
		Magic:           Magic,
		FeatureCompat:   FeatureCompatRafsV6,
		BlkSzBits:       blockBits,
		RootNid:         uint16(rootNid),
		Inos:            uint64(len(order)),
		Blocks:          uint32(blocks),
		MetaBlkAddr:     uint32(metaAddr / BlockSize),
		FeatureIncompat: FeatureIncompatChunkedFile | FeatureIncompatDeviceTable,
		ExtraDevices:    uint16(nblobs),
		DevtSlotOff:     DevSlotOffset / DevSlotSize,
	}
	sb.marshal(buf[SuperOffset:])
	ext := SuperblockExt{
		Flags:             flags,
		BlobTableOffset:   blobTableOff,
		BlobTableSize:     uint32(blobTableSize),
		ChunkSize:         opts.ChunkSize,
		ChunkTableOffset:  chunkTableOff,
		ChunkTableSize:    chunkTableSize,
		PrefetchTableOff:  prefetchOff,
		PrefetchTableSize: uint32(prefetchSize),
	}
	ext.marshal(buf[ExtOffset:])
	return buf, nil
}

// Write marshals the tree and writes it to w.
func Write(w io.Writer, root *Node, opts WriterOptions) (int64, error) {
	b, err := Marshal(root, opts)
	if err != nil {
		return 0, err
	}
	n, err := w.Write(b)
	return int64(n), err
}

// chunkBits returns log2 of the chunk size advertised in the inode's chunk
// header. Like upstream, a file whose chunks are contiguous in one blob
// advertises next_power_of_two(size) so the kernel maps it in one piece.
func chunkBits(ino *Inode, chunkSize uint32) uint32 {
	cs := uint64(chunkSize)
	if ino.Size > cs && len(ino.Chunks) > 0 {
		contiguous := true
		for i := 1; i < len(ino.Chunks); i++ {
			p, c := ino.Chunks[i-1], ino.Chunks[i]
			if c.BlobIndex != p.BlobIndex || c.UncompressedOffset != p.UncompressedOffset+cs {
				contiguous = false
				break
			}
		}
		if contiguous {
			cs = nextPow2(ino.Size)
		}
	}
	return uint32(log2(cs))
}

func nextPow2(v uint64) uint64 {
	p := uint64(1)
	for p < v {
		p <<= 1
	}
	return p
}

func log2(v uint64) int {
	n := 0
	for v > 1 {
		v >>= 1
		n++
	}
	return n
}

// writeBody stores the data of a directory or symlink: full blocks at
// dataBlk, the tail inline after the inode (FLAT_INLINE) or everything in
// blocks (FLAT_PLAIN).
func writeBody(buf []byte, ino *Inode, inodeLen int, body []byte) {
	if ino.layout == LayoutFlatInline {
		full := len(body) / BlockSize * BlockSize
		if full > 0 {
			copy(buf[uint64(ino.dataBlk)*BlockSize:], body[:full])
		}
		copy(buf[ino.offset+uint64(inodeLen):], body[full:])
		return
	}
	if len(body) > 0 {
		copy(buf[uint64(ino.dataBlk)*BlockSize:], body)
	}
}

func writeXattrs(b []byte, xs []Xattr) {
	sorted := append([]Xattr(nil), xs...)
	SortXattrs(sorted)
	p := 12
	for _, x := range sorted {
		idx, pl, _ := XattrIndex(x.Name)
		suffix := x.Name[pl:]
		b[p] = uint8(len(suffix))
		b[p+1] = idx
		binary.LittleEndian.PutUint16(b[p+2:], uint16(len(x.Value)))
		copy(b[p+4:], suffix)
		copy(b[p+4+len(suffix):], x.Value)
		p = alignUp(p+4+len(suffix)+len(x.Value), 4)
	}
}

// allocator places inodes in the inode area, reusing the unused tails of
// blocks that an inline inode had to skip.
type allocator struct {
	off   uint64
	frags []frag
}

type frag struct{ off, size uint64 }

const maxFrags = 64

// place returns a 32-byte aligned offset for size bytes; if inline, the
// bytes must not cross a block boundary.
func (a *allocator) place(size uint64, inline bool) uint64 {
	size = alignUp64(size, SlotSize)
	for i, f := range a.frags {
		if f.size >= size {
			off := f.off
			a.frags[i].off += size
			a.frags[i].size -= size
			if a.frags[i].size < SlotSize*2 {
				a.frags = append(a.frags[:i], a.frags[i+1:]...)
			}
			return off
		}
	}
	if inline {
		rem := BlockSize - a.off%BlockSize
		if rem < size {
			if rem >= SlotSize*2 {
				a.frags = append(a.frags, frag{a.off, rem})
				if len(a.frags) > maxFrags {
					a.frags = a.frags[1:]
				}
			}
			a.off += rem
		}
	}
	off := a.off
	a.off += size
	return off
}
