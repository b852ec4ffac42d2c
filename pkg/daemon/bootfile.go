package daemon

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/zeebo/blake3"

	"github.com/nydus-go/nydus/internal/lru"
)

// bootBlockSize is the unit in which a bootstrap is verified and cached.
const bootBlockSize = 4096

// bootBlockOverhead is what the block cache counts for an entry beyond
// its bytes (the list element, the map slot and the key).
const bootBlockOverhead = 128

// errBootstrapChanged is wrapped by the errors of reads of a bootstrap
// whose file changed on disk after it was mounted.
var errBootstrapChanged = errors.New("bootstrap changed on disk since it was mounted")

// blockKey names a block of a mounted bootstrap in the block cache.
type blockKey struct {
	file  uint64 // bootFile.id
	block uint32
}

// bootBlocks is a daemon's cache of verified bootstrap blocks (shared by
// its images), with the numbering of the bootstrap files whose blocks it
// keeps: an id names a file only in its own cache.
type bootBlocks struct {
	c     *lru.Cache[blockKey, []byte] // has its own lock
	files atomic.Uint64                // the last bootFile.id handed out
}

// newBootBlocks returns a block cache of max bytes (max <= 0 keeps
// none).
func newBootBlocks(max int64) *bootBlocks {
	return &bootBlocks{c: lru.New[blockKey, []byte](max)}
}

// bootFile serves a mounted bootstrap from its file instead of a copy on
// the heap, so a daemon's memory does not grow with the metadata of the
// images it serves, while every byte it reads is what was there when the
// image was mounted. At mount the file is read once: its sha256 is the
// bootstrap digest (API, events, mount record, failover state) and a
// BLAKE3 sum of each 4 KiB block is kept (32 bytes per block, 0.8% of the
// bootstrap). A read checks every block it touches against its sum, and
// keeps the blocks it checked in the daemon's block cache (shared by
// every image, bounded by --meta-cache-size), which later reads copy
// from. A block that changed on disk is never served: the read fails
// (EIO for the reader), once reported through onChanged.
type bootFile struct {
	path string
	f    *os.File
	size int64
	id   uint64
	sums [][32]byte // by block

	blocks *lru.Cache[blockKey, []byte] // shared (bootBlocks.c); nil keeps nothing

	onChanged func(block int64, err error) // called once, on the first changed block
	reported  sync.Once
}

// openBootFile opens and reads a bootstrap, returning it and its digest
// ("sha256:…"), its verified blocks kept in blocks (nil keeps none). The
// file is kept open for later reads (Close).
func openBootFile(path string, blocks *bootBlocks) (*bootFile, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", fmt.Errorf("bootstrap: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, "", fmt.Errorf("bootstrap: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, "", fmt.Errorf("bootstrap %s: not a regular file", path)
	}
	b := &bootFile{path: path, f: f}
	if blocks != nil {
		b.id, b.blocks = blocks.files.Add(1), blocks.c
	}
	b.sums = make([][32]byte, 0, (fi.Size()+bootBlockSize-1)/bootBlockSize)
	h := sha256.New()
	buf := make([]byte, 16*bootBlockSize)
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			h.Write(buf[:n])
			for o := 0; o < n; o += bootBlockSize {
				b.sums = append(b.sums, blake3.Sum256(buf[o:min(o+bootBlockSize, n)]))
			}
			b.size += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			f.Close()
			return nil, "", fmt.Errorf("bootstrap %s: %w", path, err)
		}
	}
	return b, fmt.Sprintf("sha256:%x", h.Sum(nil)), nil
}

// Size returns the bootstrap's size when it was mounted.
func (b *bootFile) Size() int64 { return b.size }

// ReadAt reads verified bytes of the bootstrap as it was when it was
// mounted.
func (b *bootFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("bootstrap %s: negative offset %d", b.path, off)
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= b.size {
			return n, io.EOF
		}
		blk := pos / bootBlockSize
		data, err := b.block(blk)
		if err != nil {
			return n, err
		}
		n += copy(p[n:], data[pos-blk*bootBlockSize:])
	}
	return n, nil
}

// block returns block blk, verified.
func (b *bootFile) block(blk int64) ([]byte, error) {
	k := blockKey{b.id, uint32(blk)}
	if data, ok := b.blocks.Get(k); ok {
		return data, nil
	}
	size := min(bootBlockSize, b.size-blk*bootBlockSize)
	data := make([]byte, size)
	if _, err := b.f.ReadAt(data, blk*bootBlockSize); err != nil {
		if err == io.EOF { // truncated since
			err = fmt.Errorf("bootstrap %s: block %d (offset %d) is beyond the file's end now: %w", b.path, blk, blk*bootBlockSize, errBootstrapChanged)
			b.changed(blk, err)
			return nil, err
		}
		return nil, fmt.Errorf("bootstrap %s: read block %d: %w", b.path, blk, err)
	}
	if blake3.Sum256(data) != b.sums[blk] {
		err := fmt.Errorf("bootstrap %s: block %d (offset %d) differs from what was mounted: %w", b.path, blk, blk*bootBlockSize, errBootstrapChanged)
		b.changed(blk, err)
		return nil, err
	}
	b.blocks.Add(k, data, int64(len(data))+bootBlockOverhead)
	return data, nil
}

func (b *bootFile) changed(blk int64, err error) {
	b.reported.Do(func() {
		if b.onChanged != nil {
			b.onChanged(blk, err)
		}
	})
}

// Close closes the file and drops its blocks from the cache.
func (b *bootFile) Close() error {
	id := b.id
	b.blocks.RemoveFunc(func(k blockKey) bool { return k.file == id })
	return b.f.Close()
}
