package builder

import (
	"strings"

	"github.com/nydus-go/nydus/pkg/rafs"
)

// OCI whiteout names.
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	overlayOpaque  = "trusted.overlay.opaque"
)

// whiteoutBoth applies OCI and overlayfs whiteouts, as merge does.
const whiteoutBoth WhiteoutSpec = "oci+overlayfs"

func isOpaque(dir *rafs.Node, spec WhiteoutSpec) bool {
	if spec == whiteoutBoth {
		return isOpaque(dir, WhiteoutOCI) || isOpaque(dir, WhiteoutOverlayfs)
	}
	switch spec {
	case WhiteoutOCI:
		return dir.Child(whiteoutOpaque) != nil
	case WhiteoutOverlayfs:
		for _, x := range dir.Inode.Xattrs {
			if x.Name == overlayOpaque && string(x.Value) == "y" {
				return true
			}
		}
	}
	return false
}

// whiteoutTarget returns the name a whiteout entry hides, or ok=false.
func whiteoutTarget(c *rafs.Node, spec WhiteoutSpec) (string, bool) {
	if spec == whiteoutBoth {
		if t, ok := whiteoutTarget(c, WhiteoutOCI); ok {
			return t, ok
		}
		return whiteoutTarget(c, WhiteoutOverlayfs)
	}
	switch spec {
	case WhiteoutOCI:
		if c.Name == whiteoutOpaque {
			return "", true
		}
		if strings.HasPrefix(c.Name, whiteoutPrefix) {
			return c.Name[len(whiteoutPrefix):], true
		}
	case WhiteoutOverlayfs:
		if c.Inode.Mode&rafs.ModeType == rafs.ModeChar && c.Inode.Rdev == 0 {
			return c.Name, true
		}
	}
	return "", false
}

// stripOpaqueXattr drops the overlayfs opaque marker from a merged dir.
func stripOpaqueXattr(ino *rafs.Inode) {
	out := ino.Xattrs[:0:0]
	for _, x := range ino.Xattrs {
		if x.Name != overlayOpaque {
			out = append(out, x)
		}
	}
	ino.Xattrs = out
}

// applyLayer overlays upper onto lower in place, applying the whiteouts
// of spec, and returns the merged root. Whiteout entries never appear in
// the result. With spec none, upper entries are overlaid literally.
func applyLayer(lower, upper *rafs.Node, spec WhiteoutSpec) *rafs.Node {
	if lower == nil {
		lower = &rafs.Node{Inode: newDir()}
	}
	if !isImplicitDir(upper.Inode) {
		lower.Inode = upper.Inode
	}
	mergeDir(lower, upper, spec)
	return lower
}

func mergeDir(l, u *rafs.Node, spec WhiteoutSpec) {
	if isOpaque(u, spec) {
		l.Children = nil
	}
	if spec == WhiteoutOverlayfs || spec == whiteoutBoth {
		stripOpaqueXattr(l.Inode)
	}
	// Whiteouts hide only what is below: apply them all before adding
	// this layer's own entries, whatever their name order.
	for _, c := range u.Children {
		if target, ok := whiteoutTarget(c, spec); ok && target != "" {
			l.RemoveChild(target)
		}
	}
	for _, c := range u.Children {
		if _, ok := whiteoutTarget(c, spec); ok {
			continue
		}
		old := l.Child(c.Name)
		if old != nil && old.Inode.IsDir() && c.Inode.IsDir() {
			if !isImplicitDir(c.Inode) {
				old.Inode = c.Inode
			}
			mergeDir(old, c, spec)
			continue
		}
		l.SetChild(clean(c, spec))
	}
}

// clean returns c with whiteout entries removed from its subtree.
func clean(c *rafs.Node, spec WhiteoutSpec) *rafs.Node {
	if !c.Inode.IsDir() || spec == WhiteoutNone {
		return c
	}
	n := &rafs.Node{Name: c.Name, Inode: c.Inode}
	if spec == WhiteoutOverlayfs || spec == whiteoutBoth {
		stripOpaqueXattr(n.Inode)
	}
	for _, k := range c.Children {
		if _, ok := whiteoutTarget(k, spec); ok {
			continue
		}
		n.Children = append(n.Children, clean(k, spec))
	}
	return n
}

// isImplicitDir reports whether a directory was created because a layer
// tar listed entries below it but not the directory itself. Like tar
// extraction, which creates missing parents but leaves existing ones
// alone, such a directory does not override the directory below it.
func isImplicitDir(ino *rafs.Inode) bool { return ino.Implicit }
