package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nydus-go/nydus/pkg/errdefs"
	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// Sentinel errors, translated to errno at the FUSE edge (pkg/fusefs);
// a missing entry is errNoEntry, of kind errdefs.ErrNotFound (ENOENT).
var (
	// errNoEntry: no such entry. One value, so that a negative lookup
	// (frequent: search paths) allocates nothing.
	errNoEntry = errdefs.New(errdefs.ErrNotFound, "no such file or directory")
	// ErrNotDir: not a directory (ENOTDIR).
	ErrNotDir = errors.New("not a directory")
	// ErrIO: data could not be fetched or failed verification (EIO). It
	// is fetch.ErrIO, which every failed fetch wraps.
	ErrIO = fetch.ErrIO
	// ErrNoAttr: no such extended attribute (ENODATA).
	ErrNoAttr = errors.New("no such attribute")
)

// Options configure a filesystem.
type Options struct {
	// Fetch configures the fetch engine under the filesystem: the chunk
	// cache, verification of cached chunks, amplification, the logger,
	// events, the fetch log and the meta store (see fetch.Options).
	Fetch fetch.Options
	// Inodes, when set, keeps the decoded inodes and directory listings
	// (it may be shared by every filesystem of the process: its budget
	// is then the process's); without it, each filesystem has one of
	// 8 MiB.
	Inodes *InodeCache
	// Copies, when set, keeps whole-file copies of fully read files,
	// served by passthrough (see WholeFile): nydusd's blob cache
	// (blobcache.Files), which writes, accounts, caps and removes them.
	Copies CopyStore
	// ReadAhead is how many bytes past a chunk that had to be fetched
	// are fetched in the background too (0: none), so sequential reads
	// overlap network, verification and cache writes.
	ReadAhead int64
	// FileStats keeps per-file I/O counters (see FS.FileStats).
	FileStats bool
	// Dependencies makes Opened fetch a program's interpreter and
	// libraries in the background (see FS.Opened).
	Dependencies bool
	// Siblings makes a read of a small file that missed the cache fetch
	// the other small files of its directory in the background, once per
	// directory and within bounds (see siblings.go).
	Siblings bool
}

// Metrics counts a filesystem's activity. The fetch engine's counters
// (chunks and bytes fetched, backend reads, cache hits, verification
// failures, ...) are promoted from the embedded fetch.Metrics.
type Metrics struct {
	*fetch.Metrics
	// DependencyFiles and DependencyBytes count the files (and their
	// bytes) fetched because a program that needs them was opened.
	DependencyFiles atomic.Int64
	DependencyBytes atomic.Int64
	// SiblingFiles counts the small files fetched because another small
	// file of their directory was read (Options.Siblings).
	SiblingFiles atomic.Int64
	ReadBytes    atomic.Int64
	// PrefetchDone is set when Prefetch finishes.
	PrefetchDone atomic.Bool
	// WholeFiles counts whole-file copies built and verified (from then
	// on an open is handed the copy); DaemonReads counts read
	// requests served by the daemon (passthrough reads never reach it).
	WholeFiles  atomic.Int64
	DaemonReads atomic.Int64
}

// fetcher is what the filesystem consumes of the fetch engine
// (*fetch.Engine): the image's chunk table, verified chunks (one at a
// time or streamed into the cache), and the engine's fetch log.
type fetcher interface {
	Info(blobIndex, ciIndex uint32) (rafs.ChunkInfo, bool)
	Has(ctx context.Context, info rafs.ChunkInfo) bool
	CheckRecordLocal(ctx context.Context, info rafs.ChunkInfo) error
	Chunk(ctx context.Context, ref fetch.Ref) (data []byte, fetched bool, err error)
	Stream(ctx context.Context, refs []fetch.Ref, o fetch.StreamOptions)
	Log() *fetch.Log
	Close()
}

var _ fetcher = (*fetch.Engine)(nil)

// FS is a mounted image.
type FS struct {
	rd    *rafs.Reader
	eng   fetcher // fetches, verifies and caches chunks
	o     Options
	raSem chan struct{}   // bounds background read-ahead fetches
	bg    context.Context // cancelled by Close
	stop  context.CancelFunc
	bgWG  sync.WaitGroup // background goroutines (spawn); Close waits for them

	// goMu orders spawn's bgWG.Add before Close's bgWG.Wait: spawn
	// holds the read side while it checks closing and adds, Close takes
	// the write side to set closing. Nothing else is done under it.
	goMu    sync.RWMutex
	closing bool // set by Close; guarded by goMu
	// Metrics are updated atomically.
	Metrics Metrics

	fstats *fileStats // nil unless Options.FileStats

	deps depState

	// owner names this image to Options.Copies; set once.
	owner string
	sibs  siblingState

	// id names this image in Options.Inodes; set once.
	id     uint64
	inodes *InodeCache // Options.Inodes, or a private one

	mu         sync.Mutex      // guards prefetched; a leaf (see doc.go)
	prefetched map[uint64]bool // guarded by mu
}

// Inode is a decoded inode with its chunk addresses. It is immutable
// once made, and shared by the readers that find it in the InodeCache.
type Inode struct {
	*rafs.DiskInode
	addrs []rafs.ChunkAddr
	// path is the inode's path in the image, as it was looked up ("" if
	// it was decoded by nid alone: see pathOf).
	path string
}

// Open loads a bootstrap (kept in memory, validated by rafs.Open) and
// prepares lazy reads from be through a fetch engine.
func Open(ctx context.Context, bootstrap []byte, be fetch.Backend, o Options) (*FS, error) {
	rd, err := rafs.Open(ctx, bytes.NewReader(bootstrap), int64(len(bootstrap)))
	if err != nil {
		return nil, err
	}
	return OpenReader(ctx, rd, be, o)
}

// OpenReader is Open over an opened bootstrap, read through rd as it is
// needed (nydusd: from the bootstrap file, verified block by block).
func OpenReader(ctx context.Context, rd *rafs.Reader, be fetch.Backend, o Options) (*FS, error) {
	if o.Fetch.Logger == nil {
		o.Fetch.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Fetch.Events == nil {
		o.Fetch.Events = func(fetch.Event) {}
	}
	eng, err := fetch.New(ctx, rd, be, o.Fetch)
	if err != nil {
		return nil, err
	}
	id := owners.Add(1)
	f := &FS{rd: rd, eng: eng, o: o, raSem: make(chan struct{}, 4), prefetched: map[uint64]bool{},
		id: id, owner: fmt.Sprintf("fs-%d", id), inodes: o.Inodes}
	if f.inodes == nil {
		f.inodes = NewInodeCache(defaultInodeCacheBytes)
	}
	f.Metrics.Metrics = &eng.Metrics
	f.bg, f.stop = context.WithCancel(context.Background())
	f.deps.sem = make(chan struct{}, maxDepFiles)
	if o.FileStats {
		f.fstats = &fileStats{m: map[uint64]*FileStats{}}
	}
	return f, nil
}

// Context is cancelled when the filesystem is closed; background work
// started on its behalf (read-ahead, whole-file builds) should use it.
func (f *FS) Context() context.Context { return f.bg }

// Go runs fn in the background, tracked by Close. Once Close has
// begun, fn is not run.
func (f *FS) Go(fn func(ctx context.Context)) { f.spawn(fn) }

// spawn is Go, reporting whether fn was started (false once Close has
// begun).
func (f *FS) spawn(fn func(ctx context.Context)) bool {
	f.goMu.RLock()
	if f.closing {
		f.goMu.RUnlock()
		return false
	}
	f.bgWG.Add(1)
	f.goMu.RUnlock()
	go func() {
		defer f.bgWG.Done()
		fn(f.bg)
	}()
	return true
}

// Close ends the image's use of the cache:
//   - it cancels the engine's fetches (a fetch the backend holds open ends
//     with its context, it is not waited for) and the background work
//     started with Go (read-ahead, prefetch and the hot set, speculation,
//     whole-file builds and checks), and waits for that work to return;
//   - it drops the image's whole-file copies, removing those no image of
//     any process uses any more.
//
// After it returns nothing is put into the cache for this image, so the
// caller can release the cache's handles (and the blobs be removed).
// Reads still in flight fail.
func (f *FS) Close() {
	// No goroutine is added to bgWG once Wait may have begun.
	f.goMu.Lock()
	f.closing = true
	f.goMu.Unlock()
	f.stop()
	f.eng.Close()
	f.bgWG.Wait()
	if f.o.Copies != nil {
		f.o.Copies.Release(f.owner)
	}
	f.inodes.drop(f.id)
}

// FetchLog returns the fetch engine's log of backend fetches, or nil
// when it is off (Options.Fetch.LogSize).
func (f *FS) FetchLog() *fetch.Log { return f.eng.Log() }

// Reader returns the bootstrap reader.
func (f *FS) Reader() *rafs.Reader { return f.rd }

// RootNid returns the root directory's nid (its inode number).
func (f *FS) RootNid() uint64 { return f.rd.RootNid() }

// Inode returns the inode with the given nid.
func (f *FS) Inode(ctx context.Context, nid uint64) (*Inode, error) {
	return f.inode(ctx, nid, "")
}

// inode returns nid's inode, from the cache or decoded, with path p if
// it is known ("" otherwise: an inode cached with its path keeps it).
func (f *FS) inode(ctx context.Context, nid uint64, p string) (*Inode, error) {
	if nid == f.rd.RootNid() {
		p = "/"
	}
	if ino := f.inodes.inode(f.id, nid); ino != nil {
		if ino.path != "" || p == "" {
			return ino, nil
		}
		// Learnt its path: the cached inode is shared, so a copy.
		c := *ino
		c.path = p
		f.inodes.addInode(f.id, &c)
		return &c, nil
	}
	di, err := f.rd.Inode(ctx, nid)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIO, err)
	}
	ino := &Inode{DiskInode: di, path: p}
	if di.IsRegular() {
		if ino.addrs, err = f.rd.ChunkAddrs(ctx, di); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrIO, err)
		}
		// Reads copy from chunk k at the file offset's place in it, so
		// every chunk must hold exactly its part of the file.
		for k, a := range ino.addrs {
			c, ok := f.eng.Info(a.BlobIndex, a.CIIndex)
			if want := rafs.FileChunkSize(di.Size, f.rd.ChunkSize(), k); ok && c.UncompressedSize != want {
				return nil, fmt.Errorf("%w: inode %d: chunk %d (blob %d, index %d) holds %d bytes, the file's size needs %d", ErrIO, nid, k, a.BlobIndex, a.CIIndex, c.UncompressedSize, want)
			}
		}
	}
	f.inodes.addInode(f.id, ino)
	return ino, nil
}

// Lookup finds name in directory dir.
func (f *FS) Lookup(ctx context.Context, dir uint64, name string) (*Inode, error) {
	d, err := f.Inode(ctx, dir)
	if err != nil {
		return nil, err
	}
	ents, err := f.ReadDir(ctx, dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if e.Name == name {
			return f.inode(ctx, e.Nid, childPath(d.path, name))
		}
	}
	return nil, errNoEntry
}

// Child returns the inode of an entry of directory dir's listing (as
// Lookup would, without searching the listing).
func (f *FS) Child(ctx context.Context, dir *Inode, e rafs.Dirent) (*Inode, error) {
	return f.inode(ctx, e.Nid, childPath(dir.path, e.Name))
}

// ReadDir lists a directory (without "." and ".."). The listing is
// shared: callers must not modify it.
func (f *FS) ReadDir(ctx context.Context, dir uint64) ([]rafs.Dirent, error) {
	if ents, ok := f.inodes.list(f.id, dir); ok {
		return ents, nil
	}
	ino, err := f.Inode(ctx, dir)
	if err != nil {
		return nil, err
	}
	if !ino.IsDir() {
		return nil, ErrNotDir
	}
	ents, err := f.rd.ReadDir(ctx, ino.DiskInode)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrIO, err)
	}
	f.inodes.addList(f.id, dir, ents)
	return ents, nil
}

// Readlink returns a symlink's target.
func (f *FS) Readlink(ctx context.Context, nid uint64) (string, error) {
	ino, err := f.Inode(ctx, nid)
	if err != nil {
		return "", err
	}
	s, err := f.rd.Readlink(ctx, ino.DiskInode)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrIO, err)
	}
	return s, nil
}

// Xattr returns one extended attribute.
func (f *FS) Xattr(ctx context.Context, nid uint64, name string) ([]byte, error) {
	ino, err := f.Inode(ctx, nid)
	if err != nil {
		return nil, err
	}
	for _, x := range ino.Xattrs {
		if x.Name == name {
			return x.Value, nil
		}
	}
	return nil, ErrNoAttr
}

// Read reads file data at off into p, fetching missing chunks.
func (f *FS) Read(ctx context.Context, nid uint64, p []byte, off int64) (n int, err error) {
	f.Metrics.DaemonReads.Add(1)
	if f.fstats != nil {
		defer func() { f.countRead(nid, n, err != nil) }()
	}
	return f.read(ctx, nid, p, off)
}

func (f *FS) read(ctx context.Context, nid uint64, p []byte, off int64) (int, error) {
	ino, err := f.Inode(ctx, nid)
	if err != nil {
		return 0, err
	}
	if off >= int64(ino.Size) || len(p) == 0 {
		return 0, nil
	}
	end := off + int64(len(p))
	if end > int64(ino.Size) {
		end = int64(ino.Size)
	}
	cs := int64(f.rd.ChunkSize())
	n := 0
	for pos := off; pos < end; {
		k := pos / cs
		if int(k) >= len(ino.addrs) {
			return n, fmt.Errorf("%w: %s: chunk %d beyond the index", ErrIO, ino.path, k)
		}
		data, fetched, err := f.chunkFetched(ctx, ino, int(k))
		if err != nil {
			return n, err
		}
		if fetched {
			f.missedSmall(ino)
		}
		if fetched && f.o.ReadAhead > 0 {
			f.readAhead(ino, int(k)+1)
		}
		in := pos - k*cs
		c := copy(p[n:end-off], data[in:])
		n += c
		pos += int64(c)
		if c == 0 {
			return n, fmt.Errorf("%w: %s: chunk %d is short", ErrIO, ino.path, k)
		}
	}
	f.Metrics.ReadBytes.Add(int64(n))
	return n, nil
}

// chunk returns the verified data of chunk k of a file.
func (f *FS) chunk(ctx context.Context, ino *Inode, k int) ([]byte, error) {
	data, _, err := f.chunkFetched(ctx, ino, k)
	return data, err
}

// chunkFetched is chunk, also telling whether the chunk came from the
// backend (a cache miss); the engine checks and verifies it.
func (f *FS) chunkFetched(ctx context.Context, ino *Inode, k int) ([]byte, bool, error) {
	a := ino.addrs[k]
	info, ok := f.eng.Info(a.BlobIndex, a.CIIndex)
	if !ok {
		return nil, false, fmt.Errorf("%w: %s: chunk %d (blob %d, index %d) is not in the chunk table", ErrIO, ino.path, k, a.BlobIndex, a.CIIndex)
	}
	return f.eng.Chunk(ctx, fetch.Ref{Path: ino.path, Info: info})
}

// readAhead fetches up to ReadAhead bytes of chunks of ino from chunk k
// on, in the background, skipping cached ones. Fetches join foreground
// reads of the same chunk (single flight) and are bounded globally.
func (f *FS) readAhead(ino *Inode, k int) {
	cs := int64(f.rd.ChunkSize())
	for i := k; i < len(ino.addrs) && int64(i-k)*cs < f.o.ReadAhead; i++ {
		a := ino.addrs[i]
		info, ok := f.eng.Info(a.BlobIndex, a.CIIndex)
		if !ok || f.eng.Has(context.Background(), info) {
			continue
		}
		select {
		case f.raSem <- struct{}{}:
		default:
			return // enough in flight
		}
		if !f.spawn(func(bg context.Context) {
			defer func() { <-f.raSem }()
			ctx, cancel := context.WithTimeout(fetch.WithKind(bg, fetch.ReadAhead), time.Minute)
			defer cancel()
			f.readAheadAfter(ctx, ino.Nid)
			f.chunk(ctx, ino, i)
		}) {
			<-f.raSem
			return // closing
		}
	}
}
