package builder

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/sys/unix"
)

// DirTar streams the directory tree at root as a tar archive, so that a
// directory build shares every rule of a tar build. Hard links are
// detected by (device, inode); xattrs are read without following links.
func DirTar(ctx context.Context, root string) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeDirTar(ctx, root, pw))
	}()
	return pr
}

type devIno struct{ dev, ino uint64 }

func writeDirTar(ctx context.Context, root string, w io.Writer) error {
	tw := tar.NewWriter(w)
	links := map[devIno]string{}
	err := walkSorted(root, "", func(rel string, info fs.FileInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		full := filepath.Join(root, rel)
		st, ok := info.Sys().(*unix.Stat_t)
		if !ok {
			var s unix.Stat_t
			if err := unix.Lstat(full, &s); err != nil {
				return fmt.Errorf("lstat %s: %w", full, err)
			}
			st = &s
		}
		name := rel
		if name == "" {
			name = "./"
		}
		hdr := &tar.Header{
			Name:    name,
			Mode:    int64(st.Mode & 0o7777),
			Uid:     int(st.Uid),
			Gid:     int(st.Gid),
			ModTime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
			Format:  tar.FormatPAX,
		}
		xs, err := listXattrs(full)
		if err != nil {
			return err
		}
		if len(xs) > 0 {
			hdr.PAXRecords = xs
		}
		key := devIno{uint64(st.Dev), uint64(st.Ino)}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			hdr.Typeflag = tar.TypeDir
			if rel != "" {
				hdr.Name += "/"
			}
		case unix.S_IFREG:
			if first, ok := links[key]; ok && st.Nlink > 1 {
				hdr.Typeflag = tar.TypeLink
				hdr.Linkname = first
				return tw.WriteHeader(hdr)
			}
			links[key] = name
			hdr.Typeflag = tar.TypeReg
			hdr.Size = st.Size
		case unix.S_IFLNK:
			t, err := os.Readlink(full)
			if err != nil {
				return fmt.Errorf("readlink %s: %w", full, err)
			}
			hdr.Typeflag = tar.TypeSymlink
			hdr.Linkname = t
		case unix.S_IFCHR, unix.S_IFBLK:
			hdr.Typeflag = tar.TypeChar
			if st.Mode&unix.S_IFMT == unix.S_IFBLK {
				hdr.Typeflag = tar.TypeBlock
			}
			hdr.Devmajor = int64(unix.Major(uint64(st.Rdev)))
			hdr.Devminor = int64(unix.Minor(uint64(st.Rdev)))
		case unix.S_IFIFO:
			hdr.Typeflag = tar.TypeFifo
		default:
			return nil // sockets cannot be represented
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", full, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			f, err := os.Open(full)
			if err != nil {
				return err
			}
			n, err := io.Copy(tw, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("read %s: %w", full, err)
			}
			if n != st.Size {
				return fmt.Errorf("%s changed size while reading", full)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// walkSorted visits root and its descendants in name order, not
// following symlinks.
func walkSorted(root, rel string, fn func(rel string, info fs.FileInfo) error) error {
	full := filepath.Join(root, rel)
	info, err := os.Lstat(full)
	if err != nil {
		return err
	}
	if err := fn(rel, info); err != nil {
		return err
	}
	if !info.IsDir() {
		return nil
	}
	ents, err := os.ReadDir(full)
	if err != nil {
		return err
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
	for _, e := range ents {
		if err := walkSorted(root, filepath.Join(rel, e.Name()), fn); err != nil {
			return err
		}
	}
	return nil
}

func listXattrs(path string) (map[string]string, error) {
	buf := make([]byte, 4096)
	for {
		n, err := unix.Llistxattr(path, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("listxattr %s: %w", path, err)
		}
		buf = buf[:n]
		break
	}
	out := map[string]string{}
	start := 0
	for i, c := range buf {
		if c != 0 {
			continue
		}
		name := string(buf[start:i])
		start = i + 1
		if name == "" {
			continue
		}
		val := make([]byte, 256)
		for {
			n, err := unix.Lgetxattr(path, name, val)
			if errors.Is(err, unix.ERANGE) {
				val = make([]byte, len(val)*4)
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("getxattr %s %s: %w", path, name, err)
			}
			val = val[:n]
			break
		}
		out["SCHILY.xattr."+name] = string(val)
	}
	return out, nil
}
