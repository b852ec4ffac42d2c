package blob

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
)

// Section names used in tar headers and ToC entries (upstream
// storage/src/meta/toc.rs).
const (
	// SectionChunkData names the chunk data ("image.blob").
	SectionChunkData = "image.blob"
	// SectionMeta names the CI data together with its MetaHeader in tar
	// headers, and the CI data alone in the ToC ("blob.meta").
	SectionMeta = "blob.meta"
	// SectionMetaHeader names the MetaHeader in the ToC
	// ("blob.meta.header"); it has no tar header of its own.
	SectionMetaHeader = "blob.meta.header"
	// SectionChunkDigest names the chunk digest array ("blob.digest").
	SectionChunkDigest = "blob.digest"
	// SectionBootstrap names the inline RAFS bootstrap ("image.boot").
	SectionBootstrap = "image.boot"
	// SectionTOC names the ToC ("rafs.blob.toc").
	SectionTOC = "rafs.blob.toc"
)

// TarHeaderSize is the size of a tar header block.
const TarHeaderSize = 512

// maxTarSections bounds the number of sections ReadTarSections walks;
// upstream writes at most five.
const maxTarSections = 64

// Offsets of the tar header fields used here.
const (
	tarName     = 0   // [100]
	tarSize     = 124 // [12]
	tarMtime    = 136 // [12]
	tarChksum   = 148 // [8]
	tarTypeflag = 156
	tarMagic    = 257 // [6]
	tarVersion  = 263 // [2]
	tarNameLen  = 100
)

// TarHeader returns the 512-byte GNU tar header that upstream writes after
// a section (BlobContext::write_tar_header with the Rust tar crate's
// Header::new_gnu): name, size in octal (base-256 from 8 GiB), mtime 0,
// typeflag '0', magic "ustar  \x00", checksum as 7 octal digits and a NUL;
// mode, uid, gid and all other fields are zero bytes. It panics if name is
// empty or longer than 100 bytes or contains a NUL, or if size is negative:
// section names are constants.
func TarHeader(name string, size int64) [TarHeaderSize]byte {
	var h [TarHeaderSize]byte
	if name == "" || len(name) > tarNameLen || bytes.IndexByte([]byte(name), 0) >= 0 || size < 0 {
		panic(fmt.Sprintf("blob.TarHeader: invalid name %q or size %d", name, size))
	}
	copy(h[tarName:], name)
	putTarNumber(h[tarSize:tarSize+12], uint64(size))
	putOctal(h[tarMtime:tarMtime+12], 0)
	h[tarTypeflag] = '0'
	copy(h[tarMagic:], "ustar ")
	copy(h[tarVersion:], " \x00")
	putOctal(h[tarChksum:tarChksum+8], uint64(tarChecksum(&h)))
	return h
}

// putOctal writes v as zero-padded octal into all but the last byte of f,
// which stays NUL (the Rust tar crate's octal_into).
func putOctal(f []byte, v uint64) {
	s := strconv.FormatUint(v, 8)
	n := len(f) - 1
	for i := range n {
		f[i] = '0'
	}
	copy(f[n-len(s):n], s)
}

// putTarNumber writes a numeric field like the Rust tar crate: octal below
// 8 GiB, else base-256 with the high bit of the first byte set.
func putTarNumber(f []byte, v uint64) {
	if v < 1<<33 {
		putOctal(f, v)
		return
	}
	for i := range f {
		f[i] = 0
	}
	for i := range 8 {
		f[len(f)-1-i] = byte(v >> (8 * i))
	}
	f[0] |= 0x80
}

// tarChecksum returns the unsigned sum of h with the checksum field taken
// as spaces.
func tarChecksum(h *[TarHeaderSize]byte) uint32 {
	var sum uint32
	for i, b := range h {
		if i >= tarChksum && i < tarChksum+8 {
			b = ' '
		}
		sum += uint32(b)
	}
	return sum
}

// tarSignedChecksum is tarChecksum with bytes taken as signed, which some
// old writers used; Go's archive/tar accepts both.
func tarSignedChecksum(h *[TarHeaderSize]byte) int64 {
	var sum int64
	for i, b := range h {
		if i >= tarChksum && i < tarChksum+8 {
			b = ' '
		}
		sum += int64(int8(b))
	}
	return sum
}

// parseTarNumber parses a numeric tar field: octal with optional NUL or
// space padding, or base-256 (positive only).
func parseTarNumber(f []byte) (uint64, error) {
	if len(f) > 0 && f[0]&0x80 != 0 {
		if f[0] == 0xff {
			return 0, fmt.Errorf("negative base-256 number: %w", ErrCorrupt)
		}
		var v uint64
		for i, b := range f {
			if i == 0 {
				b &= 0x7f
			}
			if v>>56 != 0 {
				return 0, fmt.Errorf("base-256 number overflows 64 bits: %w", ErrCorrupt)
			}
			v = v<<8 | uint64(b)
		}
		return v, nil
	}
	s := bytes.Trim(f, " \x00")
	if len(s) == 0 {
		return 0, nil
	}
	v, err := strconv.ParseUint(string(s), 8, 63)
	if err != nil {
		return 0, fmt.Errorf("invalid octal number %q: %w", s, ErrCorrupt)
	}
	return v, nil
}

// TarEntry is the information ParseTarHeader extracts from a header.
type TarEntry struct {
	// Name is the entry name.
	Name string
	// Size is the size of the data before the header.
	Size int64
	// GNU reports a GNU header (magic "ustar " and version " \x00"), as
	// upstream writes; otherwise it is a POSIX ustar header.
	GNU bool
}

// ParseTarHeader parses a 512-byte tar header as written after a blob
// section. It accepts GNU and POSIX ustar headers of regular files ('0' or
// NUL typeflag) with a correct checksum.
func ParseTarHeader(b []byte) (TarEntry, error) {
	if len(b) != TarHeaderSize {
		return TarEntry{}, fmt.Errorf("tar header: %d bytes, want %d: %w", len(b), TarHeaderSize, ErrCorrupt)
	}
	h := (*[TarHeaderSize]byte)(b)
	var e TarEntry
	switch {
	case string(h[tarMagic:tarMagic+6]) == "ustar " && string(h[tarVersion:tarVersion+2]) == " \x00":
		e.GNU = true
	case string(h[tarMagic:tarMagic+6]) == "ustar\x00":
	default:
		return TarEntry{}, fmt.Errorf("tar header: bad magic %q: %w", h[tarMagic:tarMagic+8], ErrCorrupt)
	}
	want, err := parseTarNumber(h[tarChksum : tarChksum+8])
	if err != nil {
		return TarEntry{}, fmt.Errorf("tar header: checksum field: %w", err)
	}
	if want != uint64(tarChecksum(h)) && int64(want) != tarSignedChecksum(h) {
		return TarEntry{}, fmt.Errorf("tar header: checksum %d does not match computed %d: %w", want, tarChecksum(h), ErrCorrupt)
	}
	if t := h[tarTypeflag]; t != '0' && t != 0 {
		return TarEntry{}, fmt.Errorf("tar header: typeflag %q is not a regular file: %w", t, ErrCorrupt)
	}
	name := h[tarName : tarName+tarNameLen]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	if len(name) == 0 {
		return TarEntry{}, fmt.Errorf("tar header: empty name: %w", ErrCorrupt)
	}
	e.Name = string(name)
	size, err := parseTarNumber(h[tarSize : tarSize+12])
	if err != nil {
		return TarEntry{}, fmt.Errorf("tar header %q: size field: %w", e.Name, err)
	}
	if size > 1<<62 {
		return TarEntry{}, fmt.Errorf("tar header %q: size %d too large: %w", e.Name, size, ErrCorrupt)
	}
	e.Size = int64(size)
	return e, nil
}

// Section locates one named section of a blob.
type Section struct {
	// Name is the section name.
	Name string
	// Offset is the offset of the section data in the blob.
	Offset int64
	// Size is the size of the section data (excluding its tar header).
	Size int64
}

// End returns Offset + Size, the offset of the section's tar header.
func (s Section) End() int64 { return s.Offset + s.Size }

// ReadTarSections walks the trailing tar headers of a blob of the given
// size backwards from EOF, as the snapshotter's seekFileByTarHeader does,
// and returns the sections in file order. The walk must end exactly at
// offset 0. It reads one 512-byte header per section and allocates nothing
// based on header contents; at most 64 sections are accepted.
func ReadTarSections(r io.ReaderAt, size int64) ([]Section, error) {
	if size < TarHeaderSize {
		return nil, fmt.Errorf("read tar sections: blob size %d is smaller than a tar header: %w", size, ErrCorrupt)
	}
	var rev []Section
	var buf [TarHeaderSize]byte
	for cur := size; cur > 0; {
		if len(rev) == maxTarSections {
			return nil, fmt.Errorf("read tar sections: more than %d sections: %w", maxTarSections, ErrCorrupt)
		}
		if cur < TarHeaderSize {
			return nil, fmt.Errorf("read tar sections: %d bytes left before offset %d, too few for a tar header: %w", cur, cur, ErrCorrupt)
		}
		hdrOff := cur - TarHeaderSize
		if _, err := r.ReadAt(buf[:], hdrOff); err != nil {
			return nil, fmt.Errorf("read tar sections: read header at offset %d: %w", hdrOff, err)
		}
		e, err := ParseTarHeader(buf[:])
		if err != nil {
			return nil, fmt.Errorf("read tar sections: header at offset %d: %w", hdrOff, err)
		}
		if e.Size > hdrOff {
			return nil, fmt.Errorf("read tar sections: section %q at header offset %d has size %d beyond the start of the blob: %w", e.Name, hdrOff, e.Size, ErrCorrupt)
		}
		s := Section{Name: e.Name, Offset: hdrOff - e.Size, Size: e.Size}
		rev = append(rev, s)
		cur = s.Offset
	}
	out := make([]Section, len(rev))
	for i, s := range rev {
		out[len(rev)-1-i] = s
	}
	return out, nil
}
