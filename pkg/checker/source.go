package checker

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// OCI whiteout names (image-spec layer.md).
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// fsInode is the expected state of one file: its metadata and the
// sha256 of its content (never the content itself). Hard links share an
// fsInode.
type fsInode struct {
	mode         uint32 // type and permission bits, as st_mode
	uid, gid     uint32
	size         uint64
	symlink      string
	major, minor uint32
	xattrs       map[string]string
	sum          [sha256.Size]byte
}

// fsNode is one directory entry of the expected tree, or of the tree of
// one layer while it is read.
type fsNode struct {
	ino      *fsInode
	children map[string]*fsNode // directories only

	// Layer-tree state, meaningless once merged into the image tree.
	implicit  bool            // a parent directory the layer does not list
	opaque    bool            // the layer has .wh..wh..opq in this directory
	whiteouts map[string]bool // names the layer deletes from lower layers
}

func (n *fsNode) isDir() bool { return n.ino.mode&rafs.ModeType == rafs.ModeDir }

func newDirNode(implicit bool) *fsNode {
	return &fsNode{ino: &fsInode{mode: rafs.ModeDir | 0o755}, children: map[string]*fsNode{}, implicit: implicit}
}

// buildSourceTree applies the layers of img in order and returns the
// root of the resulting filesystem.
func buildSourceTree(ctx context.Context, img v1.Image, o *Options) (*fsNode, []string, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, nil, err
	}
	if len(cf.RootFS.DiffIDs) != len(layers) {
		return nil, nil, fmt.Errorf("its config lists %d rootfs.diff_ids for %d layers", len(cf.RootFS.DiffIDs), len(layers))
	}
	root := newDirNode(false)
	var warns []string
	for i, l := range layers {
		d, _ := l.Digest()
		mt, err := l.MediaType()
		if err != nil {
			return nil, nil, fmt.Errorf("layer %d (%s): %w", i, d, err)
		}
		if mt == imageref.MediaTypeNydusBlob {
			return nil, nil, imageref.Errorf(ErrSourceIsNydus, nil, "layer %d (%s) is a Nydus blob: the source must be the OCI image the target was converted from", i, d)
		}
		if !isLayerMediaType(mt) {
			return nil, nil, fmt.Errorf("layer %d (%s) has unsupported media type %q", i, d, mt)
		}
		o.Log.Info("reading source layer", "layer", i, "digest", d)
		upper, w, err := readSourceLayer(ctx, l, cf.RootFS.DiffIDs[i], root)
		if err != nil {
			return nil, nil, fmt.Errorf("layer %d (%s): %w", i, d, err)
		}
		for _, s := range w {
			warns = append(warns, fmt.Sprintf("layer %d: %s", i, s))
		}
		applyLayer(root, upper)
	}
	return root, warns, nil
}

// readSourceLayer streams one layer into a layer tree, checking its
// diff_id. lower is the image tree below it, for hard links that point
// into lower layers.
func readSourceLayer(ctx context.Context, l v1.Layer, diffID v1.Hash, lower *fsNode) (*fsNode, []string, error) {
	rc, err := l.Compressed()
	if err != nil {
		return nil, nil, err
	}
	defer rc.Close()
	h := sha256.New()
	stream, closeDec, err := decompress(rc, h)
	if err != nil {
		return nil, nil, err
	}
	defer closeDec()
	lt := &layerTree{root: newDirNode(true), lower: lower}
	tr := tar.NewReader(stream)
	for {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read tar: %w", err)
		}
		if err := lt.add(hdr, tr); err != nil {
			return nil, nil, fmt.Errorf("tar entry %q: %w", hdr.Name, err)
		}
	}
	if err := drain(stream, rc); err != nil {
		return nil, nil, err
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != diffID.String() {
		return nil, nil, fmt.Errorf("uncompressed content has digest %s, the config's diff_id is %s", got, diffID)
	}
	return lt.root, lt.warns, nil
}

// layerTree is the tree of one layer as its tar is read: later entries
// replace earlier ones, whiteouts are recorded on their directory.
type layerTree struct {
	root  *fsNode
	lower *fsNode
	warns []string
}

// splitName normalises a tar entry name into path components.
func splitName(name string) ([]string, error) {
	var parts []string
	for _, p := range strings.Split(name, "/") {
		switch p {
		case "", ".":
			continue
		case "..":
			return nil, errors.New("the name contains '..'")
		}
		parts = append(parts, p)
	}
	return parts, nil
}

// dir returns the layer-tree directory at parts, creating implicit
// directories (and replacing non-directories) on the way, as extracting
// the tar would.
func (lt *layerTree) dir(parts []string) *fsNode {
	n := lt.root
	for _, p := range parts {
		c := n.children[p]
		if c == nil || !c.isDir() {
			c = newDirNode(true)
			n.children[p] = c
		}
		n = c
	}
	return n
}

// find looks a path up in a tree, without following symlinks.
func find(root *fsNode, parts []string) *fsNode {
	n := root
	for _, p := range parts {
		if n.children == nil {
			return nil
		}
		if n = n.children[p]; n == nil {
			return nil
		}
	}
	return n
}

func (lt *layerTree) add(hdr *tar.Header, tr *tar.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	}
	parts, err := splitName(hdr.Name)
	if err != nil {
		return err
	}
	if len(parts) == 0 {
		if hdr.Typeflag != tar.TypeDir {
			return errors.New("the root entry is not a directory")
		}
		lt.root.ino = inodeOf(hdr)
		lt.root.implicit = false
		return nil
	}
	name := parts[len(parts)-1]
	parent := lt.dir(parts[:len(parts)-1])
	if name == whiteoutOpaque {
		parent.opaque = true
		return nil
	}
	if target, ok := strings.CutPrefix(name, whiteoutPrefix); ok {
		if parent.whiteouts == nil {
			parent.whiteouts = map[string]bool{}
		}
		parent.whiteouts[target] = true
		return nil
	}
	switch hdr.Typeflag {
	case tar.TypeLink:
		lparts, err := splitName(hdr.Linkname)
		if err != nil {
			return fmt.Errorf("hard link target %q: %w", hdr.Linkname, err)
		}
		t := find(lt.root, lparts)
		if t == nil {
			t = find(lt.lower, lparts)
		}
		if t == nil || t.isDir() {
			lt.warns = append(lt.warns, fmt.Sprintf("hard link %q: target %q is not a file of this or a lower layer; entry ignored", hdr.Name, hdr.Linkname))
			return nil
		}
		parent.children[name] = &fsNode{ino: t.ino}
		return nil
	case tar.TypeDir:
		ino := inodeOf(hdr)
		if old := parent.children[name]; old != nil && old.isDir() {
			// A repeated directory: the later attributes win, the
			// children stay.
			old.ino, old.implicit = ino, false
			return nil
		}
		n := newDirNode(false)
		n.ino = ino
		parent.children[name] = n
		return nil
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeCont:
		ino := inodeOf(hdr)
		h := sha256.New()
		n, err := io.Copy(h, tr)
		if err != nil {
			return err
		}
		ino.size = uint64(n)
		h.Sum(ino.sum[:0])
		parent.children[name] = &fsNode{ino: ino}
		return nil
	case tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		parent.children[name] = &fsNode{ino: inodeOf(hdr)}
		return nil
	}
	lt.warns = append(lt.warns, fmt.Sprintf("entry %q of unsupported type %q ignored", hdr.Name, string(hdr.Typeflag)))
	return nil
}

// inodeOf converts tar metadata into an expected inode.
func inodeOf(hdr *tar.Header) *fsInode {
	perm := uint32(hdr.Mode) & 0o7777
	ino := &fsInode{uid: uint32(hdr.Uid), gid: uint32(hdr.Gid)}
	switch hdr.Typeflag {
	case tar.TypeDir:
		ino.mode = rafs.ModeDir | perm
	case tar.TypeSymlink:
		// Linux ignores a symlink's permission bits; they read 0777.
		ino.mode = rafs.ModeSymlink | 0o777
		ino.symlink = hdr.Linkname
		ino.size = uint64(len(hdr.Linkname))
	case tar.TypeChar:
		ino.mode = rafs.ModeChar | perm
		ino.major, ino.minor = uint32(hdr.Devmajor), uint32(hdr.Devminor)
	case tar.TypeBlock:
		ino.mode = rafs.ModeBlock | perm
		ino.major, ino.minor = uint32(hdr.Devmajor), uint32(hdr.Devminor)
	case tar.TypeFifo:
		ino.mode = rafs.ModeFifo | perm
	default:
		ino.mode = rafs.ModeRegular | perm
	}
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		// RAFS v6 stores only these namespaces; the converter drops
		// the others with a warning, as upstream does.
		if _, _, ok := rafs.XattrIndex(name); !ok {
			continue
		}
		if ino.xattrs == nil {
			ino.xattrs = map[string]string{}
		}
		ino.xattrs[name] = v
	}
	return ino
}

// applyLayer merges a layer tree onto the image tree, with OCI
// semantics: an opaque marker clears the lower contents of its
// directory, a whiteout deletes the lower entry it names (never one of
// its own layer), a directory merges with a lower directory and takes
// its attributes unless it is implicit, anything else replaces the lower
// entry.
func applyLayer(lower, upper *fsNode) {
	if !upper.implicit {
		lower.ino = upper.ino
	}
	mergeDir(lower, upper)
}

func mergeDir(l, u *fsNode) {
	if u.opaque {
		clear(l.children)
	}
	for name := range u.whiteouts {
		delete(l.children, name)
	}
	for name, c := range u.children {
		old := l.children[name]
		if old != nil && old.isDir() && c.isDir() {
			if !c.implicit {
				old.ino = c.ino
			}
			mergeDir(old, c)
			continue
		}
		l.children[name] = detach(c)
	}
}

// detach clears the layer-tree state of a subtree joining the image.
func detach(n *fsNode) *fsNode {
	n.implicit, n.opaque, n.whiteouts = false, false, nil
	for _, c := range n.children {
		detach(c)
	}
	return n
}

// sortedNames returns the names of a directory's children, bytewise
// sorted like EROFS directory entries.
func sortedNames(n *fsNode) []string {
	names := make([]string, 0, len(n.children))
	for k := range n.children {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}
