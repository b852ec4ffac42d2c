package rafs

import (
	"context"
	"fmt"
)

// ChunkResolver supplies the chunk information of (blob index, CI index)
// pairs that the bootstrap's chunk table does not describe.
type ChunkResolver func(blobIndex, ciIndex uint32) (ChunkInfo, bool)

// LoadOptions tune Load.
type LoadOptions struct {
	// Resolve is consulted for chunks missing from the chunk table.
	Resolve ChunkResolver
	// MaxEntries bounds the number of entries loaded (0: 16 million).
	MaxEntries int
}

// Load reads the whole tree into memory as Nodes, sharing Inodes between
// hard links. Each chunk is described from the bootstrap's chunk table
// (or opts.Resolve), with FileOffset and UncompressedSize set for its
// position in the file.
func (rd *Reader) Load(ctx context.Context, opts LoadOptions) (*Node, error) {
	table, err := rd.ChunkTable(ctx)
	if err != nil {
		return nil, err
	}
	type key struct{ blob, ci uint32 }
	byIndex := make(map[key]ChunkInfo, len(table))
	for _, c := range table {
		byIndex[key{c.BlobIndex, c.Index}] = c
	}
	max := opts.MaxEntries
	if max <= 0 {
		max = 16 << 20
	}
	inodes := map[uint64]*Inode{}
	nodes := map[string]*Node{}
	count := 0
	cs := uint64(rd.Ext.ChunkSize)
	var root *Node
	// Chunk index arrays of distinct inodes occupy distinct bytes.
	chunkBudget := uint64(rd.size) / ChunkAddrSize
	err = rd.Walk(ctx, func(p string, di *DiskInode) error {
		count++
		if count > max {
			return fmt.Errorf("tree has more than %d entries", max)
		}
		ino, ok := inodes[di.Nid]
		if !ok {
			ino = &Inode{
				Mode: di.Mode, UID: di.UID, GID: di.GID,
				Mtime: di.Mtime, MtimeNsec: di.MtimeNsec,
				Rdev: di.Rdev(), Size: di.Size, Xattrs: di.Xattrs,
				Nlink: di.Nlink, Ino: di.Ino,
				Implicit: di.IsDir() && di.Ino == 0,
			}
			switch {
			case di.IsSymlink():
				t, err := rd.Readlink(ctx, di)
				if err != nil {
					return fmt.Errorf("%s: %w", p, err)
				}
				ino.Symlink = t
			case di.IsRegular():
				addrs, err := rd.ChunkAddrs(ctx, di)
				if err != nil {
					return fmt.Errorf("%s: %w", p, err)
				}
				if uint64(len(addrs)) > chunkBudget {
					return fmt.Errorf("%s: chunk index arrays of different inodes overlap", p)
				}
				chunkBudget -= uint64(len(addrs))
				ino.Chunks = make([]ChunkInfo, len(addrs))
				for i, a := range addrs {
					c, ok := byIndex[key{a.BlobIndex, a.CIIndex}]
					if !ok && opts.Resolve != nil {
						c, ok = opts.Resolve(a.BlobIndex, a.CIIndex)
					}
					if !ok {
						return fmt.Errorf("%s: chunk %d (blob %d, index %d) is not in the chunk table", p, i, a.BlobIndex, a.CIIndex)
					}
					c.BlobIndex, c.Index = a.BlobIndex, a.CIIndex
					c.FileOffset = uint64(i) * cs
					want := FileChunkSize(di.Size, uint32(cs), i)
					if c.UncompressedSize == 0 {
						c.UncompressedSize = want
					}
					if c.UncompressedSize != want {
						return fmt.Errorf("%s: chunk %d (blob %d, index %d) holds %d bytes, the file's size needs %d", p, i, a.BlobIndex, a.CIIndex, c.UncompressedSize, want)
					}
					ino.Chunks[i] = c
				}
			}
			inodes[di.Nid] = ino
		}
		n := &Node{Inode: ino}
		if p == "/" {
			root = n
		} else {
			dir, name := splitPath(p)
			parent := nodes[dir]
			if parent == nil {
				return fmt.Errorf("%s: parent not loaded", p)
			}
			n.Name = name
			parent.Children = append(parent.Children, n)
		}
		if di.IsDir() {
			nodes[p] = n
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return root, nil
}

func splitPath(p string) (dir, name string) {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			if i == 0 {
				return "/", p[1:]
			}
			return p[:i], p[i+1:]
		}
	}
	return "/", p
}
