package blobcache

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nydus-go/nydus/internal/atomicfile"
	"github.com/nydus-go/nydus/pkg/blob"
)

// File name suffixes of the cache files of one blob (upstream
// filecache/mod.rs BLOB_DATA_FILE_SUFFIX, indexed_chunk_map.rs FILE_SUFFIX,
// meta/mod.rs BLOB_CCT_FILE_SUFFIX). They are what nydus-snapshotter's
// cache manager looks for.
const (
	// DataSuffix names the sparse uncompressed data file.
	DataSuffix = ".blob.data"
	// ChunkMapSuffix names the chunk bitmap file.
	ChunkMapSuffix = ".blob.data.chunk_map"
	// MetaSuffix names the chunk-info (blob meta) file.
	MetaSuffix = ".blob.meta"
)

// tmpInfix marks temporary files: "." + final name + tmpInfix + random.
const tmpInfix = ".tmp-"

// staleTmpAge is how old a temporary file must be before Open deletes it;
// younger ones may belong to another process writing into the directory.
const staleTmpAge = time.Minute

// fileKind indexes the three cache files of a blob.
type fileKind int

const (
	kindData fileKind = iota
	kindMap
	kindMeta
	numKinds
)

// suffixes is indexed by fileKind.
var suffixes = [numKinds]string{DataSuffix, ChunkMapSuffix, MetaSuffix}

// Options configures a [Cache].
type Options struct {
	// Dir is the cache directory (nydusd's filecache work_dir). Open
	// creates it with mode 0700 if it does not exist.
	Dir string
	// MaxBytes caps the disk usage (see [Cache.Usage]), whole-file
	// copies ([Files]) included; when a Put takes the usage above it,
	// whole blobs that are not in use are evicted, least recently used
	// first. Copies may take at most half of it. 0 means no cap.
	MaxBytes int64
	// ValidateOnRead makes [BlobCache.ReadChunk] re-verify cached data
	// (nydusd's digest_validate / cache.validate).
	ValidateOnRead bool
	// Log receives the cache's log records; nil discards them.
	Log *slog.Logger
	// OnEvict, if set, is told of each blob evicted to keep under
	// MaxBytes, with the bytes freed; it must not call the cache.
	OnEvict func(blobID string, bytes int64)
	// IndexEntries bounds the content index ([Cache.Shared]); 0 means
	// DefaultIndexEntries.
	IndexEntries int
}

// Cache is the chunk cache of one daemon: a directory of per-blob cache
// files. It is safe for concurrent use.
type Cache struct {
	// Immutable after Open.
	o     Options
	log   *slog.Logger
	hooks *hooks // test instrumentation; nil in production

	evictMu sync.Mutex // serialises eviction passes; taken before mu

	mu     sync.Mutex
	blobs  map[string]*blobRec // guarded by mu
	usage  int64               // guarded by mu; sum of blobRec.bytes
	closed bool                // guarded by mu

	files *Files        // the whole-file copies; set by Open
	index *contentIndex // the content index; set by Open
}

// blobRec is the accounting record of one blob's files.
type blobRec struct {
	bytes    [numKinds]int64 // allocated bytes per file
	lastUsed int64           // unix nanoseconds, when not open
	open     *BlobCache      // non-nil while in use
}

func (r *blobRec) total() int64 {
	var t int64
	for _, b := range r.bytes {
		t += b
	}
	return t
}

// hooks lets tests observe the order of durable steps.
type hooks struct {
	event func(ev string, idx uint32)
}

func (c *Cache) event(ev string, idx uint32) {
	if c.hooks != nil && c.hooks.event != nil {
		c.hooks.event(ev, idx)
	}
}

// Open opens the cache in o.Dir, creating the directory (mode 0700) if
// needed, and scans the cache files already there for accounting.
// Temporary files left by a crash are removed. If o.MaxBytes is set and
// exceeded, blobs are evicted right away.
func Open(ctx context.Context, o Options) (*Cache, error) {
	if o.Dir == "" {
		return nil, errors.New("open blob cache: empty directory")
	}
	if o.MaxBytes < 0 {
		return nil, fmt.Errorf("open blob cache %s: negative size cap %d", o.Dir, o.MaxBytes)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open blob cache %s: %w", o.Dir, err)
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("open blob cache: %w", err)
	}
	c := &Cache{o: o, log: o.Log, blobs: make(map[string]*blobRec)}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if err := c.scan(); err != nil {
		return nil, err
	}
	c.files = openFiles(c)
	c.index = newContentIndex(c, o.IndexEntries)
	c.maybeEvict()
	return c, nil
}

// scan accounts for existing cache files and removes stale temporaries.
func (c *Cache) scan() error {
	ents, err := os.ReadDir(c.o.Dir)
	if err != nil {
		return fmt.Errorf("open blob cache: %w", err)
	}
	now := time.Now()
	for _, de := range ents {
		name := de.Name()
		if !de.Type().IsRegular() {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue // removed meanwhile
		}
		if i := strings.Index(name, tmpInfix); strings.HasPrefix(name, ".") && i > 0 {
			if _, _, ok := parseName(name[1:i]); ok && now.Sub(fi.ModTime()) > staleTmpAge {
				if err := os.Remove(filepath.Join(c.o.Dir, name)); err == nil {
					c.log.Debug("removed stale temporary cache file", "file", name)
				}
			}
			continue
		}
		id, kind, ok := parseName(name)
		if !ok {
			continue
		}
		r := c.blobs[id]
		if r == nil {
			r = &blobRec{}
			c.blobs[id] = r
		}
		r.bytes[kind] = allocated(fi)
		c.usage += r.bytes[kind]
		r.lastUsed = max(r.lastUsed, fi.ModTime().UnixNano())
	}
	c.log.Debug("blob cache opened", "dir", c.o.Dir, "blobs", len(c.blobs), "bytes", c.usage)
	return nil
}

// parseName splits a cache file name into blob id and kind.
func parseName(name string) (string, fileKind, bool) {
	for k := kindData; k < numKinds; k++ {
		if id, ok := strings.CutSuffix(name, suffixes[k]); ok && ValidBlobID(id) {
			return id, k, true
		}
	}
	return "", 0, false
}

// allocated returns the bytes allocated on disk for a file.
func allocated(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}

// ValidBlobID reports whether id is a blob id this package accepts:
// exactly 64 lowercase hex characters (a sha256 digest), so that no file
// name built from it can leave the cache directory.
func ValidBlobID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func checkBlobID(id string) error {
	if !ValidBlobID(id) {
		return fmt.Errorf("blob id %q: want 64 lowercase hex characters: %w", id, ErrInvalidBlobID)
	}
	return nil
}

func (c *Cache) path(id string, k fileKind) string {
	return filepath.Join(c.o.Dir, id+suffixes[k])
}

// Blob opens the cache files of blob blobID with chunks chunks, creating
// them as needed, and returns its cache with one more reference; every
// call must be paired with [BlobCache.Release]. Calls for a blob already
// in use return the same *BlobCache, and chunks must match.
//
// meta, when non-nil, is the content of the "<blob_id>.blob.meta" file
// (see [blob.MarshalMetaFile]); it is validated, its chunk count must be
// chunks, and the file is written atomically unless it already holds
// exactly these bytes. With nil meta an existing meta file (for example
// one pre-seeded by the snapshotter) is left alone.
//
// The cache's lock is held while a blob's files are opened or created, so
// Blob calls (and the accounting methods) are serialised.
//
// A chunk_map of the wrong size or with a bad header is an error wrapping
// [ErrCorrupt], as in upstream nydusd; the file is left untouched and
// [Cache.Remove] followed by Blob starts the blob afresh.
func (c *Cache) Blob(ctx context.Context, blobID string, chunks int, meta []byte) (*BlobCache, error) {
	if err := checkBlobID(blobID); err != nil {
		return nil, fmt.Errorf("open blob cache: %w", err)
	}
	if chunks <= 0 || chunks > MaxChunks {
		return nil, fmt.Errorf("open blob cache %s: chunk count %d not in [1, %d]", blobID, chunks, MaxChunks)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open blob cache %s: %w", blobID, err)
	}
	if meta != nil {
		m, err := blob.ParseMetaFile(meta)
		if err != nil {
			return nil, fmt.Errorf("open blob cache %s: %w: %w", blobID, ErrCorrupt, err)
		}
		if int(m.Header.CIEntries) != chunks {
			return nil, fmt.Errorf("open blob cache %s: blob meta has %d chunks, want %d: %w",
				blobID, m.Header.CIEntries, chunks, ErrCorrupt)
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("open blob cache %s: %w", blobID, ErrClosed)
	}
	r := c.blobs[blobID]
	if r != nil && r.open != nil {
		b := r.open
		if b.n != uint32(chunks) {
			return nil, fmt.Errorf("open blob cache %s: blob is open with %d chunks, not %d", blobID, b.n, chunks)
		}
		if meta != nil && !b.metaChecked {
			if err := c.writeMeta(blobID, meta); err != nil {
				return nil, err
			}
			b.metaChecked = true
			c.refreshSizesLocked(blobID, r)
		}
		b.refs++
		b.touch()
		return b, nil
	}
	b, err := c.openBlobLocked(blobID, uint32(chunks), meta)
	if err != nil {
		return nil, err
	}
	if r == nil {
		r = &blobRec{}
		c.blobs[blobID] = r
	}
	r.open = b
	c.refreshSizesLocked(blobID, r)
	return b, nil
}

// openBlobLocked opens or creates the files of a blob. c.mu is held.
func (c *Cache) openBlobLocked(id string, n uint32, meta []byte) (_ *BlobCache, err error) {
	if meta != nil {
		if err := c.writeMeta(id, meta); err != nil {
			return nil, err
		}
	}
	dataPath := c.path(id, kindData)
	data, err := os.OpenFile(dataPath, os.O_RDWR|unix.O_NOFOLLOW, 0)
	created := false
	if errors.Is(err, fs.ErrNotExist) {
		data, err = os.OpenFile(dataPath, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
		created = err == nil
		if errors.Is(err, fs.ErrExist) {
			data, err = os.OpenFile(dataPath, os.O_RDWR|unix.O_NOFOLLOW, 0)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open blob cache %s: %w", id, err)
	}
	defer func() {
		if err != nil {
			data.Close()
		}
	}()
	if fi, err := data.Stat(); err != nil {
		return nil, fmt.Errorf("open blob cache %s: %w", id, err)
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("open blob cache %s: %s is not a regular file", id, dataPath)
	}
	m, notReady, mapCreated, err := openChunkMap(c.path(id, kindMap), n)
	if err != nil {
		return nil, fmt.Errorf("open blob cache %s: %w", id, err)
	}
	if created || mapCreated {
		// Make the new names durable before any bit can vouch for data.
		if err := syncDir(c.o.Dir); err != nil {
			m.close()
			return nil, fmt.Errorf("open blob cache %s: %w", id, err)
		}
	}
	b := &BlobCache{c: c, id: id, n: n, data: data, m: m, refs: 1, metaChecked: meta != nil}
	b.notReady.Store(int64(notReady))
	b.touch()
	c.log.Debug("blob cache opened", "blob", id, "chunks", n, "not_ready", notReady)
	return b, nil
}

// maxMetaFile bounds the meta file Meta reads: the largest chunk-info
// table a blob can have plus its header.
const maxMetaFile = blob.MaxChunksPerBlob*blob.ChunkInfoV2Size + 1<<30

// Meta returns the content of a blob's "<blob_id>.blob.meta" file (not
// parsed; [blob.ParseMetaFile] does that), or an error wrapping
// fs.ErrNotExist when there is none.
func (c *Cache) Meta(ctx context.Context, blobID string) ([]byte, error) {
	if err := checkBlobID(blobID); err != nil {
		return nil, fmt.Errorf("read blob meta: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read blob meta %s: %w", blobID, err)
	}
	f, err := os.OpenFile(c.path(blobID, kindMeta), os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("read blob meta %s: %w", blobID, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read blob meta %s: %w", blobID, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxMetaFile {
		return nil, fmt.Errorf("read blob meta %s: not a regular file of at most %d bytes: %w", blobID, int64(maxMetaFile), ErrCorrupt)
	}
	b := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("read blob meta %s: %w", blobID, err)
	}
	return b, nil
}

// HasMeta reports whether the blob has a "<blob_id>.blob.meta" file.
func (c *Cache) HasMeta(blobID string) bool {
	if checkBlobID(blobID) != nil {
		return false
	}
	fi, err := os.Lstat(c.path(blobID, kindMeta))
	return err == nil && fi.Mode().IsRegular()
}

// writeMeta makes the blob's meta file hold exactly meta, atomically.
func (c *Cache) writeMeta(id string, meta []byte) error {
	p := c.path(id, kindMeta)
	if f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0); err == nil {
		same := false
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() == int64(len(meta)) {
			old, err := io.ReadAll(f)
			same = err == nil && bytes.Equal(old, meta)
		}
		f.Close()
		if same {
			return nil
		}
		c.log.Warn("replacing blob meta file that differs", "blob", id)
	}
	if err := atomicfile.WriteFile(p, meta, 0o600); err != nil {
		return fmt.Errorf("write blob meta %s: %w", id, err)
	}
	return nil
}

// refreshSizesLocked re-reads the allocated sizes of a blob's files.
func (c *Cache) refreshSizesLocked(id string, r *blobRec) {
	for k := kindData; k < numKinds; k++ {
		var n int64
		if fi, err := os.Lstat(c.path(id, k)); err == nil {
			n = allocated(fi)
		}
		c.usage += n - r.bytes[k]
		r.bytes[k] = n
	}
}

// release drops a reference to b; the last one closes it.
func (c *Cache) release(b *BlobCache) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return // Close already closed every blob
	}
	if b.refs <= 0 {
		c.mu.Unlock()
		c.log.Error("blob cache released more often than opened", "blob", b.id)
		return
	}
	b.refs--
	last := b.refs == 0
	if last {
		if r := c.blobs[b.id]; r != nil && r.open == b {
			r.open = nil
			r.lastUsed = b.lastUsed.Load()
		}
	}
	c.mu.Unlock()
	if last {
		if err := b.close(); err != nil {
			c.log.Warn("closing blob cache", "blob", b.id, "err", err)
		}
		c.persistLastUsed(b)
		c.maybeEvict()
	}
}

// persistLastUsed stamps the blob's last use on its chunk_map's mtime, so
// that the LRU order survives a restart (Open reads it back from mtimes).
func (c *Cache) persistLastUsed(b *BlobCache) {
	t := time.Unix(0, b.lastUsed.Load())
	if err := os.Chtimes(c.path(b.id, kindMap), t, t); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.log.Debug("recording last use", "blob", b.id, "err", err)
	}
}

// UnderlyingFiles returns the names (relative to the cache directory) of
// the existing cache files of every blob in use, sorted. Upstream nydusd
// reports "<blob_id>.blob.data" names in the "underlying_files" field of
// /api/v1/metrics/blobcache, and nydus-snapshotter's GC derives the blob
// ids in use from them; this also lists the chunk_map and meta files.
func (c *Cache) UnderlyingFiles() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for id, r := range c.blobs {
		if r.open == nil {
			continue
		}
		for k := kindData; k < numKinds; k++ {
			if k == kindMeta {
				// The snapshotter may pre-seed it at any time.
				if _, err := os.Lstat(c.path(id, k)); err != nil {
					continue
				}
			}
			out = append(out, id+suffixes[k])
		}
	}
	slices.Sort(out)
	return out
}

// Remove deletes the cache files of blob blobID. It fails with an error
// wrapping [ErrInUse] while the blob has an unreleased [BlobCache].
// Removing a blob without files is not an error. The chunk_map is deleted
// first so that no bit outlives its data.
func (c *Cache) Remove(ctx context.Context, blobID string) error {
	if err := checkBlobID(blobID); err != nil {
		return fmt.Errorf("remove blob cache: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove blob cache %s: %w", blobID, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("remove blob cache %s: %w", blobID, ErrClosed)
	}
	if r := c.blobs[blobID]; r != nil && r.open != nil {
		return fmt.Errorf("remove blob cache %s: %d references not released: %w", blobID, r.open.refs, ErrInUse)
	}
	return c.removeLocked(blobID)
}

// removeLocked deletes a blob's files, chunk_map first. c.mu is held and
// the blob is not open.
func (c *Cache) removeLocked(id string) error {
	var errs []error
	for _, k := range []fileKind{kindMap, kindMeta, kindData} {
		if err := os.Remove(c.path(id, k)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := syncDir(c.o.Dir); err != nil {
		errs = append(errs, err)
	}
	if r := c.blobs[id]; r != nil {
		c.usage -= r.total()
		delete(c.blobs, id)
		if len(errs) > 0 {
			// Some files survived; account for what is left.
			r = &blobRec{lastUsed: r.lastUsed}
			c.blobs[id] = r
			c.refreshSizesLocked(id, r)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove blob cache %s: %w", id, err)
	}
	c.files.blobRemoved(id)
	c.index.removed(id)
	return nil
}

// Usage returns the bytes the cache occupies on disk: the allocated
// blocks of the data files (sparse, so only cached chunks count), the
// chunk_map and meta files, and the whole-file copies ([Files.Usage]).
func (c *Cache) Usage() int64 {
	return c.blobUsage() + c.files.Usage()
}

// blobUsage is Usage without the whole-file copies.
func (c *Cache) blobUsage() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.usage
}

// setDataUsage records a new allocated size for an open blob's data file.
func (c *Cache) setDataUsage(id string, n int64) {
	c.mu.Lock()
	if r := c.blobs[id]; r != nil {
		c.usage += n - r.bytes[kindData]
		r.bytes[kindData] = n
	}
	c.mu.Unlock()
}

// maybeEvict removes blobs that are not in use, least recently used first,
// until the usage is within MaxBytes. Only one pass runs at a time; a call
// during a pass returns at once.
func (c *Cache) maybeEvict() {
	if c.o.MaxBytes <= 0 || !c.evictMu.TryLock() {
		return
	}
	defer c.evictMu.Unlock()
	limit := c.o.MaxBytes - c.files.Usage()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.usage <= limit {
		return
	}
	type cand struct {
		id   string
		used int64
	}
	var cands []cand
	for id, r := range c.blobs {
		if r.open == nil {
			cands = append(cands, cand{id, r.lastUsed})
		}
	}
	slices.SortFunc(cands, func(a, b cand) int {
		return cmp.Or(cmp.Compare(a.used, b.used), strings.Compare(a.id, b.id))
	})
	for _, cd := range cands {
		if c.usage <= limit {
			return
		}
		freed := c.blobs[cd.id].total()
		if err := c.removeLocked(cd.id); err != nil {
			c.log.Warn("evicting blob cache", "blob", cd.id, "err", err)
			continue
		}
		c.log.Info("evicted blob cache", "blob", cd.id, "bytes", freed, "usage", c.usage, "max", c.o.MaxBytes)
		if c.o.OnEvict != nil {
			c.o.OnEvict(cd.id, freed)
		}
	}
	if c.usage > limit {
		c.log.Debug("blob cache over its cap; the remaining blobs are in use", "usage", c.usage, "max", c.o.MaxBytes, "limit", limit)
	}
}

// Close closes every open blob (further use of a *BlobCache fails with
// [ErrClosed]) and the cache, and drops this process's locks on
// whole-file copies (they stay, see [Files]). It waits for I/O in progress. Closing twice
// is a no-op.
func (c *Cache) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.files.close()
	c.index.close()
	var open []*BlobCache
	for _, r := range c.blobs {
		if r.open != nil {
			open = append(open, r.open)
			r.lastUsed = r.open.lastUsed.Load()
			r.open.refs = 0
			r.open = nil
		}
	}
	c.mu.Unlock()
	var errs []error
	for _, b := range open {
		if err := b.close(); err != nil {
			errs = append(errs, fmt.Errorf("close blob cache %s: %w", b.id, err))
		}
		c.persistLastUsed(b)
	}
	return errors.Join(errs...)
}

// syncDir fsyncs a directory so that entries created or removed in it are
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
