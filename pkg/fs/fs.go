// Package fs is the FUSE-independent read-only filesystem of a mounted
// Nydus image: inodes, directories, symlinks and xattrs come from the
// RAFS v6 bootstrap, file data is fetched lazily chunk by chunk from a
// blob backend, verified against its digest and kept in a chunk cache.
// Package fusefs serves it through the kernel.
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

	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/storage"
	"golang.org/x/sync/singleflight"
)

// Sentinel errors, translated to errno at the FUSE edge.
var (
	// ErrNotFound: no such entry (ENOENT).
	ErrNotFound = errors.New("no such file or directory")
	// ErrNotDir: not a directory (ENOTDIR).
	ErrNotDir = errors.New("not a directory")
	// ErrIO: data could not be fetched or failed verification (EIO).
	ErrIO = errors.New("input/output error")
	// ErrNoAttr: no such extended attribute (ENODATA).
	ErrNoAttr = errors.New("no such attribute")
)

// Backend reads byte ranges of blobs (a registry, local files, ...);
// storage.FileSource and registry.Client are two.
type Backend interface {
	ReadRange(ctx context.Context, blobID string, off, n int64) ([]byte, error)
}

// ChunkCache keeps verified, uncompressed chunks. Package blobcache
// provides one in upstream nydusd's file layout.
type ChunkCache interface {
	// Get returns the cached data of a chunk, or ok=false. A non-nil
	// verify re-checks cached data; a chunk failing it is dropped from
	// the cache (ok=false) so it is fetched again.
	Get(ctx context.Context, blobID string, ci uint32, uncompOff int64, size int, verify func([]byte) error) (data []byte, ok bool, err error)
	// Put stores verified data of a chunk.
	Put(ctx context.Context, blobID string, ci uint32, uncompOff int64, data []byte) error
}

// Event reports something worth alerting about (verification failures,
// backend errors).
type Event struct {
	Kind   string `json:"kind"`
	BlobID string `json:"blob_id,omitempty"`
	Chunk  uint32 `json:"chunk,omitempty"`
	Path   string `json:"path,omitempty"`
	Err    string `json:"error,omitempty"`
}

// Options configure a filesystem.
type Options struct {
	// Cache keeps fetched chunks (nil: none).
	Cache ChunkCache
	// Validate re-verifies cached chunks on every read (nydusd's
	// digest_validate); chunks fetched from the backend are always
	// verified.
	Validate bool
	// WholeFileDir, when set, holds whole-file caches of fully read
	// files, served by passthrough (see WholeFile).
	WholeFileDir string
	// WholeFileReserve, if set, is asked before a whole-file copy of size
	// bytes is built; false skips it (a disk cap would be exceeded).
	WholeFileReserve func(size int64) bool
	// Amplify, when positive, extends the fetch of a missing plain chunk
	// to the following chunks of its blob that are stored right after it
	// and not cached, in the same range request, up to Amplify stored
	// bytes in all (nydusd's amplify_io, as upstream defines it). Each
	// such chunk is verified and cached like any other. It needs a Cache.
	Amplify int64
	// ReadAhead is how many bytes past a chunk that had to be fetched
	// are fetched in the background too (0: none), so sequential reads
	// overlap network, verification and cache writes.
	ReadAhead int64
	// Log receives one line per failure (nil: discarded).
	Log *slog.Logger
	// Events receives failure events (nil: dropped).
	Events func(Event)
	// FileStats keeps per-file I/O counters (see FS.FileStats).
	FileStats bool
	// FetchLogSize, when positive, keeps the last FetchLogSize backend
	// fetches (FS.FetchLog): what a startup fetched, when and why.
	FetchLogSize int
	// Dependencies makes Opened fetch a program's interpreter and
	// libraries in the background (see FS.Opened).
	Dependencies bool
	// Siblings makes a read of a small file that missed the cache fetch
	// the other small files of its directory in the background, once per
	// directory and within bounds (see siblings.go).
	Siblings bool
	// Metas, if set, keeps the blobs' chunk-info tables on local disk, so
	// checking chunk records against them needs no fetch after the first.
	Metas storage.MetaStore
}

// Metrics counts a filesystem's activity.
type Metrics struct {
	FetchedChunks  atomic.Int64
	FetchedBytes   atomic.Int64 // bytes received from the backend (compressed chunks, batches, chunk-info tables)
	BackendReads   atomic.Int64 // range requests answered by the backend
	CacheHits      atomic.Int64
	DigestFailures atomic.Int64
	BackendErrors  atomic.Int64
	// DependencyFiles and DependencyBytes count the files (and their
	// bytes) fetched because a program that needs them was opened.
	DependencyFiles atomic.Int64
	DependencyBytes atomic.Int64
	// SiblingFiles counts the small files fetched because another small
	// file of their directory was read (Options.Siblings).
	SiblingFiles atomic.Int64
	// AmplifiedChunks counts chunks that came in another chunk's request
	// (Options.Amplify).
	AmplifiedChunks atomic.Int64
	// RecordMismatches counts reads refused because the bootstrap's chunk
	// record disagreed with the blob's own chunk-info table.
	RecordMismatches atomic.Int64
	ReadBytes        atomic.Int64
	// PrefetchedChunks counts chunks fetched by Prefetch; PrefetchDone
	// is set when it finishes.
	PrefetchedChunks atomic.Int64
	PrefetchDone     atomic.Bool
	// WholeFiles counts whole-file caches built; DaemonReads counts read
	// requests served by the daemon (passthrough reads never reach it).
	WholeFiles  atomic.Int64
	DaemonReads atomic.Int64
}

// FS is a mounted image.
type FS struct {
	rd     *rafs.Reader
	be     countingBackend // the backend, counted and ordered by priority
	cr     *storage.ChunkReader
	chunks map[[2]uint32]rafs.ChunkInfo
	dig    digester.Algorithm
	o      Options
	sf     singleflight.Group
	raSem  chan struct{}   // bounds background read-ahead fetches
	bg     context.Context // cancelled by Close
	stop   context.CancelFunc
	bgWG   sync.WaitGroup
	// Metrics are updated atomically.
	Metrics Metrics

	fstats *fileStats // nil unless Options.FileStats
	flog   *fetchLog  // nil unless Options.FetchLogSize

	// spans holds the chunks ([blob, ci index]) being fetched, as their own
	// flight or inside another chunk's amplified span, each with a channel
	// closed when it is done: an amplified span never takes a chunk that
	// is already on its way, and a reader of a chunk inside a span waits
	// for the span instead of sending a request of its own.
	spans sync.Map

	deps depState
	sibs siblingState
	prio *priorities // orders backend requests (demand first)

	mu         sync.Mutex
	inos       map[uint64]*Inode
	paths      map[uint64]string
	prefetched map[uint64]bool
}

// Inode is a cached inode with its chunk addresses.
type Inode struct {
	*rafs.DiskInode
	addrs []rafs.ChunkAddr
	path  string
}

// Open loads a bootstrap (kept in memory, validated by rafs.Open) and
// prepares lazy reads from be.
func Open(ctx context.Context, bootstrap []byte, be Backend, o Options) (*FS, error) {
	rd, err := rafs.Open(ctx, bytes.NewReader(bootstrap), int64(len(bootstrap)))
	if err != nil {
		return nil, err
	}
	table, err := rd.ChunkTable(ctx)
	if err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Events == nil {
		o.Events = func(Event) {}
	}
	f := &FS{prio: newPriorities(), rd: rd, dig: rd.Ext.Flags.Digester(), o: o, chunks: make(map[[2]uint32]rafs.ChunkInfo, len(table)),
		raSem: make(chan struct{}, 4), inos: map[uint64]*Inode{}, paths: map[uint64]string{rd.RootNid(): "/"}, prefetched: map[uint64]bool{}}
	f.be = countingBackend{be, &f.Metrics, f.prio}
	if f.cr, err = storage.NewChunkReader(ctx, rd, f.be); err != nil {
		return nil, err
	}
	if o.Metas != nil {
		f.cr.SetMetaStore(o.Metas)
	}
	f.bg, f.stop = context.WithCancel(context.Background())
	f.deps.sem = make(chan struct{}, maxDepFiles)
	if o.FetchLogSize > 0 {
		f.flog = &fetchLog{start: time.Now(), ring: make([]Fetch, o.FetchLogSize)}
	}
	if o.FileStats {
		f.fstats = &fileStats{m: map[uint64]*FileStats{}}
	}
	for _, c := range table {
		f.chunks[[2]uint32{c.BlobIndex, c.Index}] = c
	}
	return f, nil
}

// Context is cancelled when the filesystem is closed; background work
// started on its behalf (read-ahead, whole-file builds) should use it.
func (f *FS) Context() context.Context { return f.bg }

// Go runs fn in the background, tracked by Close.
func (f *FS) Go(fn func(ctx context.Context)) {
	f.bgWG.Add(1)
	go func() {
		defer f.bgWG.Done()
		fn(f.bg)
	}()
}

// Close cancels background work (read-ahead, whole-file builds) and
// waits for it; call it before releasing the cache.
func (f *FS) Close() {
	f.stop()
	f.bgWG.Wait()
}

// Reader returns the bootstrap reader.
func (f *FS) Reader() *rafs.Reader { return f.rd }

// RootNid returns the root directory's nid (its inode number).
func (f *FS) RootNid() uint64 { return f.rd.RootNid() }

// Inode returns the inode with the given nid.
func (f *FS) Inode(ctx context.Context, nid uint64) (*Inode, error) {
	f.mu.Lock()
	ino, ok := f.inos[nid]
	f.mu.Unlock()
	if ok {
		return ino, nil
	}
	di, err := f.rd.Inode(ctx, nid)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIO, err)
	}
	ino = &Inode{DiskInode: di}
	if di.IsRegular() {
		if ino.addrs, err = f.rd.ChunkAddrs(ctx, di); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrIO, err)
		}
		// Reads copy from chunk k at the file offset's place in it, so
		// every chunk must hold exactly its part of the file.
		for k, a := range ino.addrs {
			c, ok := f.chunks[[2]uint32{a.BlobIndex, a.CIIndex}]
			if want := rafs.FileChunkSize(di.Size, f.rd.ChunkSize(), k); ok && c.UncompressedSize != want {
				return nil, fmt.Errorf("%w: inode %d: chunk %d (blob %d, index %d) holds %d bytes, the file's size needs %d", ErrIO, nid, k, a.BlobIndex, a.CIIndex, c.UncompressedSize, want)
			}
		}
	}
	f.mu.Lock()
	ino.path = f.paths[nid]
	f.inos[nid] = ino
	f.mu.Unlock()
	return ino, nil
}

// Lookup finds name in directory dir.
func (f *FS) Lookup(ctx context.Context, dir uint64, name string) (*Inode, error) {
	ents, err := f.ReadDir(ctx, dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if e.Name == name {
			return f.Inode(ctx, e.Nid)
		}
	}
	return nil, ErrNotFound
}

// ReadDir lists a directory (without "." and "..").
func (f *FS) ReadDir(ctx context.Context, dir uint64) ([]rafs.Dirent, error) {
	ino, err := f.Inode(ctx, dir)
	if err != nil {
		return nil, err
	}
	if !ino.IsDir() {
		return nil, ErrNotDir
	}
	ents, err := f.rd.ReadDir(ctx, ino.DiskInode)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIO, err)
	}
	f.mu.Lock()
	for _, e := range ents {
		if _, ok := f.paths[e.Nid]; !ok {
			p := ino.path + "/" + e.Name
			if ino.path == "/" {
				p = "/" + e.Name
			}
			f.paths[e.Nid] = p
		}
	}
	f.mu.Unlock()
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
		return "", fmt.Errorf("%w: %v", ErrIO, err)
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

// cacheHas is implemented by caches that can tell cheaply whether a
// chunk is cached.
type cacheHas interface {
	Has(ctx context.Context, blobID string, ci uint32) bool
}

// readAhead fetches up to ReadAhead bytes of chunks of ino from chunk k
// on, in the background, skipping cached ones. Fetches join foreground
// reads of the same chunk (single flight) and are bounded globally.
func (f *FS) readAhead(ino *Inode, k int) {
	cs := int64(f.rd.ChunkSize())
	hc, _ := f.o.Cache.(cacheHas)
	for i := k; i < len(ino.addrs) && int64(i-k)*cs < f.o.ReadAhead; i++ {
		a := ino.addrs[i]
		info, ok := f.chunks[[2]uint32{a.BlobIndex, a.CIIndex}]
		if !ok || (hc != nil && hc.Has(context.Background(), f.rd.Blobs[a.BlobIndex].BlobID, info.Index)) {
			continue
		}
		select {
		case f.raSem <- struct{}{}:
		default:
			return // enough in flight
		}
		f.bgWG.Add(1)
		go func(i int) {
			defer f.bgWG.Done()
			defer func() { <-f.raSem }()
			ctx, cancel := context.WithTimeout(withFetchKind(f.bg, FetchReadAhead), time.Minute)
			defer cancel()
			f.chunk(ctx, ino, i)
		}(i)
	}
}

// detachedCtx is cancelled with Context but looks values up in vals.
type detachedCtx struct {
	context.Context
	vals context.Context
}

func (d detachedCtx) Value(k any) any { return d.vals.Value(k) }

// verifyCachedKey marks a context whose reads re-verify cached chunks
// (whole-file assembly), whatever Options.Validate says.
type verifyCachedKey struct{}

// checkRecord compares a chunk's bootstrap record with its blob's own
// chunk-info table. The cache places and reads chunks by that record, so
// a bootstrap that disagrees with the blob (a crafted one) could
// otherwise write verified data into another chunk's slot of a cache
// that other images share.
func (f *FS) checkRecord(ctx context.Context, ino *Inode, info rafs.ChunkInfo, bi rafs.BlobInfo) error {
	err := f.cr.CheckRecord(ctx, info)
	if err == nil {
		return nil
	}
	if errors.Is(err, storage.ErrChunkRecordMismatch) {
		f.Metrics.RecordMismatches.Add(1)
		f.o.Log.Error("chunk record disagrees with the blob's chunk-info table; refusing the read", "blob", bi.BlobID, "chunk", info.Index, "file", ino.path, "err", err)
		f.o.Events(Event{Kind: "chunk-record-mismatch", BlobID: bi.BlobID, Chunk: info.Index, Path: ino.path, Err: err.Error()})
	} else {
		f.Metrics.BackendErrors.Add(1)
		f.o.Log.Error("reading the blob's chunk-info table failed", "blob", bi.BlobID, "chunk", info.Index, "file", ino.path, "err", err)
		f.o.Events(Event{Kind: "backend-error", BlobID: bi.BlobID, Chunk: info.Index, Path: ino.path, Err: err.Error()})
	}
	return fmt.Errorf("%w: %s: chunk %d of blob %s: %w", ErrIO, ino.path, info.Index, bi.BlobID, err)
}

// chunkFetched is chunk, also telling whether the chunk came from the
// backend (a cache miss). Every chunk record is checked against the
// blob's own chunk-info table before its data is served or cached.
func (f *FS) chunkFetched(ctx context.Context, ino *Inode, k int) ([]byte, bool, error) {
	a := ino.addrs[k]
	info, ok := f.chunks[[2]uint32{a.BlobIndex, a.CIIndex}]
	if !ok {
		return nil, false, fmt.Errorf("%w: %s: chunk %d (blob %d, index %d) is not in the chunk table", ErrIO, ino.path, k, a.BlobIndex, a.CIIndex)
	}
	bi := f.rd.Blobs[a.BlobIndex]
	var verify func([]byte) error
	if f.o.Validate || ctx.Value(verifyCachedKey{}) != nil {
		verify = func(b []byte) error {
			if digester.Sum(f.dig, b) != info.Digest {
				f.Metrics.DigestFailures.Add(1)
				f.o.Log.Error("cached chunk digest mismatch; refetching", "blob", bi.BlobID, "chunk", info.Index, "file", ino.path)
				f.o.Events(Event{Kind: "cache-digest-mismatch", BlobID: bi.BlobID, Chunk: info.Index, Path: ino.path})
				return errors.New("cached chunk digest mismatch")
			}
			return nil
		}
	}
	if f.o.Cache != nil {
		data, ok, err := f.o.Cache.Get(ctx, bi.BlobID, info.Index, int64(info.UncompressedOffset), int(info.UncompressedSize), verify)
		if err == nil && ok {
			// The slot was read by this bootstrap's record: serve it only
			// if the blob agrees.
			if err := f.checkRecord(ctx, ino, info, bi); err != nil {
				return nil, false, err
			}
			f.Metrics.CacheHits.Add(1)
			return data, false, nil
		}
	}
	skey := [2]uint32{a.BlobIndex, a.CIIndex}
	if ch, ok := f.spans.Load(skey); ok {
		// Another chunk's span is fetching this one; the flight below
		// then finds it in the cache.
		select {
		case <-ch.(chan struct{}):
		case <-ctx.Done():
			return nil, false, fmt.Errorf("%w: %s: chunk %d of blob %s: %w", ErrIO, ino.path, info.Index, bi.BlobID, ctx.Err())
		}
	}
	key := fmt.Sprintf("%d/%d", a.BlobIndex, a.CIIndex)
	flight := f.sf.DoChan(key, func() (any, error) {
		// The fetch is shared by every reader that joins it: it must not
		// fail because the first one (a read-ahead, an interrupted
		// reader) gave up. It keeps that reader's values (fetch kind,
		// byte counter) and ends when the filesystem closes; the
		// backend's timeouts bound it.
		ctx := detachedCtx{Context: f.bg, vals: ctx}
		done := make(chan struct{})
		if ch, busy := f.spans.LoadOrStore(skey, done); !busy {
			defer func() { f.spans.Delete(skey); close(done) }()
		} else {
			// A span took this chunk after the check above: wait for it,
			// and the cache check below finds the chunk.
			select {
			case <-ch.(chan struct{}):
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: %s: chunk %d of blob %s: %w", ErrIO, ino.path, info.Index, bi.BlobID, ctx.Err())
			}
		}
		// The record check needs the blob's chunk-info table (one fetch
		// per blob, or none with a meta store): run it beside the data
		// fetch, and use the data only if both succeed.
		// Bytes of both go to this fetch's log entry.
		var sent atomic.Int64
		fctx := context.WithValue(ctx, fetchBytesKey{}, &sent)
		rec := make(chan error, 1)
		go func() { rec <- f.checkRecord(fctx, ino, info, bi) }()
		// A flight for this chunk may have filled the cache between the
		// lookup above and this one starting.
		if f.o.Cache != nil {
			if data, ok, err := f.o.Cache.Get(ctx, bi.BlobID, info.Index, int64(info.UncompressedOffset), int(info.UncompressedSize), nil); err == nil && ok {
				if digester.Sum(f.dig, data) == info.Digest {
					if err := <-rec; err != nil {
						return nil, err
					}
					return data, nil
				}
			}
		}
		began := time.Now()
		span := f.planSpan(ctx, info, bi)
		var data []byte
		var err error
		if len(span) == 1 {
			data, err = f.cr.ReadChunk(fctx, info)
		} else {
			data, err = f.readSpan(fctx, ino, bi, span)
		}
		rerr := <-rec
		if f.flog != nil {
			fe := Fetch{Start: began.Sub(f.flog.start), Duration: time.Since(began), Kind: fetchKind(ctx), Path: ino.path,
				BlobID: bi.BlobID, Chunk: info.Index, Offset: info.CompressedOffset, Bytes: sent.Load(), Amplified: len(span) - 1}
			if err != nil {
				fe.Err = err.Error()
			}
			f.flog.add(fe)
		}
		if rerr != nil {
			return nil, rerr
		}
		if err != nil {
			f.Metrics.BackendErrors.Add(1)
			f.o.Log.Error("fetch chunk failed", "blob", bi.BlobID, "chunk", info.Index, "file", ino.path, "err", err)
			f.o.Events(Event{Kind: "backend-error", BlobID: bi.BlobID, Chunk: info.Index, Path: ino.path, Err: err.Error()})
			return nil, fmt.Errorf("%w: %s: chunk %d of blob %s: %w", ErrIO, ino.path, info.Index, bi.BlobID, err)
		}
		f.Metrics.FetchedChunks.Add(1)
		if got := digester.Sum(f.dig, data); got != info.Digest || len(data) != int(info.UncompressedSize) {
			f.Metrics.DigestFailures.Add(1)
			f.o.Log.Error("chunk digest mismatch", "blob", bi.BlobID, "chunk", info.Index, "file", ino.path)
			f.o.Events(Event{Kind: "digest-mismatch", BlobID: bi.BlobID, Chunk: info.Index, Path: ino.path})
			return nil, fmt.Errorf("%w: %s: chunk %d of blob %s failed digest verification", ErrIO, ino.path, info.Index, bi.BlobID)
		}
		if f.o.Cache != nil {
			if err := f.o.Cache.Put(ctx, bi.BlobID, info.Index, int64(info.UncompressedOffset), data); err != nil {
				f.o.Log.Warn("caching chunk failed", "blob", bi.BlobID, "chunk", info.Index, "err", err)
			}
		}
		return data, nil
	})
	var r singleflight.Result
	select {
	case r = <-flight:
	case <-ctx.Done():
		return nil, false, fmt.Errorf("%w: %s: chunk %d of blob %s: %w", ErrIO, ino.path, info.Index, bi.BlobID, ctx.Err())
	}
	if r.Err != nil {
		return nil, false, r.Err
	}
	return r.Val.([]byte), true, nil
}

// spanChunk is a chunk of an amplified span and its stored unit.
type spanChunk struct {
	info rafs.ChunkInfo
	unit storage.Unit
}

// planSpan returns the chunks to fetch for a miss of info: info, then,
// with Options.Amplify, the following chunks of its blob (by chunk-info
// index, which is stored order) that this image knows, that are stored
// right after it (for a batch chunk, the rest of its batch; for a plain
// chunk, the following plain chunks), that are neither cached nor on
// their way, up to Amplify stored bytes. Each chunk after the first is registered
// in f.spans; readSpan releases it.
func (f *FS) planSpan(ctx context.Context, info rafs.ChunkInfo, bi rafs.BlobInfo) []spanChunk {
	u0, err := f.cr.Unit(ctx, info)
	span := []spanChunk{{info, u0}}
	if err != nil || f.o.Amplify <= 0 || f.o.Cache == nil {
		return span
	}
	hc, _ := f.o.Cache.(cacheHas)
	cur := u0
	size := int64(u0.Size)
	end := u0.Offset + u0.Size
	for idx := info.Index + 1; ; idx++ {
		k := [2]uint32{info.BlobIndex, idx}
		c, ok := f.chunks[k]
		if !ok {
			break
		}
		u, err := f.cr.Unit(ctx, c)
		if err != nil {
			break
		}
		sameUnit := u.Batch && cur.Batch && u.Offset == cur.Offset
		// A batch holds small files that are rarely read together with
		// what is stored next to them: a span takes the rest of its
		// batch (no extra bytes) but reaches no further, and a plain
		// chunk's span stops at a batch (make bench: reaching across
		// batches doubled the bytes a cold python start fetched).
		if !sameUnit && (cur.Batch || u.Batch || u.Offset < end || u.Offset-end > storage.MaxSpanGap || size+int64(u.Offset-end)+int64(u.Size) > f.o.Amplify) {
			break
		}
		if hc != nil && hc.Has(ctx, bi.BlobID, idx) {
			if sameUnit {
				continue // costs no bytes: the batch comes anyway
			}
			break
		}
		if _, busy := f.spans.LoadOrStore(k, make(chan struct{})); busy {
			if sameUnit {
				continue
			}
			break
		}
		span = append(span, spanChunk{c, u})
		if !sameUnit {
			size += int64(u.Offset-end) + int64(u.Size)
			end = u.Offset + u.Size
			cur = u
		}
	}
	return span
}

// readSpan fetches span (planSpan's) in one request and returns the data
// of its first chunk (not yet verified: the caller does that). Each
// following chunk is checked against its blob's table, verified and
// cached here, then released from f.spans; one that fails is dropped
// (counted and logged), and a later read fetches it on its own.
func (f *FS) readSpan(ctx context.Context, ino *Inode, bi rafs.BlobInfo, span []spanChunk) ([]byte, error) {
	defer func() {
		for _, c := range span[1:] {
			k := [2]uint32{c.info.BlobIndex, c.info.Index}
			if ch, ok := f.spans.LoadAndDelete(k); ok {
				close(ch.(chan struct{}))
			}
		}
	}()
	start := span[0].unit.Offset
	end := start
	for _, c := range span {
		end = max(end, c.unit.Offset+c.unit.Size)
	}
	raw, err := f.be.ReadRange(ctx, bi.BlobID, int64(start), int64(end-start))
	if err != nil {
		return nil, err
	}
	if uint64(len(raw)) != end-start {
		return nil, fmt.Errorf("blob %s: %d bytes at offset %d, want %d", bi.BlobID, len(raw), start, end-start)
	}
	stored := func(u storage.Unit) []byte { return raw[u.Offset-start:][:u.Size] }
	for _, c := range span[1:] {
		data, err := f.cr.DecodeUnit(ctx, c.info, c.unit, stored(c.unit))
		switch {
		case err != nil:
			f.o.Log.Warn("amplified chunk dropped", "blob", bi.BlobID, "chunk", c.info.Index, "err", err)
			continue
		case f.checkRecord(ctx, ino, c.info, bi) != nil:
			continue
		case digester.Sum(f.dig, data) != c.info.Digest || len(data) != int(c.info.UncompressedSize):
			f.Metrics.DigestFailures.Add(1)
			f.o.Log.Error("chunk digest mismatch", "blob", bi.BlobID, "chunk", c.info.Index, "amplified_by", ino.path)
			f.o.Events(Event{Kind: "digest-mismatch", BlobID: bi.BlobID, Chunk: c.info.Index, Path: ino.path})
			continue
		}
		f.Metrics.FetchedChunks.Add(1)
		f.Metrics.AmplifiedChunks.Add(1)
		if err := f.o.Cache.Put(ctx, bi.BlobID, c.info.Index, int64(c.info.UncompressedOffset), data); err != nil {
			f.o.Log.Warn("caching chunk failed", "blob", bi.BlobID, "chunk", c.info.Index, "err", err)
		}
	}
	return f.cr.DecodeUnit(ctx, span[0].info, span[0].unit, stored(span[0].unit))
}

// countingBackend counts what the backend answers in a filesystem's
// metrics.
type countingBackend struct {
	Backend
	m    *Metrics
	prio *priorities
}

func (c countingBackend) ReadRange(ctx context.Context, blobID string, off, n int64) ([]byte, error) {
	leave, err := c.prio.enter(ctx)
	if err != nil {
		return nil, err
	}
	b, err := c.Backend.ReadRange(ctx, blobID, off, n)
	leave()
	if err == nil {
		c.m.BackendReads.Add(1)
		c.m.FetchedBytes.Add(int64(len(b)))
		addFetchedBytes(ctx, int64(len(b)))
	}
	return b, err
}

// OpenRange streams a range (storage.OpenRange), counting its bytes as
// they arrive; the request holds its priority until the stream is closed.
func (c countingBackend) OpenRange(ctx context.Context, blobID string, off, n int64) (io.ReadCloser, error) {
	leave, err := c.prio.enter(ctx)
	if err != nil {
		return nil, err
	}
	rc, err := storage.OpenRange(ctx, c.Backend, blobID, off, n)
	if err != nil {
		leave()
		return nil, err
	}
	c.m.BackendReads.Add(1)
	return &countedStream{countedReader: countedReader{r: rc, ctx: ctx, m: c.m}, rc: rc, leave: leave}, nil
}

// countedStream is a streamed range whose bytes are counted as they are
// read; closing it ends its request's priority.
type countedStream struct {
	countedReader
	rc    io.ReadCloser
	leave func()
	once  sync.Once
}

func (s *countedStream) Close() error {
	s.once.Do(s.leave)
	return s.rc.Close()
}

// ReadRanges reads several ranges of a blob (storage.ReadRanges), with
// one request where the backend can, counting the bytes as they arrive;
// it holds its priority until the last range is read.
func (c countingBackend) ReadRanges(ctx context.Context, blobID string, ranges [][2]int64, fn func(i int, r io.Reader) error) error {
	leave, err := c.prio.enter(ctx)
	if err != nil {
		return err
	}
	defer leave()
	if _, ok := c.Backend.(storage.MultiRangeReader); ok {
		c.m.BackendReads.Add(1)
	} else {
		c.m.BackendReads.Add(int64(len(ranges)))
	}
	return storage.ReadRanges(ctx, c.Backend, blobID, ranges, func(i int, r io.Reader) error {
		return fn(i, &countedReader{r: r, ctx: ctx, m: c.m})
	})
}

// countedReader counts a range's bytes in a filesystem's metrics and its
// fetch's byte counter.
type countedReader struct {
	r   io.Reader
	ctx context.Context
	m   *Metrics
}

func (s *countedReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.m.FetchedBytes.Add(int64(n))
		addFetchedBytes(s.ctx, int64(n))
	}
	return n, err
}
