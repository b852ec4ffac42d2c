package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/nydus-go/nydus/pkg/rafs"
)

// The hot set: the files of a prefetch list are written first in the
// blob, in list order (which is first-access order), so that a daemon
// fetches them with a few large range requests from the blob's start.
//
// The tar order rarely matches the list, so a build with a hot set spools
// every file's data to an unlinked temporary file while the tar is read
// (memory stays bounded by the number of entries, not their size), then
// hands the hot files to the chunk pipeline in list order and the rest in
// tar order. Chunks already known (deduplicated against a parent, a chunk
// dictionary or a lower layer) keep their place, as in any build.

// namesRoot reports whether a hot list names the root: then every file
// is hot, tar order is as good as any, and nothing is spooled (what
// nydus-snapshotter's converter asks with its default pattern "/").
func namesRoot(hot []string) bool {
	for _, p := range hot {
		if len(splitPath(path.Clean("/"+p))) == 0 {
			return true
		}
	}
	return false
}

// spooled is one regular file's data in the spool.
type spooled struct {
	name string
	ino  *rafs.Inode
	off  int64
}

// spool is a fileSink that keeps file data in a temporary file.
type spool struct {
	f     *os.File
	size  int64
	files []spooled
}

func newSpool(dir string) (*spool, error) {
	f, err := os.CreateTemp(dir, "nydus-hotset-*")
	if err != nil {
		return nil, fmt.Errorf("hot-set spool: %w", err)
	}
	// Unlinked at once: nothing is left behind if the build dies.
	os.Remove(f.Name())
	return &spool{f: f}, nil
}

func (s *spool) Close() error { return s.f.Close() }

func (s *spool) addFile(ctx context.Context, name string, ino *rafs.Inode, r io.Reader) error {
	if ino.Size > MaxFileSize {
		return fmt.Errorf("%s: size %d exceeds the limit of %d bytes (2^44, a blob's uncompressed address space)", name, ino.Size, uint64(MaxFileSize))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	n, err := io.Copy(io.NewOffsetWriter(s.f, s.size), io.LimitReader(r, int64(ino.Size)))
	if err == nil && n < int64(ino.Size) {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("data of %s ends at offset %d, header says %d bytes: %w", name, n, ino.Size, io.ErrUnexpectedEOF)
		}
		return fmt.Errorf("spool data of %s at offset %d: %w", name, n, err)
	}
	s.files = append(s.files, spooled{name: name, ino: ino, off: s.size})
	s.size += n
	return nil
}

// emit hands the spooled files to sink: first the regular files that the
// hot paths name in tree (directories recursively, in name order,
// symlinks followed inside tree), in list order, then every other
// spooled file in tar order. A file is emitted once, whatever the number
// of its names.
func (s *spool) emit(ctx context.Context, tree *rafs.Node, hot []string, sink fileSink) error {
	byIno := make(map[*rafs.Inode]int, len(s.files))
	for i, f := range s.files {
		byIno[f.ino] = i
	}
	done := make([]bool, len(s.files))
	send := func(i int) error {
		if done[i] {
			return nil
		}
		done[i] = true
		f := s.files[i]
		return sink.addFile(ctx, f.name, f.ino, io.NewSectionReader(s.f, f.off, int64(f.ino.Size)))
	}
	for _, p := range hot {
		n := resolve(tree, p)
		if n == nil {
			continue
		}
		err := n.Walk(func(_ string, c *rafs.Node) error {
			if i, ok := byIno[c.Inode]; ok && c.Inode.IsRegular() {
				return send(i)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for i := range s.files {
		if err := send(i); err != nil {
			return err
		}
	}
	return nil
}

// maxSymlinkHops bounds symlink resolution, as the kernel's ELOOP does.
const maxSymlinkHops = 40

// resolve looks an absolute path up in tree, following symlinks (of the
// final component too) that stay inside tree; nil if it is not there.
func resolve(tree *rafs.Node, p string) *rafs.Node {
	hops := 0
	parts := splitPath(p)
	var stack []*rafs.Node // the directories walked, for ".."
	n := tree
	for len(parts) > 0 {
		name := parts[0]
		parts = parts[1:]
		switch name {
		case ".":
			continue
		case "..":
			if len(stack) > 0 {
				n, stack = stack[len(stack)-1], stack[:len(stack)-1]
			}
			continue
		}
		if !n.Inode.IsDir() {
			return nil
		}
		c := n.Child(name)
		if c == nil {
			return nil
		}
		if c.Inode.IsSymlink() {
			if hops++; hops > maxSymlinkHops {
				return nil
			}
			target := c.Inode.Symlink
			if strings.HasPrefix(target, "/") {
				n, stack = tree, nil
			}
			parts = append(splitPath(target), parts...)
			continue
		}
		stack = append(stack, n)
		n = c
	}
	return n
}

// splitPath splits a path into its components, without resolving "."
// or "..": a symlink's target is resolved against the tree.
func splitPath(p string) []string {
	var out []string
	for _, s := range strings.Split(p, "/") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
