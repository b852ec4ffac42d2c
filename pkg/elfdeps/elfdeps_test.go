package elfdeps

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/nydus-go/nydus/internal/elftest"
)

func TestReadELFBuilt(t *testing.T) {
	b := elftest.Build("/lib64/ld-linux-x86-64.so.2", []string{"libfoo.so.1", "libc.so.6"}, "$ORIGIN/../lib:/opt/x", "/old")
	d, err := ReadELF(bytes.NewReader(b), int64(len(b)), "/app/bin")
	if err != nil {
		t.Fatal(err)
	}
	want := &Deps{Interp: "/lib64/ld-linux-x86-64.so.2", Needed: []string{"libfoo.so.1", "libc.so.6"},
		RunPath: []string{"/app/lib", "/opt/x"}, RPath: []string{"/old"}, Machine: elf.EM_X86_64, Class: elf.ELFCLASS64}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("got %+v\nwant %+v", d, want)
	}
	// With DT_RUNPATH, DT_RPATH is not searched; the cache and the
	// default directories follow.
	c := Candidates("libfoo.so.1", d, []CacheEntry{{Name: "libfoo.so.1", Path: "/lib/x86_64-linux-gnu/libfoo.so.1", Flags: 0x0303}, {Name: "libfoo.so.1", Path: "/lib32/libfoo.so.1", Flags: 0x0003}})
	if c[0] != "/app/lib/libfoo.so.1" || c[1] != "/opt/x/libfoo.so.1" || c[2] != "/lib/x86_64-linux-gnu/libfoo.so.1" || slices.Contains(c, "/old/libfoo.so.1") || slices.Contains(c, "/lib32/libfoo.so.1") {
		t.Fatalf("candidates %v", c)
	}
	if _, err := ReadELF(bytes.NewReader([]byte("#!/bin/sh\n")), 10, "/"); err != ErrNotELF {
		t.Fatalf("a script: %v", err)
	}
	for _, tc := range []struct{ head, want string }{
		{"#!/bin/sh\necho", "/bin/sh"}, {"#! /usr/bin/env python3\n", "/usr/bin/env"}, {"#!relative\n", ""}, {"\x7fELF", ""},
	} {
		if got := Shebang([]byte(tc.head)); got != tc.want {
			t.Errorf("Shebang(%q) = %q, want %q", tc.head, got, tc.want)
		}
	}
}

// TestReadELFMatchesDebugELF: on the machine's own programs and
// libraries, ReadELF (program headers only) finds what debug/elf (section
// headers) finds.
func TestReadELFMatchesDebugELF(t *testing.T) {
	exe, _ := os.Executable()
	paths := []string{exe}
	for _, dir := range []string{"/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.Type().IsRegular() && len(paths) < 80 {
				paths = append(paths, filepath.Join(dir, e.Name()))
			}
		}
	}
	checked := 0
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		fi, _ := f.Stat()
		d, err := ReadELF(f, fi.Size(), filepath.Dir(p))
		ef, eerr := elf.NewFile(f)
		if err == ErrNotELF || eerr != nil {
			f.Close()
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", p, err)
			f.Close()
			continue
		}
		want, _ := ef.DynString(elf.DT_NEEDED)
		if !reflect.DeepEqual(d.Needed, want) && !(len(d.Needed) == 0 && len(want) == 0) {
			t.Errorf("%s: needed %v, debug/elf says %v", p, d.Needed, want)
		}
		for _, pr := range ef.Progs {
			if pr.Type == elf.PT_INTERP {
				b := make([]byte, pr.Filesz)
				pr.ReadAt(b, 0)
				if w := strings.TrimRight(string(b), "\x00"); d.Interp != w {
					t.Errorf("%s: interp %q, debug/elf says %q", p, d.Interp, w)
				}
			}
		}
		checked++
		f.Close()
	}
	if checked < 2 {
		t.Fatalf("only %d ELF files checked", checked)
	}
	t.Logf("%d ELF files agree with debug/elf", checked)
}

// TestParseLdCacheMatchesLdconfig: the machine's /etc/ld.so.cache parses
// to what `ldconfig -p` prints.
func TestParseLdCacheMatchesLdconfig(t *testing.T) {
	b, err := os.ReadFile("/etc/ld.so.cache")
	ldconfig, lerr := exec.LookPath("ldconfig")
	if err != nil || lerr != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI runs on Debian: /etc/ld.so.cache %v, ldconfig %v", err, lerr)
		}
		t.Skip("no /etc/ld.so.cache or ldconfig (not glibc)")
	}
	es, err := ParseLdCache(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(ldconfig, "-p").Output()
	if err != nil {
		t.Fatal(err)
	}
	var want, got []string
	for _, l := range strings.Split(string(out), "\n") {
		// "	libz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1"
		if i := strings.Index(l, " => "); i > 0 && strings.Contains(l, "(libc6") {
			want = append(want, strings.Fields(l)[0]+"="+strings.TrimSpace(l[i+4:]))
		}
	}
	for _, e := range es {
		got = append(got, e.Name+"="+e.Path)
	}
	sort.Strings(want)
	sort.Strings(got)
	if len(want) == 0 || !reflect.DeepEqual(got, want) {
		t.Fatalf("%d entries parsed, ldconfig -p lists %d", len(got), len(want))
	}
	t.Logf("%d entries agree with ldconfig -p", len(got))
}

func FuzzReadELF(f *testing.F) {
	f.Add(elftest.Build("/lib64/ld-linux-x86-64.so.2", []string{"libfoo.so.1"}, "$ORIGIN", ""))
	f.Add(elftest.Build("", nil, "", "/r"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ReadELF(bytes.NewReader(b), int64(len(b)), "/o")
		Shebang(b)
	})
}

func FuzzParseLdCache(f *testing.F) {
	seed := make([]byte, newHeaderSize+newEntrySize+32)
	copy(seed, cacheMagicNew)
	binary.LittleEndian.PutUint32(seed[20:], 1)
	e := seed[newHeaderSize:]
	binary.LittleEndian.PutUint32(e[0:], 0x0303)
	binary.LittleEndian.PutUint32(e[4:], uint32(newHeaderSize+newEntrySize))
	binary.LittleEndian.PutUint32(e[8:], uint32(newHeaderSize+newEntrySize+8))
	copy(seed[newHeaderSize+newEntrySize:], "libz.so\x00/lib/libz.so\x00")
	f.Add(seed)
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := ParseLdCache(b)
		if err == nil {
			for _, e := range es {
				if e.Name == "" || !strings.HasPrefix(e.Path, "/") {
					t.Fatalf("bad entry %+v", e)
				}
			}
		}
	})
}
