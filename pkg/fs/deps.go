package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"

	"github.com/nydus-go/nydus/pkg/elfdeps"
	"github.com/nydus-go/nydus/pkg/fetch"
)

// Bounds of dependency speculation.
const (
	maxDepDepth   = 8         // libraries of libraries of ...
	maxDepBytes   = 256 << 20 // per filesystem
	maxDepFiles   = 4         // files fetched at once
	maxLdCache    = 16 << 20
	maxSymlinkHop = 40 // as the kernel
)

// depState is the state of dependency speculation.
type depState struct {
	mu    sync.Mutex
	done  map[uint64]bool // files speculated on or fetched; guarded by mu
	bytes int64           // stored bytes fetched so far; guarded by mu
	sem   chan struct{}   // bounds concurrent file fetches

	cacheOnce sync.Once
	cache     []elfdeps.CacheEntry // the image's /etc/ld.so.cache; set once
}

// Opened tells the filesystem that a regular file was opened (by the
// FUSE layer). With Options.Dependencies, when the file is a program (an
// ELF executable or library, or a "#!" script) its interpreter and the
// libraries ld.so will look for are fetched in the background, all at
// once, so that ld.so's serial chain of opens finds them local.
func (f *FS) Opened(nid uint64) {
	if !f.o.Dependencies || !f.deps.claim(nid) {
		return
	}
	f.Go(func(ctx context.Context) { f.speculate(ctx, nid, 0) })
}

// claim marks nid as handled and reports whether it was not already.
func (d *depState) claim(nid uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done == nil {
		d.done = map[uint64]bool{}
	}
	if d.done[nid] {
		return false
	}
	d.done[nid] = true
	return true
}

// speculate reads what the program nid needs and fetches it.
func (f *FS) speculate(ctx context.Context, nid uint64, depth int) {
	ino, err := f.Inode(ctx, nid)
	if err != nil || !ino.IsRegular() || ino.Size < 4 || depth > maxDepDepth {
		return
	}
	// The opened file's own head is what its opener reads next: a demand
	// read (so a race with the opener's read fetches it once, as
	// demand); what it needs is fetched as dependencies.
	hctx := fetch.WithKind(ctx, fetch.Dependency)
	if depth == 0 {
		hctx = fetch.WithKind(ctx, fetch.Demand)
	}
	ctx = fetch.WithKind(ctx, fetch.Dependency)
	r := &inodeReader{f: f, ctx: hctx, ino: ino}
	head := make([]byte, 256)
	n, _ := r.ReadAt(head, 0)
	var wants []string
	if interp := elfdeps.Shebang(head[:n]); interp != "" {
		wants = append(wants, interp)
	} else {
		dir := path.Dir(f.pathOf(ino))
		d, err := elfdeps.ReadELF(r, int64(ino.Size), dir)
		if err != nil {
			return // not a program, or a malformed one: nothing to do
		}
		if d.Interp != "" {
			wants = append(wants, d.Interp)
		}
		cache := f.ldCache(ctx)
		for _, name := range d.Needed {
			for _, c := range elfdeps.Candidates(name, d, cache) {
				if lib, err := f.resolvePath(ctx, c); err == nil && lib.IsRegular() {
					wants = append(wants, c)
					break
				}
			}
		}
	}
	var deps []*Inode
	for _, p := range wants {
		dep, err := f.resolvePath(ctx, p)
		if err != nil || !dep.IsRegular() || !f.deps.claim(dep.Nid) {
			continue
		}
		deps = append(deps, dep)
	}
	if f.o.Fetch.Cache != nil {
		// All of them at once: one stream, whose segments take several
		// files' chunks each (as ranges of one request where the
		// backend can), instead of a request per chunk.
		deps = f.streamDependencies(ctx, deps)
	}
	var wg sync.WaitGroup
	for _, dep := range deps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if f.o.Fetch.Cache != nil || f.fetchDependency(ctx, dep) {
				f.speculate(ctx, dep.Nid, depth+1)
			}
		}()
	}
	wg.Wait()
}

// depSegment bounds a dependency stream's requests.
const depSegment = 4 << 20

// streamDependencies streams the files within the byte budget (in
// order, until it is spent) and returns them.
func (f *FS) streamDependencies(ctx context.Context, deps []*Inode) []*Inode {
	var refs []fetch.Ref
	n := 0
	for _, dep := range deps {
		var size int64
		for _, a := range dep.addrs {
			c, _ := f.eng.Info(a.BlobIndex, a.CIIndex)
			size += int64(c.CompressedSize)
		}
		f.deps.mu.Lock()
		ok := f.deps.bytes+size <= maxDepBytes
		if ok {
			f.deps.bytes += size
		}
		f.deps.mu.Unlock()
		if !ok {
			break
		}
		refs = append(refs, f.fileRefs(dep)...)
		deps[n] = dep
		n++
		f.Metrics.DependencyFiles.Add(1)
		f.Metrics.DependencyBytes.Add(int64(dep.Size))
	}
	f.eng.Stream(ctx, refs, fetch.StreamOptions{Kind: fetch.Dependency, Max: depSegment, Workers: maxDepFiles})
	return deps[:n]
}

// fetchDependency fetches every chunk of a file within the byte budget;
// false when the budget is spent.
func (f *FS) fetchDependency(ctx context.Context, ino *Inode) bool {
	var size int64
	for _, a := range ino.addrs {
		c, _ := f.eng.Info(a.BlobIndex, a.CIIndex)
		size += int64(c.CompressedSize)
	}
	f.deps.mu.Lock()
	if f.deps.bytes+size > maxDepBytes {
		f.deps.mu.Unlock()
		return false
	}
	f.deps.bytes += size
	f.deps.mu.Unlock()
	select {
	case f.deps.sem <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	defer func() { <-f.deps.sem }()
	f.Metrics.DependencyFiles.Add(1)
	for k := range ino.addrs {
		if _, err := f.chunk(ctx, ino, k); err != nil {
			return false
		}
	}
	f.Metrics.DependencyBytes.Add(int64(ino.Size))
	return true
}

// ldCache returns the image's /etc/ld.so.cache entries (nil without
// one), read once.
func (f *FS) ldCache(ctx context.Context) []elfdeps.CacheEntry {
	f.deps.cacheOnce.Do(func() {
		ino, err := f.resolvePath(ctx, "/etc/ld.so.cache")
		if err != nil || !ino.IsRegular() || ino.Size > maxLdCache {
			return
		}
		b := make([]byte, ino.Size)
		if n, _ := (&inodeReader{f: f, ctx: ctx, ino: ino}).ReadAt(b, 0); n == len(b) {
			f.deps.cache, _ = elfdeps.ParseLdCache(b)
		}
	})
	return f.deps.cache
}

// pathOf returns a file's path in the image, or "/" if not known.
func (f *FS) pathOf(ino *Inode) string {
	if ino.path != "" {
		return ino.path
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.paths[ino.Nid]; ok {
		return p
	}
	return "/"
}

var errSymlinkLoop = errors.New("too many levels of symbolic links")

// resolvePath looks an absolute path up in the image, following symbolic
// links (including in the last component) as the kernel would inside a
// chroot of the image.
func (f *FS) resolvePath(ctx context.Context, p string) (*Inode, error) {
	hops := 0
	for {
		p = path.Clean("/" + p)
		cur, err := f.Inode(ctx, f.RootNid())
		if err != nil {
			return nil, err
		}
		dir := "/"
		parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
		restarted := false
		for i, name := range parts {
			if name == "" {
				continue
			}
			next, err := f.Lookup(ctx, cur.Nid, name)
			if err != nil {
				return nil, err
			}
			if next.IsSymlink() {
				if hops++; hops > maxSymlinkHop {
					return nil, fmt.Errorf("%s: %w", p, errSymlinkLoop)
				}
				target, err := f.Readlink(ctx, next.Nid)
				if err != nil {
					return nil, err
				}
				if !strings.HasPrefix(target, "/") {
					target = path.Join(dir, target)
				}
				p = path.Join(append([]string{target}, parts[i+1:]...)...)
				restarted = true
				break
			}
			cur, dir = next, path.Join(dir, name)
		}
		if !restarted {
			return cur, nil
		}
	}
}

// inodeReader reads a file's data through the chunk cache without
// counting it as a read by the workload.
type inodeReader struct {
	f   *FS
	ctx context.Context
	ino *Inode
}

func (r *inodeReader) ReadAt(p []byte, off int64) (int, error) {
	size := int64(r.ino.Size)
	if off >= size {
		return 0, io.EOF
	}
	cs := int64(r.f.rd.ChunkSize())
	n := 0
	for n < len(p) && off+int64(n) < size {
		pos := off + int64(n)
		k := int(pos / cs)
		if k >= len(r.ino.addrs) {
			return n, io.EOF
		}
		data, err := r.f.chunk(r.ctx, r.ino, k)
		if err != nil {
			return n, err
		}
		in := pos - int64(k)*cs
		if in >= int64(len(data)) {
			return n, io.EOF
		}
		n += copy(p[n:], data[in:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
