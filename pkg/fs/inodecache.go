package fs

import (
	"context"
	"path"
	"unsafe"

	"github.com/nydus-go/nydus/internal/lru"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// defaultInodeCacheBytes is the budget of the private InodeCache of a
// filesystem opened without Options.Inodes.
const defaultInodeCacheBytes = 8 << 20

// InodeCache keeps decoded inodes and directory listings of every
// filesystem that shares it, up to a byte budget, least recently used
// out first (Options.Inodes). A filesystem keeps no other per-inode
// state: what is not in the cache is decoded from the bootstrap again
// when it is needed, so the memory a daemon spends on metadata is what
// this budget allows, whatever the number and the size of its images.
// The kernel's node ids need nothing of it (they are the inodes' nids).
type InodeCache struct {
	c *lru.Cache[inodeKey, any] // values *Inode or []rafs.Dirent
}

type inodeKey struct {
	fs   uint64 // FS.id
	nid  uint64
	list bool // the directory's listing, not its inode
}

// NewInodeCache returns an InodeCache of max bytes; max <= 0 keeps
// nothing (every use decodes the inode again).
func NewInodeCache(max int64) *InodeCache {
	return &InodeCache{c: lru.New[inodeKey, any](max)}
}

// Bytes returns the (estimated) bytes held.
func (c *InodeCache) Bytes() int64 { return c.c.Cost() }

// entryOverhead is what an entry costs beyond its own fields: the list
// element, the map slot, the key, the interface, and the rounding of
// each allocation to its size class (measured: a heap profile of a
// daemon with a full cache holds 1.0 to 1.1 times its estimate).
const entryOverhead = 250

// inodeCost estimates the memory an Inode holds.
func inodeCost(ino *Inode) int64 {
	n := int64(unsafe.Sizeof(Inode{})+unsafe.Sizeof(rafs.DiskInode{})) + entryOverhead
	n += int64(len(ino.addrs)) * int64(unsafe.Sizeof(rafs.ChunkAddr{}))
	n += int64(len(ino.path))
	for _, x := range ino.Xattrs {
		n += int64(len(x.Name)+len(x.Value)) + int64(unsafe.Sizeof(x))
	}
	return n
}

// listCost estimates the memory a directory listing holds.
func listCost(ents []rafs.Dirent) int64 {
	n := int64(entryOverhead)
	for _, e := range ents {
		n += int64(unsafe.Sizeof(e)) + int64(len(e.Name))
	}
	return n
}

func (c *InodeCache) inode(fs, nid uint64) *Inode {
	if v, ok := c.c.Get(inodeKey{fs: fs, nid: nid}); ok {
		return v.(*Inode)
	}
	return nil
}

func (c *InodeCache) addInode(fs uint64, ino *Inode) {
	c.c.Add(inodeKey{fs: fs, nid: ino.Nid}, ino, inodeCost(ino))
}

func (c *InodeCache) list(fs, nid uint64) ([]rafs.Dirent, bool) {
	if v, ok := c.c.Get(inodeKey{fs: fs, nid: nid, list: true}); ok {
		return v.([]rafs.Dirent), true
	}
	return nil, false
}

func (c *InodeCache) addList(fs, nid uint64, ents []rafs.Dirent) {
	c.c.Add(inodeKey{fs: fs, nid: nid, list: true}, ents, listCost(ents))
}

// drop removes a filesystem's entries (it is closed).
func (c *InodeCache) drop(fs uint64) {
	c.c.RemoveFunc(func(k inodeKey) bool { return k.fs == fs })
}

// childPath is the path of name in the directory at dir ("" if dir's is
// not known).
func childPath(dir, name string) string {
	if dir == "" {
		return ""
	}
	return path.Join(dir, name)
}

// findPaths searches the image for a path of each inode of want, depth
// first from the root, in one search; an inode with none is left out.
// It reads directories (through the listing cache): it is for inodes
// the cache no longer holds with their paths, when paths are needed
// (dependency speculation, a log line, an event), not for every read.
func (f *FS) findPaths(ctx context.Context, want map[uint64]bool) map[uint64]string {
	out := map[uint64]string{}
	if want[f.rd.RootNid()] {
		out[f.rd.RootNid()] = "/"
	}
	seen := map[uint64]bool{}
	var search func(dir uint64, p string, depth int)
	search = func(dir uint64, p string, depth int) {
		if seen[dir] || depth > 255 || ctx.Err() != nil || len(out) == len(want) {
			return
		}
		seen[dir] = true
		ents, err := f.ReadDir(ctx, dir)
		if err != nil {
			return
		}
		for _, e := range ents {
			if _, done := out[e.Nid]; want[e.Nid] && !done {
				out[e.Nid] = path.Join(p, e.Name)
			}
		}
		for _, e := range ents {
			if e.Type == 2 { // a directory
				search(e.Nid, path.Join(p, e.Name), depth+1)
			}
		}
	}
	search(f.rd.RootNid(), "/", 0)
	return out
}

// Paths returns a path of each of nids in the image (none for one that
// has none): those the inode cache holds with the inode, the others
// found in one search of the image's directories.
func (f *FS) Paths(nids []uint64) map[uint64]string {
	out := map[uint64]string{}
	want := map[uint64]bool{}
	for _, nid := range nids {
		if ino := f.inodes.inode(f.id, nid); ino != nil && ino.path != "" {
			out[nid] = ino.path
		} else {
			want[nid] = true
		}
	}
	if len(want) > 0 {
		for nid, p := range f.findPaths(f.bg, want) {
			out[nid] = p
		}
	}
	return out
}
