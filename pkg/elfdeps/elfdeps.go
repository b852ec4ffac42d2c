// Package elfdeps reads what a program needs before it can run, the way
// the kernel and ld.so find it: a script's "#!" interpreter, an ELF
// file's PT_INTERP, DT_NEEDED, DT_RUNPATH and DT_RPATH, and glibc's
// /etc/ld.so.cache. nydusd uses it to fetch a program's libraries while
// ld.so is still opening the first one.
//
// It is a leaf: bytes in (io.ReaderAt), names out. Every parser takes
// untrusted input: malformed files give an error, never a panic.
//
// Entry points: [Shebang] reads a script's interpreter, [ReadELF] an ELF
// file's [Deps], [ParseLdCache] the ld.so cache, and [Candidates] lists
// where ld.so looks for one needed library.
package elfdeps

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// Deps is what an ELF file asks the loader for.
type Deps struct {
	// Interp is the PT_INTERP path (the dynamic loader), or "".
	Interp string
	// Needed are the DT_NEEDED names, in order.
	Needed []string
	// RunPath and RPath are the DT_RUNPATH and DT_RPATH directories,
	// with $ORIGIN (and ${ORIGIN}) replaced by the file's directory.
	RunPath, RPath []string
	// Machine is the ELF machine (elf.EM_X86_64, ...).
	Machine elf.Machine
	// Class is 32 or 64-bit.
	Class elf.Class
}

// maxNames bounds the names taken from one file.
const maxNames = 256

// Bounds of what ReadELF reads.
const (
	maxPhnum   = 256
	maxDynamic = 64 << 10
	maxString  = 4096
)

// ReadELF reads the dynamic dependencies of the ELF file r of the given
// size the way ld.so does: from the program headers (PT_INTERP,
// PT_DYNAMIC, PT_LOAD) near the file's start, never the section headers
// at its end, so it reads only pages the loader reads too. origin is the
// file's directory in the image (for $ORIGIN; "" when it is not known:
// the search paths that use $ORIGIN are then dropped). A file without the ELF
// magic fails with ErrNotELF; a malformed one with another error.
func ReadELF(r io.ReaderAt, size int64, origin string) (*Deps, error) {
	var ident [elf.EI_NIDENT]byte
	if _, err := r.ReadAt(ident[:], 0); err != nil || string(ident[:4]) != elf.ELFMAG {
		return nil, ErrNotELF
	}
	var bo binary.ByteOrder
	switch elf.Data(ident[elf.EI_DATA]) {
	case elf.ELFDATA2LSB:
		bo = binary.LittleEndian
	case elf.ELFDATA2MSB:
		bo = binary.BigEndian
	default:
		return nil, errors.New("elfdeps: unknown ELF data encoding")
	}
	d := &Deps{Class: elf.Class(ident[elf.EI_CLASS])}
	is64 := d.Class == elf.ELFCLASS64
	if !is64 && d.Class != elf.ELFCLASS32 {
		return nil, errors.New("elfdeps: unknown ELF class")
	}
	hdr := make([]byte, 64)
	if n, _ := r.ReadAt(hdr, 0); n < 52 {
		return nil, errors.New("elfdeps: short ELF header")
	}
	d.Machine = elf.Machine(bo.Uint16(hdr[18:]))
	var phoff uint64
	var phentsize, phnum uint16
	if is64 {
		phoff, phentsize, phnum = bo.Uint64(hdr[32:]), bo.Uint16(hdr[54:]), bo.Uint16(hdr[56:])
	} else {
		phoff, phentsize, phnum = uint64(bo.Uint32(hdr[28:])), bo.Uint16(hdr[42:]), bo.Uint16(hdr[44:])
	}
	minEnt := uint16(32)
	if is64 {
		minEnt = 56
	}
	if phnum == 0 || phnum > maxPhnum || phentsize < minEnt || phoff > uint64(size) || uint64(phentsize)*uint64(phnum) > uint64(size)-phoff {
		return nil, fmt.Errorf("elfdeps: program headers (%d of %d bytes at %d) do not fit the file", phnum, phentsize, phoff)
	}
	ph := make([]byte, int(phentsize)*int(phnum))
	if _, err := r.ReadAt(ph, int64(phoff)); err != nil {
		return nil, fmt.Errorf("elfdeps: program headers: %w", err)
	}
	type seg struct{ typ, off, vaddr, filesz uint64 }
	var loads []seg
	var interp, dyn *seg
	for i := 0; i < int(phnum); i++ {
		e := ph[i*int(phentsize):]
		var sg seg
		if is64 {
			sg = seg{uint64(bo.Uint32(e[0:])), bo.Uint64(e[8:]), bo.Uint64(e[16:]), bo.Uint64(e[32:])}
		} else {
			sg = seg{uint64(bo.Uint32(e[0:])), uint64(bo.Uint32(e[4:])), uint64(bo.Uint32(e[8:])), uint64(bo.Uint32(e[16:]))}
		}
		switch elf.ProgType(sg.typ) {
		case elf.PT_LOAD:
			loads = append(loads, sg)
		case elf.PT_INTERP:
			interp = &sg
		case elf.PT_DYNAMIC:
			dyn = &sg
		}
	}
	readStr := func(off uint64) (string, error) {
		if off >= uint64(size) {
			return "", fmt.Errorf("elfdeps: string at %d beyond the file", off)
		}
		b := make([]byte, min(uint64(maxString), uint64(size)-off))
		n, _ := r.ReadAt(b, int64(off))
		if i := bytes.IndexByte(b[:n], 0); i >= 0 {
			return string(b[:i]), nil
		}
		return "", fmt.Errorf("elfdeps: unterminated string at %d", off)
	}
	if interp != nil {
		if interp.filesz == 0 || interp.filesz > maxString {
			return nil, fmt.Errorf("elfdeps: PT_INTERP of %d bytes", interp.filesz)
		}
		s, err := readStr(interp.off)
		if err != nil {
			return nil, err
		}
		d.Interp = s
	}
	if dyn == nil {
		return d, nil // static
	}
	if dyn.filesz > maxDynamic || dyn.off > uint64(size) || dyn.filesz > uint64(size)-dyn.off {
		return nil, fmt.Errorf("elfdeps: PT_DYNAMIC (%d bytes at %d) does not fit the file", dyn.filesz, dyn.off)
	}
	db := make([]byte, dyn.filesz)
	if _, err := r.ReadAt(db, int64(dyn.off)); err != nil {
		return nil, fmt.Errorf("elfdeps: PT_DYNAMIC: %w", err)
	}
	entSize := 8
	if is64 {
		entSize = 16
	}
	var strtab uint64
	var needed, runpath, rpath []uint64
	for i := 0; i+entSize <= len(db); i += entSize {
		var tag, val uint64
		if is64 {
			tag, val = bo.Uint64(db[i:]), bo.Uint64(db[i+8:])
		} else {
			tag, val = uint64(bo.Uint32(db[i:])), uint64(bo.Uint32(db[i+4:]))
		}
		switch elf.DynTag(tag) {
		case elf.DT_NULL:
			i = len(db)
		case elf.DT_STRTAB:
			strtab = val
		case elf.DT_NEEDED:
			if len(needed) < maxNames {
				needed = append(needed, val)
			}
		case elf.DT_RUNPATH:
			runpath = append(runpath, val)
		case elf.DT_RPATH:
			rpath = append(rpath, val)
		}
	}
	// DT_STRTAB is a virtual address: map it through the PT_LOAD segments.
	strOff, ok := uint64(0), false
	for _, l := range loads {
		if strtab >= l.vaddr && strtab-l.vaddr < l.filesz {
			strOff, ok = l.off+(strtab-l.vaddr), true
			break
		}
	}
	if !ok {
		if len(needed)+len(runpath)+len(rpath) == 0 {
			return d, nil
		}
		return nil, fmt.Errorf("elfdeps: DT_STRTAB %#x is in no PT_LOAD segment", strtab)
	}
	names := func(offs []uint64) ([]string, error) {
		var out []string
		for _, o := range offs {
			s, err := readStr(strOff + o)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
	var err error
	if d.Needed, err = names(needed); err != nil {
		return nil, err
	}
	expand := func(offs []uint64) ([]string, error) {
		vals, err := names(offs)
		var out []string
		for _, v := range vals {
			for _, dir := range strings.Split(v, ":") {
				if origin == "" && strings.Contains(dir, "ORIGIN") {
					continue // relative to a place not known
				}
				dir = strings.ReplaceAll(strings.ReplaceAll(dir, "${ORIGIN}", origin), "$ORIGIN", origin)
				if dir != "" && len(out) < maxNames {
					out = append(out, path.Clean(dir))
				}
			}
		}
		return out, err
	}
	if d.RunPath, err = expand(runpath); err != nil {
		return nil, err
	}
	if d.RPath, err = expand(rpath); err != nil {
		return nil, err
	}
	return d, nil
}

// ErrNotELF is returned by ReadELF for a file without the ELF magic.
var ErrNotELF = errors.New("elfdeps: not an ELF file")

// Shebang returns the interpreter of a script that starts with "#!"
// (head is its first bytes), or "".
func Shebang(head []byte) string {
	if !bytes.HasPrefix(head, []byte("#!")) {
		return ""
	}
	line := head[2:]
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	} else if len(head) >= 256 {
		return "" // longer than the kernel's BINPRM_BUF_SIZE allows
	}
	fields := strings.Fields(string(line))
	if len(fields) == 0 || !strings.HasPrefix(fields[0], "/") {
		return ""
	}
	return fields[0]
}

// glibc ld.so.cache formats (elf/cache.c, sysdeps/generic/dl-cache.h).
const (
	cacheMagicOld   = "ld.so-1.7.0"
	cacheMagicNew   = "glibc-ld.so.cache1.1"
	newHeaderSize   = 48
	newEntrySize    = 24
	oldHeaderSize   = 16
	oldEntrySize    = 12
	flagTypeMask    = 0x00ff
	flagELFLibc6    = 0x0003
	flagArchMask    = 0xff00
	maxCacheEntries = 1 << 20
)

// CacheEntry is one library of ld.so.cache.
type CacheEntry struct {
	Name, Path string
	// Flags are glibc's: the type (libc6) and the architecture bits
	// (0x0300 x86-64, 0x0a00 AArch64 LP64, ...).
	Flags int32
}

// ParseLdCache parses glibc's /etc/ld.so.cache (the "1.1" format, alone
// or after the old one, as ldconfig writes it) and returns its libc6
// entries in file order, which is ld.so's order of preference.
func ParseLdCache(b []byte) ([]CacheEntry, error) {
	base := 0
	if bytes.HasPrefix(b, []byte(cacheMagicOld)) {
		if len(b) < oldHeaderSize {
			return nil, errors.New("elfdeps: ld.so.cache: short old header")
		}
		n := binary.LittleEndian.Uint32(b[12:])
		if n > maxCacheEntries {
			return nil, fmt.Errorf("elfdeps: ld.so.cache: %d old entries", n)
		}
		base = oldHeaderSize + int(n)*oldEntrySize
		base = (base + 7) &^ 7 // the new format is aligned
	}
	if len(b) < base+newHeaderSize || string(b[base:base+len(cacheMagicNew)]) != cacheMagicNew {
		return nil, errors.New("elfdeps: ld.so.cache: no glibc-ld.so.cache1.1 header")
	}
	h := b[base:]
	n := binary.LittleEndian.Uint32(h[20:])
	if n > maxCacheEntries || uint64(newHeaderSize)+uint64(n)*newEntrySize > uint64(len(h)) {
		return nil, fmt.Errorf("elfdeps: ld.so.cache: %d entries do not fit %d bytes", n, len(h))
	}
	// String offsets count from the start of the new-format header
	// (glibc's cache_data), after an old part too.
	str := func(off uint64) (string, bool) {
		if off >= uint64(len(b)) {
			return "", false
		}
		o := int(off)
		end := bytes.IndexByte(b[o:], 0)
		if end < 0 || end > 4096 {
			return "", false
		}
		return string(b[o : o+end]), true
	}
	var out []CacheEntry
	for i := uint32(0); i < n; i++ {
		e := h[newHeaderSize+int(i)*newEntrySize:]
		flags := int32(binary.LittleEndian.Uint32(e[0:]))
		if flags&flagTypeMask != flagELFLibc6 {
			continue
		}
		name, ok1 := str(uint64(binary.LittleEndian.Uint32(e[4:])) + uint64(base))
		p, ok2 := str(uint64(binary.LittleEndian.Uint32(e[8:])) + uint64(base))
		if !ok1 || !ok2 || name == "" || !strings.HasPrefix(p, "/") {
			continue
		}
		out = append(out, CacheEntry{Name: name, Path: p, Flags: flags})
	}
	return out, nil
}

// archFlags returns ld.so.cache's architecture bits for an ELF machine
// and class, and whether they are known.
func archFlags(m elf.Machine, c elf.Class) (int32, bool) {
	switch {
	case m == elf.EM_X86_64 && c == elf.ELFCLASS64:
		return 0x0300, true
	case m == elf.EM_AARCH64 && c == elf.ELFCLASS64:
		return 0x0a00, true
	case m == elf.EM_386:
		return 0, true
	}
	return 0, false
}

// DefaultDirs are ld.so's trusted directories for a machine, after the
// cache, in Debian's multiarch layout.
func DefaultDirs(m elf.Machine) []string {
	triplet := map[elf.Machine]string{elf.EM_X86_64: "x86_64-linux-gnu", elf.EM_AARCH64: "aarch64-linux-gnu", elf.EM_386: "i386-linux-gnu"}[m]
	var out []string
	if triplet != "" {
		out = append(out, "/lib/"+triplet, "/usr/lib/"+triplet)
	}
	return append(out, "/lib64", "/usr/lib64", "/lib", "/usr/lib")
}

// Candidates returns, in ld.so's order, the paths where the library name
// (a DT_NEEDED entry) of a file with deps d may be: a name with a slash
// as is; else DT_RPATH (only without DT_RUNPATH), DT_RUNPATH, the cache
// entries for the file's architecture, and the default directories.
func Candidates(name string, d *Deps, cache []CacheEntry) []string {
	if strings.Contains(name, "/") {
		return []string{path.Clean(name)}
	}
	var out []string
	if len(d.RunPath) == 0 {
		for _, dir := range d.RPath {
			out = append(out, path.Join(dir, name))
		}
	}
	for _, dir := range d.RunPath {
		out = append(out, path.Join(dir, name))
	}
	want, known := archFlags(d.Machine, d.Class)
	for _, e := range cache {
		if e.Name == name && (!known || e.Flags&flagArchMask == want) {
			out = append(out, e.Path)
		}
	}
	for _, dir := range DefaultDirs(d.Machine) {
		out = append(out, path.Join(dir, name))
	}
	seen := map[string]bool{}
	uniq := out[:0]
	for _, p := range out {
		if !seen[p] {
			seen[p] = true
			uniq = append(uniq, p)
		}
	}
	return uniq
}
