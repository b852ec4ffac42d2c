package fs

import (
	"context"
	"path"
	"strings"
	"sync"
	"time"
)

// PrefetchOptions configure background prefetch.
type PrefetchOptions struct {
	// Paths are absolute paths to fetch first (directories recursively):
	// the bootstrap's prefetch table and --prefetch-files.
	Paths []string
	// All fetches every file afterwards (fs_prefetch.prefetch_all).
	All bool
	// Workers is the number of concurrent fetches (default 4).
	Workers int
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

// walk visits the tree depth-first; fn returns false to stop.
func (f *FS) walk(ctx context.Context, nid uint64, p string, fn func(string, *Inode) bool) bool {
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
	if !ino.IsDir() {
		return true
	}
	ents, err := f.ReadDir(ctx, nid)
	if err != nil {
		return true
	}
	for _, e := range ents {
		if !f.walk(ctx, e.Nid, path.Join(p, e.Name), fn) {
			return false
		}
	}
	return true
}

// Prefetch fetches file data into the cache in the background, with
// bounded workers and bandwidth; foreground reads are never blocked (they
// share in-flight fetches). It returns when done or when ctx ends.
func (f *FS) Prefetch(ctx context.Context, o PrefetchOptions) {
	if o.Workers <= 0 {
		o.Workers = 4
	}
	ctx = withFetchKind(ctx, FetchPrefetch)
	type job struct {
		ino *Inode
		k   int
	}
	jobs := make(chan job, o.Workers*2)
	var wg sync.WaitGroup
	lim := newLimiter(o.BytesPerSecond)
	for range o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if ctx.Err() != nil {
					continue
				}
				a := j.ino.addrs[j.k]
				info := f.chunks[[2]uint32{a.BlobIndex, a.CIIndex}]
				lim.wait(ctx, int64(info.CompressedSize))
				if _, err := f.chunk(ctx, j.ino, j.k); err == nil {
					f.Metrics.PrefetchedChunks.Add(1)
				}
			}
		}()
	}
	defer func() {
		// Prefetched files get whole-file caches (passthrough).
		if f.o.WholeFileDir != "" && ctx.Err() == nil {
			for nid := range seenFiles(f) {
				f.EnsureWholeFile(ctx, nid)
			}
		}
	}()
	seen := map[uint64]bool{}
	feed := func(p string, ino *Inode) bool {
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
		for k := range ino.addrs {
			select {
			case jobs <- job{ino, k}:
			case <-ctx.Done():
				return false
			}
		}
		return true
	}
	for _, p := range o.Paths {
		ino, err := f.lookupPath(ctx, p)
		if err == nil {
			f.walk(ctx, ino.Nid, p, feed)
		}
	}
	if o.All {
		f.walk(ctx, f.RootNid(), "/", feed)
	}
	close(jobs)
	wg.Wait()
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

// limiter is a simple token bucket over bytes.
type limiter struct {
	mu     sync.Mutex
	rate   int64
	tokens float64
	last   time.Time
}

func newLimiter(rate int64) *limiter { return &limiter{rate: rate, last: time.Now()} }

func (l *limiter) wait(ctx context.Context, n int64) {
	if l.rate <= 0 {
		return
	}
	l.mu.Lock()
	now := time.Now()
	l.tokens += now.Sub(l.last).Seconds() * float64(l.rate)
	if l.tokens > float64(l.rate) {
		l.tokens = float64(l.rate)
	}
	l.last = now
	l.tokens -= float64(n)
	var d time.Duration
	if l.tokens < 0 {
		d = time.Duration(-l.tokens / float64(l.rate) * float64(time.Second))
	}
	l.mu.Unlock()
	if d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
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
