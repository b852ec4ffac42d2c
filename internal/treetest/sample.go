package treetest

import (
	"archive/tar"
	"bytes"
	"io"
	"math/rand"
	"strings"
	"time"
)

// File is one entry of a synthetic layer.
type File struct {
	Header tar.Header
	Data   []byte
}

// T is a shorthand base time for sample entries.
var T = time.Unix(1700000000, 123456789)

// Random returns n deterministic pseudo-random bytes.
func Random(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// Reg returns a regular file entry.
func Reg(name string, mode int64, data []byte) File {
	return File{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: T, Format: tar.FormatPAX}, Data: data}
}

// Dir returns a directory entry.
func Dir(name string, mode int64) File {
	return File{Header: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: T, Format: tar.FormatPAX}}
}

// Write writes files as a tar stream.
func Write(w io.Writer, files []File) error {
	tw := tar.NewWriter(w)
	for _, f := range files {
		h := f.Header
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(f.Data))
		}
		if err := tw.WriteHeader(&h); err != nil {
			return err
		}
		if len(f.Data) > 0 {
			if _, err := tw.Write(f.Data); err != nil {
				return err
			}
		}
	}
	return tw.Close()
}

// Tar returns files as tar bytes; it panics on error (test input only).
func Tar(files []File) []byte {
	var b bytes.Buffer
	if err := Write(&b, files); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// Sample returns a layer exercising every tar feature the builder must
// keep: all entry types, PAX and GNU long names and link targets, unicode
// and non-UTF-8 names, binary and empty xattrs, special permission bits,
// large uids, sub-second mtimes, hard links, duplicate entries (the last
// wins), identical file contents (dedup) and multi-chunk files.
func Sample() []File {
	big := Random(1, 3<<20+12345)
	cap := string([]byte{1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	withX := func(f File, kv ...string) File {
		f.Header.PAXRecords = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			f.Header.PAXRecords["SCHILY.xattr."+kv[i]] = kv[i+1]
		}
		return f
	}
	owned := func(f File, uid, gid int) File { f.Header.Uid, f.Header.Gid = uid, gid; return f }
	gnu := func(f File) File {
		f.Header.Format = tar.FormatGNU
		f.Header.ModTime = T.Truncate(time.Second)
		return f
	}
	longName := strings.Repeat("long-directory-name/", 8) + "file-with-a-very-long-name.txt"
	files := []File{
		Dir("./", 0o755),
		Dir("etc/", 0o755),
		Reg("etc/hostname", 0o644, []byte("nydus\n")),
		Reg("etc/empty", 0o600, nil),
		owned(Reg("etc/owned", 0o640, []byte("owned by 100000:70000\n")), 100000, 70000),
		Dir("bin/", 0o755),
		withX(Reg("bin/ping", 0o4755, Random(2, 70000)), "security.capability", cap, "user.empty", "", "trusted.note", "x\x00y"),
		Reg("bin/setgid", 0o2755, []byte("#!/bin/sh\n")),
		Dir("tmp/", 0o1777),
		Reg("data/big.bin", 0o644, big),
		Reg("data/big-copy.bin", 0o644, big),
		Reg("data/zeros", 0o644, make([]byte, 2<<20)),
		{Header: tar.Header{Typeflag: tar.TypeLink, Name: "data/big-link", Linkname: "data/big.bin", ModTime: T, Format: tar.FormatPAX}},
		{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: "data/sym", Linkname: "big.bin", Mode: 0o777, ModTime: T, Format: tar.FormatPAX}},
		{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: "data/longsym", Linkname: strings.Repeat("../", 60) + "target", Mode: 0o777, ModTime: T, Format: tar.FormatPAX}},
		gnu(File{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: "data/gnusym", Linkname: strings.Repeat("gnu/", 40) + "x", Mode: 0o777}}),
		{Header: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3, ModTime: T, Format: tar.FormatPAX}},
		{Header: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/sda1", Mode: 0o660, Devmajor: 8, Devminor: 1, ModTime: T, Format: tar.FormatPAX}},
		{Header: tar.Header{Typeflag: tar.TypeChar, Name: "dev/big-minor", Mode: 0o600, Devmajor: 300, Devminor: 70000, ModTime: T, Format: tar.FormatPAX}},
		{Header: tar.Header{Typeflag: tar.TypeFifo, Name: "run/fifo", Mode: 0o600, ModTime: T, Format: tar.FormatPAX}},
		Reg(longName, 0o644, []byte("pax long name\n")),
		gnu(Reg(strings.Repeat("gnu-long-name-", 10)+".txt", 0o644, []byte("gnu long name\n"))),
		Reg("unicode/ünïcødé-名前-🙂.txt", 0o644, []byte("unicode\n")),
		gnu(Reg("unicode/latin1-\xe9t\xe9.txt", 0o644, []byte("not utf-8\n"))),
		Reg("dup/file", 0o644, []byte("first version\n")),
		Reg("dup/file", 0o600, []byte("second version wins\n")),
		Reg("wh/.wh.gone", 0o644, nil),
		Reg("wh/opaque/.wh..wh..opq", 0o644, nil),
		Reg("wh/kept", 0o644, []byte("kept\n")),
	}
	return files
}
