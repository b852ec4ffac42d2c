package fs

import (
	"context"
	"path"
	"sync"

	"github.com/nydus-go/nydus/pkg/fetch"
)

// Bounds of small-file directory speculation.
const (
	// siblingMaxFile is the largest file that counts as small: a miss of
	// one triggers the speculation, and only small files are fetched.
	siblingMaxFile = 64 << 10
	// siblingMaxDir bounds the data of a directory's small files: a
	// directory holding more (a large library of modules, of which a
	// program imports a few) is left to demand reads.
	siblingMaxDir = 512 << 10
)

// siblingState remembers the directories speculated on.
type siblingState struct {
	mu   sync.Mutex      // guards done; a leaf
	done map[string]bool // directory paths; guarded by mu
}

func (s *siblingState) claim(dir string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		s.done = map[string]bool{}
	}
	if s.done[dir] {
		return false
	}
	s.done[dir] = true
	return true
}

// missedSmall is called when a read of a small file had to fetch from
// the backend. With Options.Siblings, the other small files of its
// directory are streamed in the background, once per directory, if
// their data is at most siblingMaxDir: an interpreter importing a
// package reads its modules one after another, each miss waiting for
// its own round trip, and a package's modules (Python's __pycache__,
// a Node package's files) sit in one directory.
func (f *FS) missedSmall(ino *Inode) {
	if !f.o.Siblings || f.o.Fetch.Cache == nil || ino.Size > siblingMaxFile || ino.path == "" {
		return
	}
	dir := path.Dir(ino.path)
	if !f.sibs.claim(dir) {
		return
	}
	f.Go(func(ctx context.Context) {
		ctx = fetch.WithKind(ctx, fetch.Sibling)
		d, err := f.lookupPath(ctx, dir)
		if err != nil || !d.IsDir() {
			return
		}
		ents, err := f.ReadDir(ctx, d.Nid)
		if err != nil {
			return
		}
		var refs []fetch.Ref
		var size int64
		files := 0
		for _, e := range ents {
			if e.Nid == ino.Nid {
				continue
			}
			sib, err := f.Inode(ctx, e.Nid)
			if err != nil || !sib.IsRegular() || sib.Size == 0 || sib.Size > siblingMaxFile {
				continue
			}
			if size += int64(sib.Size); size > siblingMaxDir {
				return
			}
			refs = append(refs, f.fileRefs(sib)...)
			files++
		}
		if files == 0 {
			return
		}
		f.Metrics.SiblingFiles.Add(int64(files))
		f.eng.Stream(ctx, refs, fetch.StreamOptions{Kind: fetch.Sibling, Max: siblingMaxDir, Workers: 1})
	})
}
