package blobcache

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nydus-go/nydus/pkg/digester"
)

// The content index: which verified chunk of which cached blob holds the
// data of a chunk digest, across every blob of the cache directory, so
// that an image can copy a chunk another image (converted on its own,
// with other blobs) already has instead of fetching it.
//
// Each blob has a journal of the chunks put in it, "<blob_id>.chunk_map"
// (not part of upstream's layout today: nydusd before 2.1 named its
// chunk maps so, beside data files named by the bare blob id, which is
// why nydus-snapshotter's cache GC and usage accounting still take that
// name as one of a blob's files, and remove it with them; a journal
// starts with its own magic, which such a nydusd would refuse as a
// chunk map): 64-byte records, the first a header,
// the others one per indexed chunk, appended with O_APPEND after the
// chunk is durable and its bit set:
//
//	header: "NGDIGIDX" | version u32 = 1 | chunks u32 | 48 zero bytes
//	chunk:  index u32 | size u32 | uncompressed offset u64 |
//	        algorithm u8 (digester.Algorithm + 1) | 15 zero bytes | digest [32]
//
// All integers are little-endian. The in-memory index is rebuilt from the
// journals and the chunk_maps: a record counts only while its chunk's bit
// is set, so a crash (a torn or lost last record) costs an index entry,
// never correctness. What the index points at is read back and checked
// against the digest the reading image expects before it is used.
// Journals are read again, at most every indexRefresh, when a lookup
// misses: other processes sharing the directory add to them.

// DigestsSuffix names a blob's chunk-digest journal.
const DigestsSuffix = ".chunk_map"

const (
	indexRecord  = 64
	indexMagic   = "NGDIGIDX"
	indexVersion = 1
	// indexRefresh bounds how often a missing lookup re-reads the
	// directory's journals.
	indexRefresh = 200 * time.Millisecond
	// DefaultIndexEntries is the default bound of the content index
	// (Options.IndexEntries): about 100 bytes each.
	DefaultIndexEntries = 1 << 19
	// maxIndexedChunk bounds a recorded chunk's size.
	maxIndexedChunk = 64 << 20
)

// indexKey is a chunk's content: its digest and algorithm.
type indexKey struct {
	alg digester.Algorithm
	d   digester.Digest
}

// indexLoc is where a chunk's data is cached.
type indexLoc struct {
	blob *indexBlob
	ci   uint32
	size uint32
	off  int64
}

// indexBlob is one blob's journal as read so far.
type indexBlob struct {
	id     string
	chunks uint32
	read   int64 // bytes of the journal read
	keys   []indexKey
}

// contentIndex is the cache's content index. Lock order: Cache.mu (if
// held) before contentIndex.mu; no BlobCache lock is taken under it.
type contentIndex struct {
	c   *Cache
	max int

	mu      sync.Mutex
	entries map[indexKey]indexLoc // guarded by mu
	blobs   map[string]*indexBlob // guarded by mu
	full    bool                  // guarded by mu: an entry was dropped
	checked time.Time             // guarded by mu: last journal scan
	writes  map[string]*os.File   // guarded by mu: open journals
}

// newContentIndex reads the journals of the cache directory, removing
// those of blobs that have no files left (the snapshotter's cache GC
// removes the files it knows). c.mu is not held.
func newContentIndex(c *Cache, max int) *contentIndex {
	if max <= 0 {
		max = DefaultIndexEntries
	}
	x := &contentIndex{c: c, max: max, entries: map[indexKey]indexLoc{}, blobs: map[string]*indexBlob{}, writes: map[string]*os.File{}}
	if ents, err := os.ReadDir(c.o.Dir); err == nil {
		for _, de := range ents {
			if id, ok := strings.CutSuffix(de.Name(), DigestsSuffix); ok && ValidBlobID(id) {
				if _, err := os.Lstat(c.path(id, kindMap)); errors.Is(err, os.ErrNotExist) {
					os.Remove(x.path(id))
				}
			}
		}
	}
	x.mu.Lock()
	x.refreshLocked()
	x.mu.Unlock()
	return x
}

func (x *contentIndex) path(id string) string { return x.c.o.Dir + "/" + id + DigestsSuffix }

// refreshLocked reads what the journals gained since the last scan and
// drops the blobs whose journal is gone. Records of chunks whose bit is
// not set are skipped (read again at the next scan would not help: they
// are not re-read, and a chunk put later is appended again).
func (x *contentIndex) refreshLocked() {
	x.checked = time.Now()
	ents, err := os.ReadDir(x.c.o.Dir)
	if err != nil {
		return
	}
	seen := map[string]bool{}
	for _, de := range ents {
		id, ok := strings.CutSuffix(de.Name(), DigestsSuffix)
		if !ok || !ValidBlobID(id) || !de.Type().IsRegular() {
			continue
		}
		seen[id] = true
		x.readJournalLocked(id)
	}
	for id, b := range x.blobs {
		if !seen[id] {
			x.dropLocked(b)
		}
	}
}

// readJournalLocked reads the new records of a blob's journal.
func (x *contentIndex) readJournalLocked(id string) {
	f, err := os.OpenFile(x.path(id), os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return
	}
	b := x.blobs[id]
	if b != nil && fi.Size() <= b.read {
		return
	}
	if b == nil {
		var h [indexRecord]byte
		if _, err := f.ReadAt(h[:], 0); err != nil || string(h[:8]) != indexMagic || binary.LittleEndian.Uint32(h[8:]) != indexVersion {
			return
		}
		n := binary.LittleEndian.Uint32(h[12:])
		if n == 0 || n > MaxChunks {
			return
		}
		b = &indexBlob{id: id, chunks: n, read: indexRecord}
		x.blobs[id] = b
	}
	end := fi.Size() - fi.Size()%indexRecord
	if end <= b.read {
		return
	}
	buf := make([]byte, end-b.read)
	if _, err := f.ReadAt(buf, b.read); err != nil && !errors.Is(err, io.EOF) {
		return
	}
	b.read = end
	m, err := readChunkMapBits(x.c.path(id, kindMap), b.chunks)
	if err != nil {
		return
	}
	for rec := buf; len(rec) >= indexRecord; rec = rec[indexRecord:] {
		ci := binary.LittleEndian.Uint32(rec)
		size := binary.LittleEndian.Uint32(rec[4:])
		off := int64(binary.LittleEndian.Uint64(rec[8:]))
		alg := digester.Algorithm(rec[16]) - 1
		if ci >= b.chunks || size == 0 || size > maxIndexedChunk || off < 0 || off > 1<<44 || !alg.Valid() || !bitSet(m, ci) {
			continue
		}
		var k indexKey
		k.alg = alg
		copy(k.d[:], rec[32:64])
		x.addLocked(k, indexLoc{blob: b, ci: ci, size: size, off: off})
	}
}

// bitSet reports chunk ci's bit in a chunk_map bitmap (MSB first).
func bitSet(m []byte, ci uint32) bool {
	return int(ci/8) < len(m) && m[ci/8]&(1<<(7-ci%8)) != 0
}

// readChunkMapBits returns a chunk_map's bitmap, or an error if the file
// is not a chunk_map of n chunks.
func readChunkMapBits(path string, n uint32) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != ChunkMapSize(n) {
		return nil, fmt.Errorf("chunk_map %s: %d bytes, want %d", path, len(b), ChunkMapSize(n))
	}
	return b[MapHeaderSize:], nil
}

func (x *contentIndex) addLocked(k indexKey, l indexLoc) bool {
	if _, ok := x.entries[k]; ok {
		return false
	}
	if len(x.entries) >= x.max {
		if !x.full {
			x.full = true
			x.c.log.Warn("content index full: further chunks are not shared between blobs", "entries", x.max)
		}
		return false
	}
	x.entries[k] = l
	l.blob.keys = append(l.blob.keys, k)
	return true
}

// dropLocked forgets a blob's entries.
func (x *contentIndex) dropLocked(b *indexBlob) {
	for _, k := range b.keys {
		if l, ok := x.entries[k]; ok && l.blob == b {
			delete(x.entries, k)
		}
	}
	delete(x.blobs, b.id)
	if f := x.writes[b.id]; f != nil {
		f.Close()
		delete(x.writes, b.id)
	}
}

// removed is told that a blob's files were removed (Cache.removeLocked):
// its journal goes too, and its entries.
func (x *contentIndex) removed(id string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if b := x.blobs[id]; b != nil {
		x.dropLocked(b)
	}
	if f := x.writes[id]; f != nil {
		f.Close()
		delete(x.writes, id)
	}
	os.Remove(x.path(id))
}

// record appends a chunk of a blob of n chunks to its journal and to the
// index; the chunk is durable and its bit set.
func (x *contentIndex) record(id string, n uint32, ci uint32, off int64, size int, alg digester.Algorithm, d digester.Digest) {
	if !alg.Valid() || size <= 0 || size > maxIndexedChunk {
		return
	}
	k := indexKey{alg, d}
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.entries[k]; ok {
		return
	}
	b := x.blobs[id]
	if b == nil {
		b = &indexBlob{id: id, chunks: n}
		x.blobs[id] = b
	}
	if b.chunks != n || !x.addLocked(k, indexLoc{blob: b, ci: ci, size: uint32(size), off: off}) {
		return
	}
	f, err := x.journalLocked(id, n)
	if err != nil {
		x.c.log.Debug("content index: journal", "blob", id, "err", err)
		return
	}
	var rec [indexRecord]byte
	binary.LittleEndian.PutUint32(rec[0:], ci)
	binary.LittleEndian.PutUint32(rec[4:], uint32(size))
	binary.LittleEndian.PutUint64(rec[8:], uint64(off))
	rec[16] = byte(alg) + 1
	copy(rec[32:], d[:])
	if _, err := f.Write(rec[:]); err != nil {
		x.c.log.Debug("content index: journal", "blob", id, "err", err)
	}
}

// journalLocked opens (creating it with its header) a blob's journal for
// appending.
func (x *contentIndex) journalLocked(id string, n uint32) (*os.File, error) {
	if f := x.writes[id]; f != nil {
		return f, nil
	}
	f, err := os.OpenFile(x.path(id), os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	var h [indexRecord]byte
	copy(h[:], indexMagic)
	binary.LittleEndian.PutUint32(h[8:], indexVersion)
	binary.LittleEndian.PutUint32(h[12:], n)
	fi, err := f.Stat()
	if err == nil && fi.Size() == 0 {
		_, err = f.Write(h[:])
	} else if err == nil {
		// Someone else's journal: it must be of this blob's shape.
		var got [indexRecord]byte
		r, rerr := os.Open(x.path(id))
		if rerr == nil {
			_, rerr = r.ReadAt(got[:], 0)
			r.Close()
		}
		if rerr != nil || !bytes.Equal(got[:16], h[:16]) {
			err = fmt.Errorf("journal %s has another header", x.path(id))
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	if b := x.blobs[id]; b != nil && b.read == 0 {
		b.read = indexRecord
	}
	x.writes[id] = f
	return f, nil
}

// lookup returns where a chunk's content is cached, re-reading the
// journals first when it misses and they were last read a while ago.
func (x *contentIndex) lookup(k indexKey) (indexLoc, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	l, ok := x.entries[k]
	if !ok && time.Since(x.checked) >= indexRefresh {
		x.refreshLocked()
		l, ok = x.entries[k]
	}
	return l, ok
}

// forget drops an entry that did not hold what it promised.
func (x *contentIndex) forget(k indexKey, l indexLoc) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if cur, ok := x.entries[k]; ok && cur == l {
		delete(x.entries, k)
	}
}

// close closes the open journals.
func (x *contentIndex) close() {
	x.mu.Lock()
	defer x.mu.Unlock()
	for id, f := range x.writes {
		f.Close()
		delete(x.writes, id)
	}
}

// len is the number of entries.
func (x *contentIndex) len() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.entries)
}

// Index records that chunk idx of this blob, durable in the cache, holds
// the data of digest d (algorithm alg), so that [Cache.Shared] finds it
// for any blob. The chunk must be cached; recording it again is cheap.
func (b *BlobCache) Index(idx uint32, uncompOff int64, size int, alg digester.Algorithm, d digester.Digest) {
	if idx >= b.n || !b.has(idx) {
		return
	}
	b.c.index.record(b.id, b.n, idx, uncompOff, size, alg, d)
}

// Shared returns the data of a chunk of content digest d (algorithm alg)
// and size bytes from whichever blob of the cache holds it, read back
// and checked against d; ok is false when no blob does. The caller
// stores it in its own blob.
func (c *Cache) Shared(ctx context.Context, alg digester.Algorithm, d digester.Digest, size int) (data []byte, ok bool) {
	k := indexKey{alg, d}
	l, found := c.index.lookup(k)
	if !found || int(l.size) != size {
		return nil, false
	}
	b, err := c.Blob(ctx, l.blob.id, int(l.blob.chunks), nil)
	if err != nil {
		c.index.forget(k, l)
		return nil, false
	}
	defer b.Release()
	data, err = b.ReadChunk(ctx, l.ci, l.off, size, nil)
	if err != nil || digester.Sum(alg, data) != d {
		c.index.forget(k, l)
		return nil, false
	}
	return data, true
}

// IndexLen is the number of chunks in the content index.
func (c *Cache) IndexLen() int { return c.index.len() }
