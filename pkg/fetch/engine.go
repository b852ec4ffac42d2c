package fetch

import (
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

// ErrIO is wrapped by every error the engine returns for a chunk: its
// data could not be fetched or failed verification (EIO at the FUSE
// edge; fs.ErrIO is this same value).
var ErrIO = errors.New("input/output error")

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

// ChunkSharer is implemented by a cache shared by images (a node's
// cache, package blobcache): Shared returns the data of a chunk of the
// given content from whichever blob holds it, and Index records the
// content of a chunk cached in a blob, for Shared. The engine verifies
// what Shared returns against the digest it expects, as fetched data.
type ChunkSharer interface {
	Shared(ctx context.Context, alg digester.Algorithm, d digester.Digest, size int) (data []byte, ok bool)
	Index(ctx context.Context, blobID string, ci uint32, uncompOff int64, size int, alg digester.Algorithm, d digester.Digest)
}

// cacheHas is implemented by caches that can tell cheaply whether a
// chunk is cached.
type cacheHas interface {
	Has(ctx context.Context, blobID string, ci uint32) bool
}

// Event reports something worth alerting about (verification failures,
// backend errors).
type Event struct {
	Kind   string `json:"kind"`
	BlobID string `json:"blob_id,omitempty"`
	Chunk  uint32 `json:"chunk,omitempty"`
	Path   string `json:"path,omitempty"`
	Err    string `json:"error,omitempty"`
	// BootstrapDigest is the sha256 of the bootstrap of the image the
	// event is about, when known (the daemon adds it).
	BootstrapDigest string `json:"bootstrap_digest,omitempty"`
	// Image is the repository the image's blobs come from
	// ("registry/name", from the backend's configuration), when known.
	Image string `json:"image,omitempty"`
}

// Options configure an engine.
type Options struct {
	// Cache keeps fetched chunks (nil: none).
	Cache ChunkCache
	// Validate re-verifies cached chunks on every read (nydusd's
	// digest_validate); chunks fetched from the backend are always
	// verified.
	Validate bool
	// Amplify, when positive, extends the fetch of a missing plain chunk
	// to the following chunks of its blob that are stored right after it
	// and not cached, in the same range request, up to Amplify stored
	// bytes in all (nydusd's amplify_io, as upstream defines it). Each
	// such chunk is verified and cached like any other. It needs a Cache.
	Amplify int64
	// Logger receives one line per failure (nil: discarded).
	Logger *slog.Logger
	// Events receives failure events (nil: dropped).
	Events func(Event)
	// LogSize, when positive, keeps the last LogSize backend fetches
	// (Engine.Log): what a startup fetched, when and why.
	LogSize int
	// Metas, if set, keeps the blobs' chunk-info tables on local disk, so
	// checking chunk records against them needs no fetch after the first.
	Metas storage.MetaStore
	// Hot, when set and Validate is off, keeps the most recently
	// verified chunks in memory (it may be shared by every engine of the
	// process: its budget is then the process's), so that the reads that
	// split a chunk (the kernel asks for 128 KiB at a time) read and
	// verify it from the cache once, not once per read.
	Hot *HotCache
}

// Metrics count an engine's activity; they are updated atomically.
type Metrics struct {
	FetchedChunks  atomic.Int64
	FetchedBytes   atomic.Int64 // bytes received from the backend (compressed chunks, batches, chunk-info tables)
	BackendReads   atomic.Int64 // range requests answered by the backend
	CacheHits      atomic.Int64
	DigestFailures atomic.Int64
	BackendErrors  atomic.Int64
	// AmplifiedChunks counts chunks that came in another chunk's request
	// (Options.Amplify).
	AmplifiedChunks atomic.Int64
	// RecordMismatches counts reads refused because the bootstrap's chunk
	// record disagreed with the blob's own chunk-info table.
	RecordMismatches atomic.Int64
	// PrefetchedChunks counts the chunks fetched by Stream (prefetch,
	// the hot set, speculation).
	PrefetchedChunks atomic.Int64
	// AtRestFailures counts cached chunks that failed verification when
	// read back: changed on the local disk after they were written.
	AtRestFailures atomic.Int64
	// SharedChunks and SharedBytes count the chunks (and their
	// uncompressed bytes) copied from another blob of a sharing cache
	// (ChunkSharer) instead of being fetched.
	SharedChunks, SharedBytes atomic.Int64
}

// Engine fetches, verifies and caches the chunks of one image. It is
// safe for concurrent use.
type Engine struct {
	rd     *rafs.Reader
	be     countingBackend // the backend, counted and ordered by priority
	cr     *storage.ChunkReader
	chunks *rafs.ChunkIndex
	dig    digester.Algorithm
	o      Options
	sf     singleflight.Group
	bg     context.Context // bounds shared fetches; cancelled by Close
	stop   context.CancelFunc
	// Metrics are updated atomically.
	Metrics Metrics

	flog *fetchLog // nil unless Options.LogSize

	// spans holds the chunks ([blob, ci index]) being fetched, as their own
	// flight or inside another chunk's amplified span or a stream, each
	// with a channel closed when it is done: an amplified span never
	// takes a chunk that is already on its way, and a reader of a chunk
	// inside a span waits for the span instead of sending a request of
	// its own.
	spans sync.Map

	prio *priorities // orders backend requests (demand first)
	hot  *HotCache   // nil without Options.Hot, or with Validate
}

// New prepares fetches of the chunks of the image rd describes (rd's
// chunk table is read at once) from be.
func New(ctx context.Context, rd *rafs.Reader, be Backend, o Options) (*Engine, error) {
	chunks, err := rd.ChunkIndex(ctx)
	if err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Events == nil {
		o.Events = func(Event) {}
	}
	e := &Engine{prio: newPriorities(), rd: rd, dig: rd.Ext.Flags.Digester(), o: o, chunks: chunks}
	e.be = countingBackend{be, &e.Metrics, e.prio}
	if !o.Validate {
		e.hot = o.Hot
	}
	if e.cr, err = storage.NewChunkReader(ctx, rd, e.be); err != nil {
		return nil, err
	}
	if o.Metas != nil {
		e.cr.SetMetaStore(o.Metas)
	}
	e.bg, e.stop = context.WithCancel(context.Background())
	if o.LogSize > 0 {
		e.flog = &fetchLog{start: time.Now(), ring: make([]Entry, o.LogSize)}
	}
	return e, nil
}

// Close cancels the fetches in flight, which are shared by their readers
// and so outlive any one reader's context, and makes later ones fail; it
// does not wait for them. Call it before releasing the cache.
func (e *Engine) Close() { e.stop() }

// Info returns the chunk-table entry of chunk ciIndex of blob blobIndex
// (a rafs.ChunkAddr's fields), or ok=false if the image has none.
func (e *Engine) Info(blobIndex, ciIndex uint32) (info rafs.ChunkInfo, ok bool) {
	return e.chunks.Lookup(blobIndex, ciIndex)
}

// Has reports whether a chunk is cached, when the cache can tell cheaply
// (it has a Has method); false otherwise.
func (e *Engine) Has(ctx context.Context, info rafs.ChunkInfo) bool {
	hc, _ := e.o.Cache.(cacheHas)
	return hc != nil && hc.Has(ctx, e.rd.Blobs[info.BlobIndex].BlobID, info.Index)
}

// CheckRecordLocal compares a chunk's bootstrap record with its blob's
// chunk-info table without fetching the table
// (storage.ChunkReader.CheckRecordLocal): it fails when the table is not
// at hand.
func (e *Engine) CheckRecordLocal(ctx context.Context, info rafs.ChunkInfo) error {
	return e.cr.CheckRecordLocal(ctx, info)
}

// Ref is a chunk to fetch and the file it is wanted for (for logs,
// events and the fetch log).
type Ref struct {
	// Path is the file's path in the image ("" if not known).
	Path string
	// Info is one of the image's chunks (Engine.Info).
	Info rafs.ChunkInfo
}

// detachedCtx is cancelled with Context but looks values up in vals.
type detachedCtx struct {
	context.Context
	vals context.Context
}

func (d detachedCtx) Value(k any) any { return d.vals.Value(k) }

// checkRecord compares a chunk's bootstrap record with its blob's own
// chunk-info table. The cache places and reads chunks by that record, so
// a bootstrap that disagrees with the blob (a crafted one) could
// otherwise write verified data into another chunk's slot of a cache
// that other images share.
func (e *Engine) checkRecord(ctx context.Context, path string, info rafs.ChunkInfo, bi rafs.BlobInfo) error {
	err := e.cr.CheckRecord(ctx, info)
	if err == nil {
		return nil
	}
	if errors.Is(err, storage.ErrChunkRecordMismatch) {
		e.Metrics.RecordMismatches.Add(1)
		e.o.Logger.Error("chunk record disagrees with the blob's chunk-info table; refusing the read", "blob", bi.BlobID, "chunk", info.Index, "file", path, "err", err)
		e.o.Events(Event{Kind: "chunk-record-mismatch", BlobID: bi.BlobID, Chunk: info.Index, Path: path, Err: err.Error()})
	} else {
		e.Metrics.BackendErrors.Add(1)
		e.o.Logger.Error("reading the blob's chunk-info table failed", "blob", bi.BlobID, "chunk", info.Index, "file", path, "err", err)
		e.o.Events(Event{Kind: "backend-error", BlobID: bi.BlobID, Chunk: info.Index, Path: path, Err: err.Error()})
	}
	return fmt.Errorf("%w: %s: chunk %d of blob %s: %w", ErrIO, path, info.Index, bi.BlobID, err)
}

// Chunk returns the verified data of a chunk, and whether it came from
// the backend (a cache miss). Every chunk record is checked against the
// blob's own chunk-info table before its data is served or cached.
// Concurrent calls for one chunk share one fetch; the fetch is made with
// the kind of ctx (WithKind, Demand by default). Errors wrap ErrIO.
func (e *Engine) Chunk(ctx context.Context, ref Ref) (data []byte, fetched bool, err error) {
	info, path := ref.Info, ref.Path
	bi := e.rd.Blobs[info.BlobIndex]
	skey := [2]uint32{info.BlobIndex, info.Index}
	// The hot cache is shared by images and named by digest: its data is
	// served only if this image's record agrees with the blob's own
	// chunk-info table, as every other read (a crafted record gets EIO).
	hkey := hotKey{e.dig, info.Digest}
	if data, ok := e.hot.get(hkey); ok && len(data) == int(info.UncompressedSize) && e.cr.CheckRecordLocal(ctx, info) == nil {
		e.Metrics.CacheHits.Add(1)
		return data, false, nil
	}
	// Data read back from the cache is verified like fetched data: what
	// sits on the local disk may have changed since it was written.
	verify := func(b []byte) error {
		if digester.Sum(e.dig, b) != info.Digest {
			e.Metrics.DigestFailures.Add(1)
			e.Metrics.AtRestFailures.Add(1)
			e.o.Logger.Error("cached chunk changed on disk (digest mismatch); refetching", "blob", bi.BlobID, "chunk", info.Index, "file", path)
			e.o.Events(Event{Kind: "cache-digest-mismatch", BlobID: bi.BlobID, Chunk: info.Index, Path: path})
			return errors.New("cached chunk digest mismatch")
		}
		return nil
	}
	if e.o.Cache != nil {
		data, ok, err := e.o.Cache.Get(ctx, bi.BlobID, info.Index, int64(info.UncompressedOffset), int(info.UncompressedSize), verify)
		if err == nil && ok {
			// The slot was read by this bootstrap's record: serve it only
			// if the blob agrees.
			if err := e.checkRecord(ctx, path, info, bi); err != nil {
				return nil, false, err
			}
			e.Metrics.CacheHits.Add(1)
			e.index(ctx, bi, info)
			e.hot.add(hkey, data)
			return data, false, nil
		}
	}
	if ch, ok := e.spans.Load(skey); ok {
		// Another chunk's span is fetching this one; the flight below
		// then finds it in the cache.
		select {
		case <-ch.(chan struct{}):
		case <-ctx.Done():
			return nil, false, fmt.Errorf("%w: %s: chunk %d of blob %s: %w", ErrIO, path, info.Index, bi.BlobID, ctx.Err())
		}
	}
	key := fmt.Sprintf("%d/%d", info.BlobIndex, info.Index)
	flight := e.sf.DoChan(key, func() (any, error) {
		// The fetch is shared by every reader that joins it: it must not
		// fail because the first one (a read-ahead, an interrupted
		// reader) gave up. It keeps that reader's values (fetch kind,
		// byte counter) and ends when the engine closes; the backend's
		// timeouts bound it.
		ctx := detachedCtx{Context: e.bg, vals: ctx}
		done := make(chan struct{})
		if ch, busy := e.spans.LoadOrStore(skey, done); !busy {
			defer func() { e.spans.Delete(skey); close(done) }()
		} else {
			// A span took this chunk after the check above: wait for it,
			// and the cache check below finds the chunk.
			select {
			case <-ch.(chan struct{}):
			case <-ctx.Done():
				return nil, fmt.Errorf("%w: %s: chunk %d of blob %s: %w", ErrIO, path, info.Index, bi.BlobID, ctx.Err())
			}
		}
		// The record check needs the blob's chunk-info table (one fetch
		// per blob, or none with a meta store): run it beside the data
		// fetch, and use the data only if both succeed.
		// Bytes of both go to this fetch's log entry.
		var sent atomic.Int64
		fctx := context.WithValue(ctx, fetchBytesKey{}, &sent)
		rec := make(chan error, 1)
		go func() { rec <- e.checkRecord(fctx, path, info, bi) }()
		// A flight for this chunk may have filled the cache between the
		// lookup above and this one starting.
		if e.o.Cache != nil {
			if data, ok, err := e.o.Cache.Get(ctx, bi.BlobID, info.Index, int64(info.UncompressedOffset), int(info.UncompressedSize), nil); err == nil && ok {
				if digester.Sum(e.dig, data) == info.Digest {
					if err := <-rec; err != nil {
						return nil, err
					}
					return data, nil
				}
			}
		}
		// Another blob of a node's cache may hold the same content.
		if data, ok := e.shared(ctx, info); ok {
			if err := <-rec; err != nil {
				return nil, err
			}
			e.put(ctx, bi, info, data)
			return data, nil
		}
		// A zran chunk whose context an earlier fetch brought decodes
		// from what the chunk reader kept.
		if data, ok := e.cr.Local(ctx, info); ok && digester.Sum(e.dig, data) == info.Digest {
			if err := <-rec; err != nil {
				return nil, err
			}
			if e.o.Cache != nil {
				e.put(ctx, bi, info, data)
			}
			return data, nil
		}
		began := time.Now()
		span := e.planSpan(ctx, info, bi)
		var data []byte
		var err error
		if len(span) == 1 {
			data, err = e.cr.ReadChunk(fctx, info)
		} else {
			data, err = e.readSpan(fctx, path, bi, span)
		}
		rerr := <-rec
		if e.flog != nil {
			fe := Entry{Start: began.Sub(e.flog.start), Duration: time.Since(began), Kind: KindOf(ctx), Path: path,
				BlobID: bi.BlobID, Chunk: info.Index, Offset: info.CompressedOffset, Bytes: sent.Load(), Amplified: len(span) - 1}
			if err != nil {
				fe.Err = err.Error()
			}
			e.flog.add(fe)
		}
		if rerr != nil {
			return nil, rerr
		}
		if err != nil {
			e.Metrics.BackendErrors.Add(1)
			e.o.Logger.Error("fetch chunk failed", "blob", bi.BlobID, "chunk", info.Index, "file", path, "err", err)
			e.o.Events(Event{Kind: "backend-error", BlobID: bi.BlobID, Chunk: info.Index, Path: path, Err: err.Error()})
			return nil, fmt.Errorf("%w: %s: chunk %d of blob %s: %w", ErrIO, path, info.Index, bi.BlobID, err)
		}
		e.Metrics.FetchedChunks.Add(1)
		if got := digester.Sum(e.dig, data); got != info.Digest || len(data) != int(info.UncompressedSize) {
			e.Metrics.DigestFailures.Add(1)
			e.o.Logger.Error("chunk digest mismatch", "blob", bi.BlobID, "chunk", info.Index, "file", path)
			e.o.Events(Event{Kind: "digest-mismatch", BlobID: bi.BlobID, Chunk: info.Index, Path: path})
			return nil, fmt.Errorf("%w: %s: chunk %d of blob %s failed digest verification", ErrIO, path, info.Index, bi.BlobID)
		}
		if e.o.Cache != nil {
			e.put(ctx, bi, info, data)
		}
		return data, nil
	})
	var r singleflight.Result
	select {
	case r = <-flight:
	case <-ctx.Done():
		return nil, false, fmt.Errorf("%w: %s: chunk %d of blob %s: %w", ErrIO, path, info.Index, bi.BlobID, ctx.Err())
	}
	if r.Err != nil {
		return nil, false, r.Err
	}
	data = r.Val.([]byte)
	e.hot.add(hkey, data)
	return data, true, nil
}

// put caches verified data of a chunk and, with a sharing cache, records
// its content for other blobs. It reports whether the data was cached.
func (e *Engine) put(ctx context.Context, bi rafs.BlobInfo, info rafs.ChunkInfo, data []byte) bool {
	if err := e.o.Cache.Put(ctx, bi.BlobID, info.Index, int64(info.UncompressedOffset), data); err != nil {
		e.o.Logger.Warn("caching chunk failed", "blob", bi.BlobID, "chunk", info.Index, "err", err)
		return false
	}
	e.index(ctx, bi, info)
	return true
}

// index records a cached chunk's content with a sharing cache.
func (e *Engine) index(ctx context.Context, bi rafs.BlobInfo, info rafs.ChunkInfo) {
	if sh, ok := e.o.Cache.(ChunkSharer); ok {
		sh.Index(ctx, bi.BlobID, info.Index, int64(info.UncompressedOffset), int(info.UncompressedSize), e.dig, info.Digest)
	}
}

// shared returns a chunk's data from another blob of a sharing cache,
// verified against the chunk's digest. The caller checks the chunk's
// record before it serves or caches the data.
func (e *Engine) shared(ctx context.Context, info rafs.ChunkInfo) ([]byte, bool) {
	sh, ok := e.o.Cache.(ChunkSharer)
	if !ok {
		return nil, false
	}
	data, ok := sh.Shared(ctx, e.dig, info.Digest, int(info.UncompressedSize))
	if !ok || len(data) != int(info.UncompressedSize) || digester.Sum(e.dig, data) != info.Digest {
		return nil, false
	}
	e.Metrics.SharedChunks.Add(1)
	e.Metrics.SharedBytes.Add(int64(len(data)))
	return data, true
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
// in e.spans; readSpan releases it.
func (e *Engine) planSpan(ctx context.Context, info rafs.ChunkInfo, bi rafs.BlobInfo) []spanChunk {
	u0, err := e.cr.Unit(ctx, info)
	span := []spanChunk{{info, u0}}
	if err != nil || e.o.Amplify <= 0 || e.o.Cache == nil {
		return span
	}
	hc, _ := e.o.Cache.(cacheHas)
	cur := u0
	size := int64(u0.Size)
	end := u0.Offset + u0.Size
	for idx := info.Index + 1; ; idx++ {
		k := [2]uint32{info.BlobIndex, idx}
		c, ok := e.chunks.Lookup(info.BlobIndex, idx)
		if !ok {
			break
		}
		u, err := e.cr.Unit(ctx, c)
		if err != nil {
			break
		}
		var joins bool
		switch {
		case u.Zran || cur.Zran:
			// A zran unit runs from its context's start to the
			// chunk's end. A span takes the chunks of its context that
			// the input fetched already holds, and no more: each
			// further chunk costs the input before it too, and files
			// stored next to each other are rarely read together
			// (make demo --oci-ref: reaching further fetched 10-30%
			// more for curl).
			joins = u.Zran && cur.Zran && u.Offset == cur.Offset && u.Offset+u.Size <= end
		case u.Batch || cur.Batch:
			// A batch holds small files that are rarely read together
			// with what is stored next to them: a span takes the rest
			// of its batch (no extra bytes) but reaches no further, and
			// a plain chunk's span stops at a batch (make bench:
			// reaching across batches doubled the bytes a cold python
			// start fetched).
			joins = u.Batch && cur.Batch && u.Offset == cur.Offset
		default:
			joins = u.Offset >= end && u.Offset-end <= storage.MaxSpanGap
		}
		extra := int64(max(end, u.Offset+u.Size) - end) // bytes the chunk adds to the request
		if !joins || size+extra > e.o.Amplify {
			break
		}
		if hc != nil && hc.Has(ctx, bi.BlobID, idx) {
			if extra == 0 {
				continue // costs no bytes: its unit comes anyway
			}
			break
		}
		if _, busy := e.spans.LoadOrStore(k, make(chan struct{})); busy {
			if extra == 0 {
				continue
			}
			break
		}
		span = append(span, spanChunk{c, u})
		size += extra
		end = max(end, u.Offset+u.Size)
		cur = u
	}
	return span
}

// readSpan fetches span (planSpan's) in one request and returns the data
// of its first chunk (not yet verified: the caller does that). Each
// following chunk is checked against its blob's table, verified and
// cached here, then released from e.spans; one that fails is dropped
// (counted and logged), and a later read fetches it on its own.
func (e *Engine) readSpan(ctx context.Context, path string, bi rafs.BlobInfo, span []spanChunk) ([]byte, error) {
	defer func() {
		for _, c := range span[1:] {
			k := [2]uint32{c.info.BlobIndex, c.info.Index}
			if ch, ok := e.spans.LoadAndDelete(k); ok {
				close(ch.(chan struct{}))
			}
		}
	}()
	start := span[0].unit.Offset
	end := start
	for _, c := range span {
		end = max(end, c.unit.Offset+c.unit.Size)
	}
	raw, err := e.be.ReadRange(ctx, bi.BlobID, int64(start), int64(end-start))
	if err != nil {
		return nil, err
	}
	if uint64(len(raw)) != end-start {
		return nil, fmt.Errorf("blob %s: %d bytes at offset %d, want %d", bi.BlobID, len(raw), start, end-start)
	}
	stored := func(u storage.Unit) []byte { return raw[u.Offset-start:][:u.Size] }
	for _, c := range span[1:] {
		data, err := e.cr.DecodeUnit(ctx, c.info, c.unit, stored(c.unit))
		switch {
		case err != nil:
			e.o.Logger.Warn("amplified chunk dropped", "blob", bi.BlobID, "chunk", c.info.Index, "err", err)
			continue
		case e.checkRecord(ctx, path, c.info, bi) != nil:
			continue
		case digester.Sum(e.dig, data) != c.info.Digest || len(data) != int(c.info.UncompressedSize):
			e.Metrics.DigestFailures.Add(1)
			e.o.Logger.Error("chunk digest mismatch", "blob", bi.BlobID, "chunk", c.info.Index, "amplified_by", path)
			e.o.Events(Event{Kind: "digest-mismatch", BlobID: bi.BlobID, Chunk: c.info.Index, Path: path})
			continue
		}
		e.Metrics.FetchedChunks.Add(1)
		e.Metrics.AmplifiedChunks.Add(1)
		e.put(ctx, bi, c.info, data)
	}
	return e.cr.DecodeUnit(ctx, span[0].info, span[0].unit, stored(span[0].unit))
}
