package rafs

import (
	"bytes"
	"sort"
)

// Node is one file of an in-memory filesystem tree, the input of Writer and
// the unit the builder and merge operate on.
//
// Hard links are expressed by pointing several Nodes at one *Inode.
type Node struct {
	// Name is the entry name in its parent (empty for the root).
	Name string
	// Inode holds the file's attributes and data; hard links share it.
	Inode *Inode
	// Children are the entries of a directory, kept sorted by name.
	Children []*Node
}

// Inode is the attributes and data location of one file.
type Inode struct {
	// Mode is the full st_mode (type and permission bits).
	Mode uint32
	UID  uint32
	GID  uint32
	// Mtime is seconds since the epoch; MtimeNsec the nanoseconds part.
	Mtime     uint64
	MtimeNsec uint32
	// Rdev is the Linux-encoded device number of a character or block device.
	Rdev uint32
	// Size is the file size (regular files) or symlink target length.
	Size uint64
	// Symlink is the target of a symbolic link.
	Symlink string
	// Xattrs are the extended attributes, sorted by name.
	Xattrs []Xattr
	// Chunks are the data chunks of a regular file, in file order.
	Chunks []ChunkInfo

	// Implicit marks a directory that a layer did not list itself (it
	// was created for entries below it). Nydus-Go records it as i_ino 0
	// (i_ino is informational: the runtime inode number is the nid);
	// merge then keeps the attributes of the directory below.
	Implicit bool

	// Nlink is computed by the writer; readers fill it from disk.
	Nlink uint32
	// Ino is the inode number recorded on disk (i_ino); informational.
	Ino uint32

	// Writer scratch state.
	nid       uint64
	offset    uint64
	layout    uint16
	dataBlk   uint32 // first block of out-of-line data
	dataSize  uint64 // directory or symlink data size
	dirBlocks [][]direntRec
}

// IsDir reports whether the inode is a directory.
func (i *Inode) IsDir() bool { return i.Mode&ModeType == ModeDir }

// IsRegular reports whether the inode is a regular file.
func (i *Inode) IsRegular() bool { return i.Mode&ModeType == ModeRegular }

// IsSymlink reports whether the inode is a symbolic link.
func (i *Inode) IsSymlink() bool { return i.Mode&ModeType == ModeSymlink }

// Child returns the child named name, or nil.
func (n *Node) Child(name string) *Node {
	i := sort.Search(len(n.Children), func(i int) bool { return n.Children[i].Name >= name })
	if i < len(n.Children) && n.Children[i].Name == name {
		return n.Children[i]
	}
	return nil
}

// SetChild inserts or replaces the child with c.Name, keeping order.
func (n *Node) SetChild(c *Node) {
	i := sort.Search(len(n.Children), func(i int) bool { return n.Children[i].Name >= c.Name })
	if i < len(n.Children) && n.Children[i].Name == c.Name {
		n.Children[i] = c
		return
	}
	n.Children = append(n.Children, nil)
	copy(n.Children[i+1:], n.Children[i:])
	n.Children[i] = c
}

// RemoveChild removes the child named name and reports whether it existed.
func (n *Node) RemoveChild(name string) bool {
	i := sort.Search(len(n.Children), func(i int) bool { return n.Children[i].Name >= name })
	if i < len(n.Children) && n.Children[i].Name == name {
		n.Children = append(n.Children[:i], n.Children[i+1:]...)
		return true
	}
	return false
}

// SortXattrs sorts xattrs by name, as they are stored on disk.
func SortXattrs(xs []Xattr) {
	sort.Slice(xs, func(i, j int) bool { return xs[i].Name < xs[j].Name })
}

// Walk calls fn for every node in depth-first, name order with its
// slash-separated absolute path ("/" for the root). Returning an error
// stops the walk.
func (n *Node) Walk(fn func(path string, n *Node) error) error {
	return n.walk("/", fn)
}

func (n *Node) walk(path string, fn func(string, *Node) error) error {
	if err := fn(path, n); err != nil {
		return err
	}
	for _, c := range n.Children {
		p := path + c.Name
		if path != "/" {
			p = path + "/" + c.Name
		}
		if err := c.walk(p, fn); err != nil {
			return err
		}
	}
	return nil
}

// less orders names bytewise, the order of EROFS dirents.
func less(a, b string) bool { return bytes.Compare([]byte(a), []byte(b)) < 0 }
