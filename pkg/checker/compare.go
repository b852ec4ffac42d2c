package checker

import (
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/nydus-go/nydus/pkg/rafs"
)

// comparer walks the expected (source) and the Nydus (target) trees
// side by side.
type comparer struct {
	r    *Report
	sums map[*rafs.Inode]*fileSum

	// Non-directory paths present on both sides with the same type, in
	// walk order, and their inodes on each side.
	common   []string
	srcAt    map[string]*fsInode
	tgtAt    map[string]*rafs.Inode
	srcLinks map[*fsInode][]string
	tgtLinks map[*rafs.Inode][]string
}

// compareTrees records in r every difference between the expected tree
// and the Nydus tree.
func compareTrees(r *Report, src *fsNode, tgt *rafs.Node, sums map[*rafs.Inode]*fileSum) {
	c := &comparer{r: r, sums: sums, srcAt: map[string]*fsInode{}, tgtAt: map[string]*rafs.Inode{},
		srcLinks: map[*fsInode][]string{}, tgtLinks: map[*rafs.Inode][]string{}}
	c.walk("/", src, tgt)
	c.hardlinks()
}

func (c *comparer) add(path, field, src, tgt string) {
	if len(c.r.Differences) >= MaxDifferences {
		c.r.MoreDifferences++
		return
	}
	c.r.Differences = append(c.r.Differences, Difference{Path: path, Field: field, Source: src, Target: tgt})
}

func child(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

func (c *comparer) walk(p string, s *fsNode, t *rafs.Node) {
	si, ti := s.ino, t.Inode
	if si.mode&rafs.ModeType != ti.Mode&rafs.ModeType {
		c.add(p, "type", describeSource(s), describeTarget(t))
		return
	}
	c.attrs(p, si, ti)
	if !s.isDir() {
		c.common = append(c.common, p)
		c.srcAt[p], c.tgtAt[p] = si, ti
		c.srcLinks[si] = append(c.srcLinks[si], p)
		c.tgtLinks[ti] = append(c.tgtLinks[ti], p)
		return
	}
	names := sortedNames(s)
	kids := t.Children
	if !sort.SliceIsSorted(kids, func(a, b int) bool { return kids[a].Name < kids[b].Name }) {
		kids = slices.Clone(kids)
		sort.Slice(kids, func(a, b int) bool { return kids[a].Name < kids[b].Name })
	}
	i, j := 0, 0
	for i < len(names) || j < len(kids) {
		switch {
		case j == len(kids) || (i < len(names) && names[i] < kids[j].Name):
			c.add(child(p, names[i]), "missing in target", describeSource(s.children[names[i]]), "")
			i++
		case i == len(names) || kids[j].Name < names[i]:
			c.add(child(p, kids[j].Name), "extra in target", "", describeTarget(kids[j]))
			j++
		default:
			c.walk(child(p, names[i]), s.children[names[i]], kids[j])
			i++
			j++
		}
	}
}

// attrs compares the attributes of two inodes of the same type.
func (c *comparer) attrs(p string, s *fsInode, t *rafs.Inode) {
	if sp, tp := s.mode&0o7777, t.Mode&0o7777; sp != tp {
		c.add(p, "mode", fmt.Sprintf("%04o", sp), fmt.Sprintf("%04o", tp))
	}
	if s.uid != t.UID {
		c.add(p, "uid", strconv.FormatUint(uint64(s.uid), 10), strconv.FormatUint(uint64(t.UID), 10))
	}
	if s.gid != t.GID {
		c.add(p, "gid", strconv.FormatUint(uint64(s.gid), 10), strconv.FormatUint(uint64(t.GID), 10))
	}
	switch t.Mode & rafs.ModeType {
	case rafs.ModeRegular:
		if s.size != t.Size {
			c.add(p, "size", strconv.FormatUint(s.size, 10), strconv.FormatUint(t.Size, 10))
		} else if fs := c.sums[t]; fs != nil && !fs.bad && fs.sum != s.sum {
			c.add(p, "content", "sha256:"+hex.EncodeToString(s.sum[:]), "sha256:"+hex.EncodeToString(fs.sum[:]))
		}
	case rafs.ModeSymlink:
		if s.symlink != t.Symlink {
			c.add(p, "symlink", strconv.Quote(s.symlink), strconv.Quote(t.Symlink))
		}
	case rafs.ModeChar, rafs.ModeBlock:
		major, minor := decodeDev(t.Rdev)
		if s.major != major || s.minor != minor {
			c.add(p, "rdev", fmt.Sprintf("%d:%d", s.major, s.minor), fmt.Sprintf("%d:%d", major, minor))
		}
	}
	tx := map[string]string{}
	for _, x := range t.Xattrs {
		tx[x.Name] = string(x.Value)
	}
	if !equalXattrs(s.xattrs, tx) {
		c.add(p, "xattrs", formatXattrs(s.xattrs), formatXattrs(tx))
	}
}

// hardlinks compares the hard-link groups of the paths present on both
// sides: two such paths must share an inode in the target exactly when
// they share one in the source.
func (c *comparer) hardlinks() {
	inBoth := make(map[string]bool, len(c.common))
	for _, p := range c.common {
		inBoth[p] = true
	}
	restrict := func(paths []string) []string {
		var out []string
		for _, q := range paths {
			if inBoth[q] {
				out = append(out, q)
			}
		}
		sort.Strings(out)
		return out
	}
	done := map[string]bool{}
	for _, p := range c.common {
		if done[p] {
			continue
		}
		sg := restrict(c.srcLinks[c.srcAt[p]])
		tg := restrict(c.tgtLinks[c.tgtAt[p]])
		for _, q := range sg {
			done[q] = true
		}
		if slices.Equal(sg, tg) {
			continue
		}
		for _, q := range tg {
			done[q] = true
		}
		c.add(p, "hardlinks", linkDesc(sg, p), linkDesc(tg, p))
	}
}

func linkDesc(group []string, self string) string {
	var others []string
	for _, q := range group {
		if q != self {
			others = append(others, q)
		}
	}
	if len(others) == 0 {
		return "not hard-linked"
	}
	const max = 8
	s := "hard-linked with " + strings.Join(others[:min(len(others), max)], ", ")
	if len(others) > max {
		s += fmt.Sprintf(" and %d more", len(others)-max)
	}
	return s
}

// decodeDev splits a Linux-encoded (new_encode_dev) device number.
func decodeDev(d uint32) (major, minor uint32) {
	return (d >> 8) & 0xfff, (d & 0xff) | ((d >> 12) & 0xfff00)
}

func equalXattrs(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func formatXattrs(m map[string]string) string {
	if len(m) == 0 {
		return "(none)"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		v := m[k]
		if len(v) > 64 {
			v = v[:64] + "…"
		}
		parts = append(parts, k+"="+strconv.Quote(v))
	}
	return strings.Join(parts, ", ")
}

func describeSource(n *fsNode) string {
	switch n.ino.mode & rafs.ModeType {
	case rafs.ModeDir:
		return fmt.Sprintf("directory with %d entries below", countSource(n)-1)
	case rafs.ModeRegular:
		return fmt.Sprintf("regular file, %d bytes", n.ino.size)
	case rafs.ModeSymlink:
		return "symlink to " + strconv.Quote(n.ino.symlink)
	}
	return rafs.TypeName(n.ino.mode)
}

func describeTarget(n *rafs.Node) string {
	switch n.Inode.Mode & rafs.ModeType {
	case rafs.ModeDir:
		cnt := 0
		n.Walk(func(string, *rafs.Node) error { cnt++; return nil })
		return fmt.Sprintf("directory with %d entries below", cnt-1)
	case rafs.ModeRegular:
		return fmt.Sprintf("regular file, %d bytes", n.Inode.Size)
	case rafs.ModeSymlink:
		return "symlink to " + strconv.Quote(n.Inode.Symlink)
	}
	return rafs.TypeName(n.Inode.Mode)
}

func countSource(n *fsNode) int {
	c := 1
	for _, k := range n.children {
		c += countSource(k)
	}
	return c
}
