package builder

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/nydus-go/nydus/pkg/rafs"
	"golang.org/x/sys/unix"
)

// typeRegA is the pre-POSIX regular file flag ('\x00'), still found in
// old archives (archive/tar's TypeRegA is deprecated, not the flag).
const typeRegA = '\x00'

// fileSink receives the data of regular files as the tar is read.
type fileSink interface {
	addFile(ctx context.Context, name string, ino *rafs.Inode, r io.Reader) error
}

// WhiteoutSpec selects how whiteout entries of a layer are interpreted.
type WhiteoutSpec string

// Whiteout specifications accepted by create.
const (
	// WhiteoutOCI treats `.wh.NAME` and `.wh..wh..opq` as whiteouts.
	WhiteoutOCI WhiteoutSpec = "oci"
	// WhiteoutOverlayfs treats char 0/0 devices and directories with
	// trusted.overlay.opaque=y as whiteouts.
	WhiteoutOverlayfs WhiteoutSpec = "overlayfs"
	// WhiteoutNone keeps whiteout entries as ordinary files.
	WhiteoutNone WhiteoutSpec = "none"
)

// ParseWhiteoutSpec validates a --whiteout-spec value.
func ParseWhiteoutSpec(s string) (WhiteoutSpec, error) {
	switch WhiteoutSpec(s) {
	case WhiteoutOCI, WhiteoutOverlayfs, WhiteoutNone:
		return WhiteoutSpec(s), nil
	}
	return "", fmt.Errorf("invalid whiteout spec %q (want oci, overlayfs or none)", s)
}

// newDir returns a directory inode with upstream's defaults for implicit
// parents: mode 0755, owner 0:0, mtime 0, marked implicit.
func newDir() *rafs.Inode { return &rafs.Inode{Mode: rafs.ModeDir | 0o755, Implicit: true} }

// cleanName normalises a tar entry name into path components, rejecting
// names that escape the root or contain NUL.
func cleanName(name string) ([]string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return nil, fmt.Errorf("entry name %q contains NUL", name)
	}
	var parts []string
	for _, p := range strings.Split(name, "/") {
		switch p {
		case "", ".":
			continue
		case "..":
			return nil, fmt.Errorf("entry name %q contains '..'", name)
		}
		if len(p) > 255 {
			return nil, fmt.Errorf("entry name %q has a component longer than 255 bytes", name)
		}
		parts = append(parts, p)
	}
	return parts, nil
}

// tarTree builds a tree from a tar stream, handing file data to sink.
type tarTree struct {
	root *rafs.Node
	sink fileSink
	warn func(string)
}

func (t *tarTree) lookupDir(parts []string, create bool) (*rafs.Node, error) {
	n := t.root
	for i, p := range parts {
		c := n.Child(p)
		if c == nil {
			if !create {
				return nil, nil
			}
			c = &rafs.Node{Name: p, Inode: newDir()}
			n.SetChild(c)
		} else if !c.Inode.IsDir() {
			if !create {
				return nil, nil
			}
			// A later directory entry below a non-directory: the
			// non-directory is replaced, as tar extraction would.
			c = &rafs.Node{Name: p, Inode: newDir()}
			n.SetChild(c)
		}
		_ = i
		n = c
	}
	return n, nil
}

// readTar ingests a whole tar stream.
func readTar(ctx context.Context, r io.Reader, sink fileSink, warn func(string)) (*rafs.Node, error) {
	if warn == nil {
		warn = func(string) {}
	}
	t := &tarTree{root: &rafs.Node{Inode: newDir()}, sink: sink, warn: warn}
	tail := &tailReader{r: r}
	tr := tar.NewReader(tail)
	for index := 0; ; index++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			// archive/tar also reports a clean EOF for a stream cut at an
			// entry boundary; require the end-of-archive marker unless
			// the stream is empty.
			if tail.n > 0 && !tail.endMarker() {
				return nil, fmt.Errorf("tar stream ends after %d bytes without the end-of-archive marker: truncated tar", tail.n)
			}
			break
		}
		if err != nil {
			return nil, fmt.Errorf("tar entry %d: %w", index, describeTarErr(err))
		}
		if err := t.add(ctx, hdr, tr); err != nil {
			return nil, fmt.Errorf("tar entry %d %q: %w", index, hdr.Name, err)
		}
	}
	return t.root, nil
}

func describeTarErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("truncated tar stream: %w", err)
	}
	return err
}

func (t *tarTree) add(ctx context.Context, hdr *tar.Header, tr *tar.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	}
	parts, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	ino, skipped, err := inodeFromHeader(hdr)
	if err != nil {
		return err
	}
	for _, why := range skipped {
		t.warn(fmt.Sprintf("tar entry %q: %s", hdr.Name, why))
	}
	if len(parts) == 0 {
		// The root itself: only a directory may update it.
		if hdr.Typeflag != tar.TypeDir {
			return errors.New("root entry is not a directory")
		}
		t.root.Inode = ino
		return nil
	}
	parent, err := t.lookupDir(parts[:len(parts)-1], true)
	if err != nil {
		return err
	}
	name := parts[len(parts)-1]
	switch hdr.Typeflag {
	case tar.TypeLink:
		lparts, err := cleanName(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hard link target: %w", err)
		}
		target := t.find(lparts)
		if target == nil {
			return fmt.Errorf("hard link target %q does not exist in this layer", hdr.Linkname)
		}
		if target.Inode.IsDir() {
			return fmt.Errorf("hard link target %q is a directory", hdr.Linkname)
		}
		if target == parent.Child(name) {
			return nil
		}
		parent.SetChild(&rafs.Node{Name: name, Inode: target.Inode})
		return nil
	case tar.TypeDir:
		if old := parent.Child(name); old != nil && old.Inode.IsDir() {
			// Duplicate directory: the later attributes win, children stay.
			old.Inode.Mode, old.Inode.UID, old.Inode.GID = ino.Mode, ino.UID, ino.GID
			old.Inode.Mtime, old.Inode.MtimeNsec, old.Inode.Xattrs = ino.Mtime, ino.MtimeNsec, ino.Xattrs
			return nil
		}
		parent.SetChild(&rafs.Node{Name: name, Inode: ino})
		return nil
	case tar.TypeReg, typeRegA, tar.TypeGNUSparse, tar.TypeCont:
		if hdr.Size < 0 {
			return fmt.Errorf("negative size %d", hdr.Size)
		}
		ino.Size = uint64(hdr.Size)
		p := strings.Join(parts, "/")
		if err := t.sink.addFile(ctx, "/"+p, ino, tr); err != nil {
			return err
		}
	}
	parent.SetChild(&rafs.Node{Name: name, Inode: ino})
	return nil
}

func (t *tarTree) find(parts []string) *rafs.Node {
	n := t.root
	for _, p := range parts {
		if !n.Inode.IsDir() {
			return nil
		}
		n = n.Child(p)
		if n == nil {
			return nil
		}
	}
	return n
}

// inodeFromHeader converts tar metadata into an inode (without data).
func inodeFromHeader(hdr *tar.Header) (*rafs.Inode, []string, error) {
	perm := uint32(hdr.Mode) & 0o7777
	ino := &rafs.Inode{
		UID: uint32(hdr.Uid),
		GID: uint32(hdr.Gid),
	}
	if hdr.Uid < 0 || hdr.Gid < 0 || hdr.Uid > 0xffffffff || hdr.Gid > 0xffffffff {
		return nil, nil, fmt.Errorf("uid/gid %d/%d out of range", hdr.Uid, hdr.Gid)
	}
	mt := hdr.ModTime
	if !mt.IsZero() && mt.Unix() > 0 {
		ino.Mtime = uint64(mt.Unix())
		ino.MtimeNsec = uint32(mt.Nanosecond())
	}
	switch hdr.Typeflag {
	case tar.TypeReg, typeRegA, tar.TypeGNUSparse, tar.TypeCont, tar.TypeLink:
		ino.Mode = rafs.ModeRegular | perm
	case tar.TypeDir:
		ino.Mode = rafs.ModeDir | perm
	case tar.TypeSymlink:
		ino.Mode = rafs.ModeSymlink | 0o777
		if hdr.Linkname == "" {
			return nil, nil, errors.New("symlink with an empty target")
		}
		if len(hdr.Linkname) > 4095 {
			return nil, nil, fmt.Errorf("symlink target is %d bytes, longer than 4095", len(hdr.Linkname))
		}
		if strings.IndexByte(hdr.Linkname, 0) >= 0 {
			return nil, nil, errors.New("symlink target contains NUL")
		}
		ino.Symlink = hdr.Linkname
		ino.Size = uint64(len(hdr.Linkname))
	case tar.TypeChar:
		ino.Mode = rafs.ModeChar | perm
		ino.Rdev = uint32(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
	case tar.TypeBlock:
		ino.Mode = rafs.ModeBlock | perm
		ino.Rdev = uint32(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
	case tar.TypeFifo:
		ino.Mode = rafs.ModeFifo | perm
	default:
		return nil, nil, fmt.Errorf("unsupported tar entry type %q", string(hdr.Typeflag))
	}
	xs, skipped := xattrsFromPAX(hdr.PAXRecords)
	ino.Xattrs = xs
	return ino, skipped, nil
}

func xattrsFromPAX(recs map[string]string) (xs []rafs.Xattr, skipped []string) {
	for k, v := range recs {
		var name string
		switch {
		case strings.HasPrefix(k, "SCHILY.xattr."):
			name = strings.TrimPrefix(k, "SCHILY.xattr.")
		default:
			// LIBARCHIVE.xattr.* too: libarchive percent-encodes names
			// and base64s values; only the SCHILY form is authoritative
			// when both are present.
			continue
		}
		if why := xattrUnstorable(name, len(v)); why != "" {
			skipped = append(skipped, fmt.Sprintf("xattr %q dropped: %s", name, why))
			continue
		}
		xs = append(xs, rafs.Xattr{Name: name, Value: []byte(v)})
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].Name < xs[j].Name })
	sort.Strings(skipped)
	return xs, skipped
}

// xattrUnstorable says why an extended attribute cannot be kept in RAFS
// v6 (and so on Linux), or "" if it can.
func xattrUnstorable(name string, valueLen int) string {
	_, pl, ok := rafs.XattrIndex(name)
	switch {
	case !ok:
		return "RAFS v6 stores only user., trusted., security. and system.posix_acl_* attributes"
	case strings.HasSuffix(name[:pl], ".") && len(name) == pl:
		return "the name is empty after its namespace prefix (Linux cannot set it)"
	case len(name)-pl > 255:
		return fmt.Sprintf("the name is %d bytes after its namespace prefix, more than the 255 EROFS stores", len(name)-pl)
	case valueLen > 0xffff:
		return fmt.Sprintf("the value is %d bytes, more than the 65535 EROFS stores", valueLen)
	}
	return ""
}

// tailReader remembers the last 1024 bytes read, to check that a tar
// stream ends with the two zero blocks of the end-of-archive marker.
type tailReader struct {
	r    io.Reader
	n    int64
	tail [1024]byte
	fill int
}

func (t *tailReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.n += int64(n)
		b := p[:n]
		if len(b) >= len(t.tail) {
			copy(t.tail[:], b[len(b)-len(t.tail):])
			t.fill = len(t.tail)
		} else {
			keep := len(t.tail) - len(b)
			copy(t.tail[:], t.tail[len(b):])
			copy(t.tail[keep:], b)
			t.fill = min(t.fill+len(b), len(t.tail))
		}
	}
	return n, err
}

// endMarker reports whether the last bytes read contain a zero block
// pair at a 512-byte boundary (archive/tar stops reading right after it,
// possibly with padding behind).
func (t *tailReader) endMarker() bool {
	if t.fill < len(t.tail) || t.n%512 != 0 {
		return false
	}
	for _, c := range t.tail {
		if c != 0 {
			return false
		}
	}
	return true
}
