package blobcache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"math/bits"
	"os"
	"path/filepath"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

// Chunk map constants (upstream storage/src/cache/state/persist_map.rs).
const (
	// MapMagic is the u32 at offset 0 of a chunk_map header.
	MapMagic = 0x424D4150
	// MapMagic2 is the u32 at offset 8 of a version-1 chunk_map header.
	MapMagic2 = 0x434D4150
	// MapAllReady is stored at offset 12 once every chunk is ready.
	MapAllReady = 0x4D4D4150
	// MapVersion is the chunk_map version this package writes.
	MapVersion = 1
	// MapHeaderSize is the size of the chunk_map header; the bitmap
	// starts at this offset.
	MapHeaderSize = 4096

	// MaxChunks is the largest chunk count of one blob
	// (RAFS_MAX_CHUNKS_PER_BLOB).
	MaxChunks = 1 << 24

	allReadyOffset = 12
)

// ChunkMapSize returns the exact size of the chunk_map file of a blob with
// n chunks: the header plus one bit per chunk, rounded up to bytes.
func ChunkMapSize(n uint32) int64 {
	return MapHeaderSize + (int64(n)+7)/8
}

// appendMapHeader appends a fresh 4096-byte version-1 header.
func appendMapHeader(b []byte) []byte {
	start := len(b)
	b = append(b, make([]byte, MapHeaderSize)...)
	le := binary.LittleEndian
	le.PutUint32(b[start+0:], MapMagic)
	le.PutUint32(b[start+4:], MapVersion)
	le.PutUint32(b[start+8:], MapMagic2)
	return b
}

// chunkMap is a shared, writable mapping of a chunk_map file.
type chunkMap struct {
	path     string
	n        uint32
	size     int    // file size, ChunkMapSize(n)
	mem      []byte // MAP_SHARED, len(mem) = size rounded up to 4
	version  uint32
	pageSize int
}

// openChunkMap opens the chunk_map at path for n chunks, creating it
// (atomically, through a temporary file) when it does not exist. It
// returns the map, the number of chunks not ready and whether the file was
// created by this call (the caller then fsyncs the directory).
//
// Upstream behaviour is followed for existing files: size 0, or the right
// size with every byte zero, gets a fresh header written in place; any
// other size, a wrong magic with non-zero content, or a version-1 header
// with a wrong magic2 is an error wrapping ErrCorrupt and the file is
// left untouched.
func openChunkMap(path string, n uint32) (m *chunkMap, notReady uint32, created bool, err error) {
	if n == 0 || n > MaxChunks {
		return nil, 0, false, fmt.Errorf("chunk_map %s: chunk count %d not in [1, %d]", path, n, MaxChunks)
	}
	want := ChunkMapSize(n)
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		created, err = createChunkMapFile(path, want)
		if err != nil {
			return nil, 0, false, err
		}
		f, err = os.OpenFile(path, os.O_RDWR|unix.O_NOFOLLOW, 0)
	}
	if err != nil {
		return nil, 0, created, fmt.Errorf("open chunk_map: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, created, fmt.Errorf("stat chunk_map: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, created, fmt.Errorf("chunk_map %s is not a regular file: %w", path, ErrCorrupt)
	}
	fresh := false
	switch {
	case fi.Size() == 0:
		// Upstream creates the file in place (set_len, then the header);
		// a file left empty by that window just gets its header.
		if _, err := f.WriteAt(make([]byte, want), 0); err != nil {
			return nil, 0, created, fmt.Errorf("size chunk_map %s: %w", path, err)
		}
		if err := writeMapHeader(f); err != nil {
			return nil, 0, created, err
		}
		fresh = true
	case fi.Size() != want:
		return nil, 0, created, fmt.Errorf("chunk_map %s is %d bytes, want %d for %d chunks: %w",
			path, fi.Size(), want, n, ErrCorrupt)
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, int((want+3)&^3), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, 0, created, fmt.Errorf("mmap chunk_map %s: %w", path, err)
	}
	m = &chunkMap{path: path, n: n, size: int(want), mem: mem, pageSize: unix.Getpagesize()}
	fail := func(err error) (*chunkMap, uint32, bool, error) {
		m.close()
		return nil, 0, created, err
	}
	le := binary.LittleEndian
	if le.Uint32(mem[0:]) != MapMagic {
		// Upstream's window between set_len and the header write leaves
		// an all-zero file; anything else is not ours to overwrite.
		for _, c := range mem[:want] {
			if c != 0 {
				return fail(fmt.Errorf("chunk_map %s: bad magic %#x: %w", path, le.Uint32(mem[0:]), ErrCorrupt))
			}
		}
		if err := writeMapHeader(f); err != nil {
			return fail(err)
		}
		fresh = true
	}
	m.version = le.Uint32(mem[4:])
	if m.version >= 1 {
		if got := le.Uint32(mem[8:]); got != MapMagic2 {
			return fail(fmt.Errorf("chunk_map %s: bad magic2 %#x: %w", path, got, ErrCorrupt))
		}
		if m.allReady() {
			return m, 0, created, nil
		}
	}
	if fresh {
		return m, n, created, nil
	}
	notReady = n - m.countReady()
	if notReady == 0 && m.version >= 1 {
		// Upstream also records a full bitmap at open time.
		if err := m.setAllReady(true); err != nil {
			return fail(err)
		}
	}
	return m, notReady, created, nil
}

// writeMapHeader writes a fresh header at offset 0 of f and fsyncs it.
func writeMapHeader(f *os.File) error {
	if _, err := f.WriteAt(appendMapHeader(nil), 0); err != nil {
		return fmt.Errorf("write chunk_map header %s: %w", f.Name(), err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync chunk_map %s: %w", f.Name(), err)
	}
	return nil
}

// createChunkMapFile publishes a complete, empty chunk_map of size bytes
// at path without ever replacing an existing file: the content goes to a
// temporary file, is fsynced, and is hard-linked into place. It reports
// whether this call created path.
func createChunkMapFile(path string, size int64) (bool, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+tmpInfix+"*")
	if err != nil {
		return false, fmt.Errorf("create chunk_map: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	// Write the zero bitmap out rather than leaving a hole, so the file's
	// allocated size (and so Usage) does not change when bits get set.
	content := make([]byte, size)
	copy(content, appendMapHeader(nil))
	if _, err := tmp.Write(content); err != nil {
		return false, fmt.Errorf("create chunk_map %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return false, fmt.Errorf("create chunk_map %s: fsync: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil // somebody else won; use theirs
		}
		return false, fmt.Errorf("create chunk_map %s: %w", path, err)
	}
	return true, nil
}

// word returns the aligned 32-bit word of the mapping that holds byte off
// and the shift of that byte inside the word's native value.
func (m *chunkMap) word(off int) (*uint32, uint) {
	w := (*uint32)(unsafe.Pointer(&m.mem[off&^3]))
	shift := uint(off&3) * 8
	if cpu.IsBigEndian {
		shift = 24 - shift
	}
	return w, shift
}

// bit returns the word holding chunk idx's bit and the bit's mask.
func (m *chunkMap) bit(idx uint32) (*uint32, uint32) {
	w, shift := m.word(MapHeaderSize + int(idx>>3))
	return w, uint32(0x80>>(idx&7)) << shift
}

// isSet reports whether chunk idx's bit is set.
func (m *chunkMap) isSet(idx uint32) bool {
	w, mask := m.bit(idx)
	return atomic.LoadUint32(w)&mask != 0
}

// set sets chunk idx's bit and reports whether it was clear before.
func (m *chunkMap) set(idx uint32) bool {
	w, mask := m.bit(idx)
	return atomic.OrUint32(w, mask)&mask == 0
}

// clear clears chunk idx's bit and reports whether it was set before.
func (m *chunkMap) clear(idx uint32) bool {
	w, mask := m.bit(idx)
	return atomic.AndUint32(w, ^mask)&mask != 0
}

// syncBit msyncs the page holding chunk idx's bit.
func (m *chunkMap) syncBit(idx uint32) error {
	return m.syncAt(MapHeaderSize + int(idx>>3))
}

// syncAt msyncs the page of the mapping that holds byte off.
func (m *chunkMap) syncAt(off int) error {
	page := off &^ (m.pageSize - 1)
	end := min(page+m.pageSize, len(m.mem))
	if err := unix.Msync(m.mem[page:end], unix.MS_SYNC); err != nil {
		return fmt.Errorf("msync chunk_map %s: %w", m.path, err)
	}
	return nil
}

// allReadyWord returns the header's all_ready field.
func (m *chunkMap) allReadyWord() *uint32 {
	return (*uint32)(unsafe.Pointer(&m.mem[allReadyOffset]))
}

// allReady reports whether the header's all_ready field is set.
func (m *chunkMap) allReady() bool {
	return m.version >= 1 && atomic.LoadUint32(m.allReadyWord()) == leWord(MapAllReady)
}

// setAllReady stores MapAllReady (or 0) in the header and msyncs it. It is
// a no-op for version-0 headers, which have no such field.
func (m *chunkMap) setAllReady(v bool) error {
	if m.version < 1 {
		return nil
	}
	var val uint32
	if v {
		val = leWord(MapAllReady)
	}
	atomic.StoreUint32(m.allReadyWord(), val)
	return m.syncAt(allReadyOffset)
}

// countReady counts the set bits of chunks 0..n-1 (padding bits after the
// last chunk are ignored).
func (m *chunkMap) countReady() uint32 {
	bm := m.mem[MapHeaderSize:m.size]
	full := int(m.n / 8)
	var c int
	for _, b := range bm[:full] {
		c += bits.OnesCount8(b)
	}
	if rem := m.n % 8; rem != 0 {
		c += bits.OnesCount8(bm[full] & (0xff << (8 - rem)))
	}
	return uint32(c)
}

// close unmaps the file.
func (m *chunkMap) close() error {
	if m.mem == nil {
		return nil
	}
	err := unix.Munmap(m.mem)
	m.mem = nil
	return err
}

// leWord converts a value to the native uint32 whose in-memory bytes are
// v in little-endian order.
func leWord(v uint32) uint32 {
	if cpu.IsBigEndian {
		return bits.ReverseBytes32(v)
	}
	return v
}
