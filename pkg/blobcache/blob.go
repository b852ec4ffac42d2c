package blobcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nydus-go/nydus/pkg/blob"
)

// numStripes is the number of per-chunk locks of a blob; chunk i uses
// stripes[i%numStripes].
const numStripes = 64

// maxDataEnd bounds the end of a chunk in the data file: the largest
// uncompressed offset a chunk-info entry can hold plus the largest chunk.
const maxDataEnd = 1<<44 + blob.MaxChunkSize

// BlobCache is the cache of one blob, obtained from [Cache.Blob] and
// returned with [BlobCache.Release]. Its methods are safe for concurrent
// use. After the last Release (or [Cache.Close]) I/O methods fail with
// [ErrClosed], and Has and Ready report false.
type BlobCache struct {
	// Immutable after Cache.Blob.
	c  *Cache
	id string
	n  uint32

	life   sync.RWMutex // read-held by every method using data or m
	closed bool         // guarded by life
	data   *os.File     // guarded by life (closed under its write lock)
	m      *chunkMap    // guarded by life (unmapped under its write lock)

	stripes  [numStripes]sync.Mutex // serialise Put/invalidate per chunk
	readyMu  sync.Mutex             // orders notReady changes with the all_ready flag
	notReady atomic.Int64           // chunks whose bit is clear, as far as we know
	lastUsed atomic.Int64           // unix nanoseconds
	sizeMu   sync.Mutex             // serialises data-file usage updates

	// Guarded by c.mu.
	refs        int
	metaChecked bool
}

// ID returns the blob id.
func (b *BlobCache) ID() string { return b.id }

// Chunks returns the number of chunks of the blob.
func (b *BlobCache) Chunks() int { return int(b.n) }

// Release drops one reference. The last one closes the blob's files; the
// blob is then no longer in use and may be evicted or removed.
func (b *BlobCache) Release() { b.c.release(b) }

// Has reports whether chunk idx is cached (its bit is set, or the whole
// blob is ready).
func (b *BlobCache) Has(idx uint32) bool {
	b.life.RLock()
	defer b.life.RUnlock()
	return !b.closed && b.has(idx)
}

// has is Has with life held.
func (b *BlobCache) has(idx uint32) bool {
	return idx < b.n && (b.notReady.Load() == 0 || b.m.isSet(idx))
}

// Ready reports whether every chunk is cached.
func (b *BlobCache) Ready() bool {
	b.life.RLock()
	defer b.life.RUnlock()
	return !b.closed && b.notReady.Load() == 0
}

// ReadAt reads cached uncompressed bytes of the blob at offset off, with
// io.ReaderAt semantics. It does not check the chunk bits; callers check
// [BlobCache.Has] first.
func (b *BlobCache) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("read blob cache %s at %d: %w", b.id, off, err)
	}
	b.life.RLock()
	defer b.life.RUnlock()
	if b.closed {
		return 0, fmt.Errorf("read blob cache %s at %d: %w", b.id, off, ErrClosed)
	}
	b.touch()
	n, err := b.data.ReadAt(p, off)
	if err != nil {
		return n, fmt.Errorf("read blob cache %s at %d: %w", b.id, off, err)
	}
	return n, nil
}

// Put stores the uncompressed data of chunk idx at offset uncompOff of
// the data file and marks the chunk ready. verify (nil to skip) runs
// first, and if it fails nothing is written. The data is made durable
// (fdatasync) before the chunk's bit is set and msynced, so after a crash
// a set bit always vouches for complete, verified data. Putting a chunk
// that is already cached does nothing and returns nil, so concurrent Puts
// of the same chunk are safe. Afterwards, if the cache is over its cap,
// blobs not in use are evicted.
func (b *BlobCache) Put(ctx context.Context, idx uint32, uncompOff int64, data []byte, verify func([]byte) error) error {
	if err := b.checkChunk(idx, uncompOff, len(data)); err != nil {
		return fmt.Errorf("put blob cache %s chunk %d: %w", b.id, idx, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put blob cache %s chunk %d: %w", b.id, idx, err)
	}
	if verify != nil {
		if err := verify(data); err != nil {
			return fmt.Errorf("put blob cache %s chunk %d: verify: %w", b.id, idx, err)
		}
	}
	b.life.RLock()
	wrote, err := b.put(idx, uncompOff, data)
	if wrote {
		b.updateUsage()
	}
	b.life.RUnlock()
	if err != nil {
		return fmt.Errorf("put blob cache %s chunk %d: %w", b.id, idx, err)
	}
	if wrote {
		b.c.maybeEvict()
	}
	return nil
}

// put is Put's locked part. It reports whether it wrote to the data file.
func (b *BlobCache) put(idx uint32, off int64, data []byte) (bool, error) {
	if b.closed {
		return false, ErrClosed
	}
	b.touch()
	if b.has(idx) {
		return false, nil
	}
	mu := &b.stripes[idx%numStripes]
	mu.Lock()
	defer mu.Unlock()
	if b.m.isSet(idx) {
		return false, nil // a concurrent Put won
	}
	if _, err := b.data.WriteAt(data, off); err != nil {
		return true, fmt.Errorf("write data at %d: %w", off, err)
	}
	b.c.event("write", idx)
	if err := fdatasync(b.data); err != nil {
		return true, err
	}
	b.c.event("datasync", idx)
	if !b.m.set(idx) {
		return true, nil // set meanwhile by another process
	}
	b.c.event("setbit", idx)
	if err := b.m.syncBit(idx); err != nil {
		return true, err
	}
	b.c.event("mapsync", idx)
	b.readyMu.Lock()
	defer b.readyMu.Unlock()
	if b.notReady.Add(-1) == 0 {
		if err := b.m.setAllReady(true); err != nil {
			return true, err
		}
		b.c.event("allready", idx)
		b.c.log.Debug("blob cache complete", "blob", b.id)
	}
	return true, nil
}

// ReadChunk reads the cached uncompressed data of chunk idx (size bytes
// at offset uncompOff). With [Options.ValidateOnRead] set, verify (if not
// nil) re-checks the data; on a mismatch, or if the data file is shorter
// than the chunk, the chunk's bit is cleared so that it is fetched again,
// and the error wraps [ErrCorrupt]. A chunk that is not cached gives an
// error wrapping [ErrNotCached].
func (b *BlobCache) ReadChunk(ctx context.Context, idx uint32, uncompOff int64, size int, verify func([]byte) error) ([]byte, error) {
	if err := b.checkChunk(idx, uncompOff, size); err != nil {
		return nil, fmt.Errorf("read blob cache %s chunk %d: %w", b.id, idx, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read blob cache %s chunk %d: %w", b.id, idx, err)
	}
	b.life.RLock()
	defer b.life.RUnlock()
	if b.closed {
		return nil, fmt.Errorf("read blob cache %s chunk %d: %w", b.id, idx, ErrClosed)
	}
	if !b.has(idx) {
		return nil, fmt.Errorf("read blob cache %s chunk %d: %w", b.id, idx, ErrNotCached)
	}
	b.touch()
	buf := make([]byte, size)
	n, err := b.data.ReadAt(buf, uncompOff)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read blob cache %s chunk %d at %d: %w", b.id, idx, uncompOff, err)
	}
	var bad error
	if n < size {
		bad = fmt.Errorf("data file ends %d bytes into the %d-byte chunk", n, size)
		if verify != nil {
			verify(buf[:n]) // what the disk holds for the chunk: the caller reports it
		}
	} else if b.c.o.ValidateOnRead && verify != nil {
		bad = verify(buf)
	}
	if bad == nil {
		return buf, nil
	}
	if err := b.invalidate(idx); err != nil {
		b.c.log.Error("clearing corrupt chunk", "blob", b.id, "chunk", idx, "err", err)
	} else {
		b.c.log.Warn("cached chunk failed verification; cleared", "blob", b.id, "chunk", idx, "err", bad)
	}
	return nil, fmt.Errorf("read blob cache %s chunk %d: %w: %w", b.id, idx, ErrCorrupt, bad)
}

// invalidate clears chunk idx's bit (and the all_ready flag first). life
// is read-held.
func (b *BlobCache) invalidate(idx uint32) error {
	mu := &b.stripes[idx%numStripes]
	mu.Lock()
	defer mu.Unlock()
	b.readyMu.Lock()
	defer b.readyMu.Unlock()
	wasAll := b.notReady.Load() == 0
	if b.m.allReady() {
		if err := b.m.setAllReady(false); err != nil {
			return err
		}
	}
	if b.m.clear(idx) {
		b.notReady.Add(1)
		return b.m.syncBit(idx)
	}
	if wasAll {
		// all_ready was trusted without the bit being set; recount.
		b.notReady.Store(int64(b.n - b.m.countReady()))
	}
	return nil
}

// checkChunk validates chunk arguments.
func (b *BlobCache) checkChunk(idx uint32, off int64, size int) error {
	switch {
	case idx >= b.n:
		return fmt.Errorf("chunk index %d out of range [0, %d)", idx, b.n)
	case size <= 0 || size > blob.MaxChunkSize:
		return fmt.Errorf("chunk size %d not in [1, %d]", size, blob.MaxChunkSize)
	case off < 0 || off > maxDataEnd-int64(size):
		return fmt.Errorf("chunk offset %d out of range", off)
	}
	return nil
}

// touch records an access for LRU eviction.
func (b *BlobCache) touch() { b.lastUsed.Store(time.Now().UnixNano()) }

// updateUsage re-reads the data file's allocated size. life is read-held.
func (b *BlobCache) updateUsage() {
	b.sizeMu.Lock()
	defer b.sizeMu.Unlock()
	if fi, err := b.data.Stat(); err == nil {
		b.c.setDataUsage(b.id, allocated(fi))
	}
}

// close unmaps and closes the blob's files, waiting for I/O in progress.
func (b *BlobCache) close() error {
	b.life.Lock()
	defer b.life.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	return errors.Join(b.m.close(), b.data.Close())
}

// fdatasync flushes f's data (and the metadata needed to read it).
func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("fdatasync %s: %w", f.Name(), err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return fmt.Errorf("fdatasync %s: %w", f.Name(), err)
	}
	if serr != nil {
		return fmt.Errorf("fdatasync %s: %w", f.Name(), serr)
	}
	return nil
}
