package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nydus-go/nydus/pkg/cincludes"
	"github.com/nydus-go/nydus/pkg/elfdeps"
	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/nydus-go/nydus/pkg/pyimports"
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
	mu    sync.Mutex      // guards done, bytes, speculating and dirs; a leaf (see doc.go)
	done  map[uint64]bool // files speculated on or fetched; guarded by mu
	bytes int64           // stored bytes fetched so far; guarded by mu
	sem   chan struct{}   // bounds concurrent file fetches

	// speculating holds, for each file whose Opened speculation is
	// running, a channel closed when it ends. Guarded by mu.
	speculating map[uint64]chan struct{}
	// dirs are directory listings (name to nid) kept for resolving
	// imports and includes (treeCache); a nil map is a directory that
	// does not exist. Guarded by mu.
	dirs map[string]map[string]uint64

	gccOnce sync.Once
	gcc     []string // the image's /usr/lib/gcc/<triple>/<version>; set once

	cacheOnce sync.Once
	cache     []elfdeps.CacheEntry // the image's /etc/ld.so.cache; set once
}

// Opened tells the filesystem that a regular file was opened (by the
// FUSE layer). With Options.Dependencies, when the file is a program (an
// ELF executable or library, or a "#!" script) its interpreter and the
// libraries ld.so will look for are fetched in the background, all at
// once, so that ld.so's serial chain of opens finds them local; when it
// is a compiled Python module, so are the modules it imports when it is
// loaded. What those need is fetched in turn, level by level, up to
// maxDepDepth levels and maxDepBytes in all.
func (f *FS) Opened(nid uint64) {
	if !f.o.Dependencies || !f.deps.claim(nid) {
		return
	}
	// Read-ahead of the file waits for this (see readAheadAfter):
	// registered before the opener can read.
	done := make(chan struct{})
	f.deps.mu.Lock()
	if f.deps.speculating == nil {
		f.deps.speculating = map[uint64]chan struct{}{}
	}
	f.deps.speculating[nid] = done
	f.deps.mu.Unlock()
	end := func() {
		f.deps.mu.Lock()
		delete(f.deps.speculating, nid)
		f.deps.mu.Unlock()
		close(done)
	}
	if !f.spawn(func(ctx context.Context) {
		defer end()
		f.speculate(ctx, nid, 0)
	}) {
		end() // closing
	}
}

// maxReadAheadWait bounds how long read-ahead of a program waits for
// its dependencies.
const maxReadAheadWait = 2 * time.Second

// readAheadAfter waits until the speculation started when nid was opened
// has read what the file needs and fetched it (or maxReadAheadWait, or
// ctx). The opener needs those first: read-ahead of the program itself,
// started in the meantime, would take the bandwidth its libraries need
// (make bench: python's own read-ahead delayed libm, libz and libexpat
// by 0.2 s on the constrained profile). Speculation never waits for
// read-ahead, so this cannot deadlock.
func (f *FS) readAheadAfter(ctx context.Context, nid uint64) {
	f.deps.mu.Lock()
	done := f.deps.speculating[nid]
	f.deps.mu.Unlock()
	if done == nil {
		return
	}
	t := time.NewTimer(maxReadAheadWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	case <-ctx.Done():
	}
}

// storedSize is what fetching all of ino takes from the backend.
func (f *FS) storedSize(ino *Inode) int64 {
	var size int64
	for _, a := range ino.addrs {
		c, _ := f.eng.Info(a.BlobIndex, a.CIIndex)
		size += int64(c.CompressedSize)
	}
	return size
}

// spend takes size stored bytes from the speculation budget
// (maxDepBytes); false, and nothing taken, when they do not fit.
func (d *depState) spend(size int64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.bytes+size > maxDepBytes {
		return false
	}
	d.bytes += size
	return true
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
	wants, program := f.needs(ctx, ino, r)
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
	if program && depth == 0 && f.o.Fetch.Cache != nil {
		// A program being started: the rest of it comes now too, in
		// small segments (a page fault outside the few in flight gets
		// its own request), beside its libraries' libraries.
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.streamProgram(ctx, ino)
		}()
	}
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

// Bounds of streaming a program that is being started.
const (
	maxProgramBytes = 128 << 20 // stored bytes
	programSegment  = 1 << 20
	programWorkers  = 2
)

// streamProgram fetches an executable that was just opened, after its
// libraries: a dynamically linked program runs most of its text, which
// page faults would otherwise fetch one chunk (and read-ahead window) at
// a time (make bench: gcc's cc1, 33 MB, was fetched whole that way over
// 1.7 s on the constrained profile).
func (f *FS) streamProgram(ctx context.Context, ino *Inode) {
	if size := f.storedSize(ino); size > maxProgramBytes || !f.deps.spend(size) {
		return
	}
	f.eng.Stream(ctx, f.fileRefs(ino), fetch.StreamOptions{Kind: fetch.Dependency, Max: programSegment, Workers: programWorkers})
}

// needs returns the paths of what the file ino (read through r) makes its
// opener read next: a script's interpreter; an ELF program's interpreter
// and libraries, resolved as ld.so does; a compiled Python module's
// load-time imports, resolved as CPython's path finder does; a C or C++
// header's includes, resolved as GCC does. program reports a dynamically
// linked ELF program (one with an interpreter), which its opener is
// about to run.
func (f *FS) needs(ctx context.Context, ino *Inode, r *inodeReader) (wants []string, program bool) {
	// Without its path (see pathOf), only what the content tells:
	// a script's interpreter, an ELF program's interpreter and libraries
	// (but not those found relative to it, by $ORIGIN).
	p := f.pathOf(ino)
	tree := &treeCache{f: f, ctx: ctx}
	if loc, ok := pyimports.Locate(p); ok && p != "" {
		if ino.Size > pyimports.MaxSize {
			return nil, false
		}
		m, err := pyimports.Read(r, int64(ino.Size))
		if err != nil {
			return nil, false // not bytecode CPython 3.8+ wrote, or malformed
		}
		return pyimports.Resolve(tree, loc, m), false
	}
	if p != "" && cincludes.IsSource(p) {
		if ino.Size > cincludes.MaxSize {
			return nil, false
		}
		src := make([]byte, ino.Size)
		if n, _ := r.ReadAt(src, 0); n != len(src) {
			return nil, false
		}
		dirs := cincludes.SystemDirs(f.gccDirs(tree), cincludes.IsCXX(p))
		for _, inc := range cincludes.Parse(src) {
			for _, c := range cincludes.Resolve(p, inc, dirs) {
				if tree.IsFile(c) {
					wants = append(wants, c)
					break
				}
			}
		}
		return wants, false
	}
	head := make([]byte, 256)
	n, _ := r.ReadAt(head, 0)
	if interp := elfdeps.Shebang(head[:n]); interp != "" {
		return []string{interp}, false
	}
	origin := ""
	if p != "" {
		origin = path.Dir(p)
	}
	d, err := elfdeps.ReadELF(r, int64(ino.Size), origin)
	if err != nil {
		return nil, false // not a program, or a malformed one: nothing to do
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
	return wants, d.Interp != ""
}

// gccDirs returns the image's /usr/lib/gcc/<triple>/<version>
// directories, listed once.
func (f *FS) gccDirs(tree *treeCache) []string {
	f.deps.gccOnce.Do(func() {
		for _, triple := range tree.List("/usr/lib/gcc") {
			for _, v := range tree.List("/usr/lib/gcc/" + triple) {
				f.deps.gcc = append(f.deps.gcc, "/usr/lib/gcc/"+triple+"/"+v)
			}
		}
	})
	return f.deps.gcc
}

// treeCache answers "is this a regular file" and "what is in this
// directory" for import and include resolution (pyimports.FS): the
// directories it lists are looked up once per filesystem (the image is
// read-only), up to maxDirListings of them.
type treeCache struct {
	f   *FS
	ctx context.Context
}

// maxDirListings bounds the directory listings kept for resolution.
const maxDirListings = 4096

func (t *treeCache) dir(d string) map[string]uint64 {
	st := &t.f.deps
	st.mu.Lock()
	m, ok := st.dirs[d]
	st.mu.Unlock()
	if ok {
		return m
	}
	if ino, err := t.f.resolvePath(t.ctx, d); err == nil && ino.IsDir() {
		if ents, err := t.f.ReadDir(t.ctx, ino.Nid); err == nil {
			m = make(map[string]uint64, len(ents))
			for _, e := range ents {
				m[e.Name] = e.Nid
			}
		}
	}
	st.mu.Lock()
	if st.dirs == nil {
		st.dirs = map[string]map[string]uint64{}
	}
	if len(st.dirs) < maxDirListings {
		st.dirs[d] = m
	}
	st.mu.Unlock()
	return m
}

// IsFile implements pyimports.FS.
func (t *treeCache) IsFile(p string) bool {
	nid, ok := t.dir(path.Dir(p))[path.Base(p)]
	if !ok {
		return false
	}
	ino, err := t.f.Inode(t.ctx, nid)
	return err == nil && ino.IsRegular()
}

// List implements pyimports.FS.
func (t *treeCache) List(d string) []string {
	m := t.dir(d)
	out := make([]string, 0, len(m))
	for name := range m {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// SpeculateStartup fetches, in the background, what nearly every
// container reads first when it starts: the user and group databases
// (which the runtime reads to set the process's user up) and the shell
// (/bin/sh, which runs entrypoint scripts and "sh -c" commands), its
// interpreter and its libraries, while the runtime is still creating
// the container. Only with Options.Dependencies; the daemon calls it for
// images that name no hot set (with one, the hot set is what is
// streamed at mount).
func (f *FS) SpeculateStartup() {
	if !f.o.Dependencies {
		return
	}
	f.Go(func(ctx context.Context) {
		ctx = fetch.WithKind(ctx, fetch.Dependency)
		var files []*Inode
		var sh *Inode
		for _, p := range startupFiles {
			ino, err := f.resolvePath(ctx, p)
			if err != nil || !ino.IsRegular() || !f.deps.claim(ino.Nid) {
				continue
			}
			files = append(files, ino)
			if p == startupProgram {
				sh = ino
			}
		}
		if f.o.Fetch.Cache != nil {
			files = f.streamDependencies(ctx, files)
		} else {
			n := 0
			for _, ino := range files {
				if f.fetchDependency(ctx, ino) {
					files[n] = ino
					n++
				}
			}
			files = files[:n]
		}
		if sh != nil && slices.Contains(files, sh) {
			f.speculate(ctx, sh.Nid, 1)
		}
	})
}

// startupProgram is the program SpeculateStartup fetches with what it
// needs; startupFiles are all it fetches, in the order they are read.
const startupProgram = "/bin/sh"

var startupFiles = []string{"/etc/passwd", "/etc/group", startupProgram}

// depSegment bounds a dependency stream's requests.
const depSegment = 4 << 20

// streamDependencies streams the files within the byte budget (in
// order, until it is spent) and returns them.
func (f *FS) streamDependencies(ctx context.Context, deps []*Inode) []*Inode {
	var refs []fetch.Ref
	n := 0
	for _, dep := range deps {
		if !f.deps.spend(f.storedSize(dep)) {
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
	if !f.deps.spend(f.storedSize(ino)) {
		return false
	}
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

// pathOf returns the path a file was looked up by, or "" if the inode
// cache held it without one (it was evicted between the kernel's lookup
// and this use). It does not search: speculation runs on every open, and
// a search costs a walk of the image's directories.
func (f *FS) pathOf(ino *Inode) string { return ino.path }

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
