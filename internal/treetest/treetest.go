// Package treetest describes filesystem trees for tests: it reads a tree
// from a tar stream (with tar extraction semantics) or from a mounted
// directory, compares trees, and generates sample layers that exercise
// every tar feature the builder must preserve.
package treetest

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// typeRegA is the pre-POSIX regular file flag ('\x00'), still found in
// old archives (archive/tar's TypeRegA is deprecated, not the flag).
const typeRegA = '\x00'

// Entry is the observable state of one path.
type Entry struct {
	Type    byte // tar type flag: '0' reg, '5' dir, '2' symlink, '3' chr, '4' blk, '6' fifo
	Mode    int64
	UID     int
	GID     int
	Mtime   int64 // nanoseconds since the epoch
	Size    int64
	SHA256  string
	Link    string
	Major   int64
	Minor   int64
	Xattrs  map[string]string
	Links   string // the sorted, joined paths of all hard links of a file
	inodeID int
	// implicit marks a parent directory the layer did not list.
	implicit bool
}

// Tree maps absolute paths ("/" for the root) to entries.
type Tree map[string]*Entry

// Options tune reading.
type Options struct {
	// IgnoreRootAttrs skips the root's attributes.
	IgnoreRootAttrs bool
	// IgnoreMtimeNsec truncates mtimes to seconds.
	IgnoreMtimeNsec bool
	// SkipXattrs ignores xattrs whose name has one of these prefixes.
	SkipXattrs []string
}

// FromTar reads a tar stream with extraction semantics: later entries
// replace earlier ones and hard links share an inode. Whiteouts are kept
// as ordinary files.
func FromTar(r io.Reader, o Options) (Tree, error) {
	t := Tree{"/": {Type: tar.TypeDir, Mode: 0o755, implicit: true}}
	tr := tar.NewReader(r)
	next := 1
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		p := path.Clean("/" + h.Name)
		e := &Entry{Type: h.Typeflag, Mode: h.Mode & 0o7777, UID: h.Uid, GID: h.Gid,
			Mtime: h.ModTime.UnixNano(), Xattrs: map[string]string{}}
		for k, v := range h.PAXRecords {
			if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok && !skipped(name, o.SkipXattrs) {
				e.Xattrs[name] = v
			}
		}
		switch h.Typeflag {
		case tar.TypeReg, typeRegA, tar.TypeGNUSparse:
			e.Type = tar.TypeReg
			hash := sha256.New()
			n, err := io.Copy(hash, tr)
			if err != nil {
				return nil, err
			}
			e.Size, e.SHA256 = n, hex.EncodeToString(hash.Sum(nil))
		case tar.TypeLink:
			target := t[path.Clean("/"+h.Linkname)]
			if target == nil {
				return nil, fmt.Errorf("hard link %s to missing %s", p, h.Linkname)
			}
			if old := t[p]; old == target {
				continue
			}
			t[p] = target
			removeChildren(t, p)
			continue
		case tar.TypeSymlink:
			e.Link = h.Linkname
		case tar.TypeChar, tar.TypeBlock:
			e.Major, e.Minor = h.Devmajor, h.Devminor
		case tar.TypeDir:
			if old := t[p]; old != nil && old.Type == tar.TypeDir {
				*old = *e
				continue
			}
		}
		if old := t[p]; old != nil && old.Type == tar.TypeDir && e.Type != tar.TypeDir {
			removeChildren(t, p)
		}
		e.inodeID = next
		next++
		// Implicit parents.
		for d := path.Dir(p); t[d] == nil; d = path.Dir(d) {
			t[d] = &Entry{Type: tar.TypeDir, Mode: 0o755, Xattrs: map[string]string{}, implicit: true}
		}
		t[p] = e
	}
	t.finish(o)
	return t, nil
}

func skipped(name string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func removeChildren(t Tree, dir string) {
	for p := range t {
		if strings.HasPrefix(p, dir+"/") {
			delete(t, p)
		}
	}
}

// finish computes hard link groups and applies options.
func (t Tree) finish(o Options) {
	groups := map[*Entry][]string{}
	for p, e := range t {
		if e.Type == tar.TypeReg {
			groups[e] = append(groups[e], p)
		}
	}
	out := Tree{}
	for p, e := range t {
		c := *e
		if e.Type == tar.TypeReg {
			g := groups[e]
			sort.Strings(g)
			c.Links = strings.Join(g, ",")
		}
		if o.IgnoreMtimeNsec {
			c.Mtime = c.Mtime / 1e9 * 1e9
		}
		if e.Type == tar.TypeDir {
			c.Size = 0
		}
		out[p] = &c
	}
	if o.IgnoreRootAttrs {
		out["/"] = &Entry{Type: tar.TypeDir}
	}
	for k := range t {
		delete(t, k)
	}
	for k, v := range out {
		t[k] = v
	}
}

// FromDir reads a tree from a directory (e.g. a mount point).
func FromDir(root string, o Options) (Tree, error) {
	t := Tree{}
	byIno := map[uint64]*Entry{}
	err := filepath.Walk(root, func(full string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, full)
		p := path.Clean("/" + filepath.ToSlash(rel))
		var st unix.Stat_t
		if err := unix.Lstat(full, &st); err != nil {
			return err
		}
		if e, ok := byIno[st.Ino]; ok && st.Mode&unix.S_IFMT == unix.S_IFREG {
			t[p] = e
			return nil
		}
		e := &Entry{Mode: int64(st.Mode & 0o7777), UID: int(st.Uid), GID: int(st.Gid),
			Mtime: st.Mtim.Nano(), Xattrs: map[string]string{}}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			e.Type = tar.TypeDir
		case unix.S_IFREG:
			e.Type = tar.TypeReg
			f, err := os.Open(full)
			if err != nil {
				return err
			}
			h := sha256.New()
			n, err := io.Copy(h, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("read %s: %w", full, err)
			}
			e.Size, e.SHA256 = n, hex.EncodeToString(h.Sum(nil))
		case unix.S_IFLNK:
			e.Type = tar.TypeSymlink
			if e.Link, err = os.Readlink(full); err != nil {
				return err
			}
		case unix.S_IFCHR, unix.S_IFBLK:
			e.Type = tar.TypeChar
			if st.Mode&unix.S_IFMT == unix.S_IFBLK {
				e.Type = tar.TypeBlock
			}
			e.Major, e.Minor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		case unix.S_IFIFO:
			e.Type = tar.TypeFifo
		default:
			return fmt.Errorf("%s: unexpected file type %o", full, st.Mode)
		}
		xs, err := xattrs(full)
		if err != nil {
			return err
		}
		for k, v := range xs {
			if !skipped(k, o.SkipXattrs) {
				e.Xattrs[k] = v
			}
		}
		byIno[st.Ino] = e
		t[p] = e
		return nil
	})
	if err != nil {
		return nil, err
	}
	t.finish(o)
	return t, nil
}

func xattrs(p string) (map[string]string, error) {
	out := map[string]string{}
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if errors.Is(err, unix.ENOTSUP) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listxattr %s: %w", p, err)
	}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s %s: %w", p, name, err)
		}
		out[name] = string(v[:m])
	}
	return out, nil
}

// Diff describes the differences between want and got ("" if equal).
func Diff(want, got Tree) string {
	var out []string
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			out = append(out, "missing "+p)
			continue
		}
		if d := w.diff(g); d != "" {
			out = append(out, p+": "+d)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			out = append(out, "unexpected "+p)
		}
	}
	sort.Strings(out)
	if len(out) > 20 {
		out = append(out[:20], fmt.Sprintf("... and %d more", len(out)-20))
	}
	return strings.Join(out, "\n")
}

func (e *Entry) diff(o *Entry) string {
	var d []string
	f := func(name string, a, b any) {
		if fmt.Sprint(a) != fmt.Sprint(b) {
			d = append(d, fmt.Sprintf("%s %v != %v", name, a, b))
		}
	}
	f("type", string(e.Type), string(o.Type))
	f("mode", fmt.Sprintf("%o", e.Mode), fmt.Sprintf("%o", o.Mode))
	f("uid", e.UID, o.UID)
	f("gid", e.GID, o.GID)
	f("mtime", e.Mtime, o.Mtime)
	f("size", e.Size, o.Size)
	f("sha256", e.SHA256, o.SHA256)
	f("link", e.Link, o.Link)
	f("dev", fmt.Sprint(e.Major, ":", e.Minor), fmt.Sprint(o.Major, ":", o.Minor))
	f("xattrs", sortedMap(e.Xattrs), sortedMap(o.Xattrs))
	f("hardlinks", e.Links, o.Links)
	return strings.Join(d, "; ")
}

func sortedMap(m map[string]string) string {
	var ks []string
	for k, v := range m {
		ks = append(ks, fmt.Sprintf("%s=%q", k, v))
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

// Remove deletes p and everything below it.
func (t Tree) Remove(p string) {
	delete(t, p)
	removeChildren(t, p)
}

// ApplyOCI returns lower with the OCI layer upper applied: `.wh.NAME`
// removes NAME, `.wh..wh..opq` empties its directory, other entries
// replace what is below them. Neither whiteout appears in the result.
func ApplyOCI(lower, upper Tree) Tree {
	out := Tree{}
	for p, e := range lower {
		out[p] = e
	}
	// Opaque markers first: they hide only lower content.
	for p := range upper {
		if path.Base(p) == ".wh..wh..opq" {
			removeChildren(out, path.Dir(p))
		}
	}
	for p := range upper {
		if base := path.Base(p); strings.HasPrefix(base, ".wh.") && base != ".wh..wh..opq" {
			out.Remove(path.Join(path.Dir(p), base[len(".wh."):]))
		}
	}
	for p, e := range upper {
		if strings.HasPrefix(path.Base(p), ".wh.") {
			continue
		}
		if old := out[p]; old != nil && old.Type == tar.TypeDir && e.Type != tar.TypeDir {
			removeChildren(out, p)
		}
		if old := out[p]; old != nil && old.Type == tar.TypeDir && e.implicitDir() {
			continue // tar extraction keeps an existing directory
		}
		out[p] = e
	}
	// Recompute hard link groups over the merged paths.
	groups := map[string][]string{}
	for p, e := range out {
		if e.Links != "" {
			groups[e.Links] = append(groups[e.Links], p)
		}
	}
	for p, e := range out {
		if e.Links != "" {
			g := groups[e.Links]
			sort.Strings(g)
			c := *e
			c.Links = strings.Join(g, ",")
			out[p] = &c
		}
	}
	return out
}

// implicitDir reports whether e has the attributes of a parent directory
// that its layer did not list.
func (e *Entry) implicitDir() bool { return e.Type == tar.TypeDir && e.implicit }
