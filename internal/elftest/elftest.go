// Package elftest builds small ELF files for tests: programs and
// libraries with chosen dependencies, without a compiler.
package elftest

import (
	"debug/elf"
	"encoding/binary"
)

// Build returns a minimal little-endian x86-64 ELF shared object with
// a PT_INTERP (if interp is set), a PT_DYNAMIC naming needed, runpath and
// rpath, and one PT_LOAD at vaddr 0x400000 that holds the string table.
// It has no section headers, like a stripped loader-only file.
func Build(interp string, needed []string, runpath, rpath string) []byte {
	le := binary.LittleEndian
	const phoff, phnum, vaddr = 64, 3, 0x400000
	strtab := []byte{0}
	str := func(s string) uint64 {
		off := len(strtab)
		strtab = append(append(strtab, s...), 0)
		return uint64(off)
	}
	type dynent struct{ tag, val uint64 }
	var dyn []dynent
	for _, n := range needed {
		dyn = append(dyn, dynent{uint64(elf.DT_NEEDED), str(n)})
	}
	if runpath != "" {
		dyn = append(dyn, dynent{uint64(elf.DT_RUNPATH), str(runpath)})
	}
	if rpath != "" {
		dyn = append(dyn, dynent{uint64(elf.DT_RPATH), str(rpath)})
	}
	interpOff := uint64(phoff + phnum*56)
	interpB := append([]byte(interp), 0)
	strOff := interpOff + uint64(len(interpB))
	dynOff := strOff + uint64(len(strtab))
	dynOff = (dynOff + 7) &^ 7
	dyn = append(dyn, dynent{uint64(elf.DT_STRTAB), vaddr + strOff}, dynent{uint64(elf.DT_NULL), 0})
	size := dynOff + uint64(len(dyn))*16
	b := make([]byte, size)
	copy(b, elf.ELFMAG)
	b[elf.EI_CLASS], b[elf.EI_DATA], b[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1
	le.PutUint16(b[16:], uint16(elf.ET_DYN))
	le.PutUint16(b[18:], uint16(elf.EM_X86_64))
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[32:], phoff)
	le.PutUint16(b[52:], 64)
	le.PutUint16(b[54:], 56)
	le.PutUint16(b[56:], phnum)
	ph := func(i int, typ uint32, off, filesz uint64) {
		e := b[phoff+i*56:]
		le.PutUint32(e[0:], typ)
		le.PutUint64(e[8:], off)
		le.PutUint64(e[16:], vaddr+off)
		le.PutUint64(e[32:], filesz)
		le.PutUint64(e[40:], filesz)
	}
	ph(0, uint32(elf.PT_LOAD), 0, size)
	if interp != "" {
		ph(1, uint32(elf.PT_INTERP), interpOff, uint64(len(interpB)))
	} else {
		ph(1, uint32(elf.PT_NOTE), interpOff, uint64(len(interpB)))
	}
	ph(2, uint32(elf.PT_DYNAMIC), dynOff, uint64(len(dyn))*16)
	copy(b[interpOff:], interpB)
	copy(b[strOff:], strtab)
	for i, e := range dyn {
		le.PutUint64(b[dynOff+uint64(i)*16:], e.tag)
		le.PutUint64(b[dynOff+uint64(i)*16+8:], e.val)
	}
	return b
}
