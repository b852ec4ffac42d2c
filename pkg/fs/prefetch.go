package fs

import (
	"context"
	"path"
	"strings"

	"github.com/nydus-go/nydus/pkg/fetch"
)

// PrefetchOptions configure background prefetch.
type PrefetchOptions struct {
	// Paths are absolute paths to fetch first (directories recursively):
	// the bootstrap's prefetch table and --prefetch-files. Their chunks
	// are the hot set, streamed at once, in path order, with a few large
	// requests (see fetch.Engine.Stream).
	Paths []string
	// All fetches every file afterwards (fs_prefetch.prefetch_all), in
	// requests of at most MergeSize stored bytes, behind every other kind
	// of request.
	All bool
	// Workers is the number of prefetch_all requests in flight (default
	// 4; fs_prefetch.threads_count).
	Workers int
	// MergeSize bounds prefetch_all's requests (default
	// fetch.DefaultMergeSize; fs_prefetch.merging_size).
	MergeSize int64
	// BytesPerSecond limits the fetched (stored) bytes; 0: unlimited.
	BytesPerSecond int64
}

// PrefetchTablePaths returns the paths of the bootstrap's prefetch table.
func (f *FS) PrefetchTablePaths(ctx context.Context) []string {
	if len(f.rd.Prefetch) == 0 {
		return nil
	}
	want := map[uint64]bool{}
	for _, nid := range f.rd.Prefetch {
		want[nid] = true
	}
	var out []string
	f.walk(ctx, f.RootNid(), "/", func(p string, ino *Inode) bool {
		if want[ino.Nid] {
			out = append(out, p)
		}
		return true
	})
	return out
}

// walk visits the tree depth-first; fn returns false to stop. A
// directory is entered once: a crafted bootstrap whose directories loop
// (which rafs.Open cannot rule out without walking the whole tree) ends
// the walk instead of running it forever.
func (f *FS) walk(ctx context.Context, nid uint64, p string, fn func(string, *Inode) bool) bool {
	return f.walkOnce(ctx, nid, p, map[uint64]bool{}, fn)
}

func (f *FS) walkOnce(ctx context.Context, nid uint64, p string, entered map[uint64]bool, fn func(string, *Inode) bool) bool {
	if ctx.Err() != nil {
		return false
	}
	ino, err := f.Inode(ctx, nid)
	if err != nil {
		return true
	}
	if !fn(p, ino) {
		return false
	}
	if !ino.IsDir() || entered[nid] {
		return true
	}
	entered[nid] = true
	ents, err := f.ReadDir(ctx, nid)
	if err != nil {
		return true
	}
	for _, e := range ents {
		if !f.walkOnce(ctx, e.Nid, path.Join(p, e.Name), entered, fn) {
			return false
		}
	}
	return true
}

// Prefetch fetches file data into the cache in the background: the hot
// set (o.Paths) streamed first, then, with o.All, every other file.
// Foreground reads are never blocked: a read of a chunk that a running
// request holds waits for it, and other reads go before prefetch_all's
// requests. It returns when done or when ctx ends.
func (f *FS) Prefetch(ctx context.Context, o PrefetchOptions) {
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.MergeSize <= 0 {
		o.MergeSize = fetch.DefaultMergeSize
	}
	var lim *fetch.Limiter
	if o.BytesPerSecond > 0 {
		lim = fetch.NewLimiter(o.BytesPerSecond)
	}
	defer func() {
		// Prefetched files get whole-file caches (passthrough).
		if f.o.Copies != nil && ctx.Err() == nil {
			for nid := range seenFiles(f) {
				f.EnsureWholeFile(ctx, nid)
			}
		}
	}()
	seen := map[uint64]bool{}
	collect := func(refs *[]fetch.Ref) func(string, *Inode) bool {
		return func(p string, ino *Inode) bool {
			if ctx.Err() != nil {
				return false
			}
			if !ino.IsRegular() || seen[ino.Nid] {
				return true
			}
			seen[ino.Nid] = true
			f.mu.Lock()
			f.prefetched[ino.Nid] = true
			f.mu.Unlock()
			*refs = append(*refs, f.fileRefs(ino)...)
			return true
		}
	}
	var hot []fetch.Ref
	// Hot files come in the stream's order: dependency speculation
	// leaves them alone rather than race the stream with requests of
	// its own.
	collectHot := func(refs *[]fetch.Ref) func(string, *Inode) bool {
		c := collect(refs)
		return func(p string, ino *Inode) bool {
			if ino.IsRegular() {
				f.deps.claim(ino.Nid)
			}
			return c(p, ino)
		}
	}
	for _, p := range o.Paths {
		ino, err := f.lookupPath(ctx, p)
		if err != nil {
			continue
		}
		if ino.Nid == f.RootNid() {
			// The whole image (nydus-snapshotter's converter's default
			// pattern "/"): no hot set, but prefetch_all, behind reads.
			o.All = true
			continue
		}
		f.walk(ctx, ino.Nid, p, collectHot(&hot))
	}
	f.eng.Stream(ctx, hot, fetch.StreamOptions{Kind: fetch.HotSet, First: fetch.HotFirstSegment, Max: fetch.HotMaxSegment, Workers: fetch.HotWorkers, Limit: lim})
	if o.All && ctx.Err() == nil {
		var rest []fetch.Ref
		f.walk(ctx, f.RootNid(), "/", collect(&rest))
		f.eng.Stream(ctx, rest, fetch.StreamOptions{Kind: fetch.Prefetch, Max: o.MergeSize, Workers: o.Workers, Limit: lim})
	}
	f.Metrics.PrefetchDone.Store(true)
}

func (f *FS) lookupPath(ctx context.Context, p string) (*Inode, error) {
	ino, err := f.Inode(ctx, f.RootNid())
	if err != nil {
		return nil, err
	}
	for _, name := range strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/") {
		if name == "" {
			continue
		}
		if ino, err = f.Lookup(ctx, ino.Nid, name); err != nil {
			return nil, err
		}
	}
	return ino, nil
}

// fileRefs returns the chunks of ino in file order.
func (f *FS) fileRefs(ino *Inode) []fetch.Ref {
	out := make([]fetch.Ref, 0, len(ino.addrs))
	for _, a := range ino.addrs {
		if info, ok := f.eng.Info(a.BlobIndex, a.CIIndex); ok {
			out = append(out, fetch.Ref{Path: ino.path, Info: info})
		}
	}
	return out
}

func seenFiles(f *FS) map[uint64]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[uint64]bool, len(f.prefetched))
	for k := range f.prefetched {
		out[k] = true
	}
	return out
}
