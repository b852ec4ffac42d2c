package blobcache

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// handMap builds a chunk_map byte by byte, independently of the package
// code: header fields little-endian as upstream's #[repr(C)] Header
// {magic, version, magic2, all_ready, reserved[4080]} is written on
// x86-64/arm64, then the MSB-first bitmap.
func handMap(n int, version uint32, allReady bool, set ...uint32) []byte {
	b := make([]byte, 4096+(n+7)/8)
	copy(b[0:], []byte{0x50, 0x41, 0x4d, 0x42}) // 0x424D4150
	copy(b[4:], []byte{byte(version), 0, 0, 0}) // version
	copy(b[8:], []byte{0x50, 0x41, 0x4d, 0x43}) // 0x434D4150
	if allReady {
		copy(b[12:], []byte{0x50, 0x41, 0x4d, 0x4d}) // 0x4D4D4150
	}
	for _, i := range set {
		b[4096+i/8] |= 1 << (7 - i%8)
	}
	return b
}

func mapPath(c *Cache, id string) string { return filepath.Join(c.o.Dir, id+ChunkMapSuffix) }

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func hasSet(b *BlobCache) []uint32 {
	var s []uint32
	for i := range uint32(b.Chunks()) {
		if b.Has(i) {
			s = append(s, i)
		}
	}
	return s
}

// TestChunkMapLayout checks the exact bytes we write for n=10 against
// hand-computed ones.
func TestChunkMapLayout(t *testing.T) {
	c := openCache(t, Options{})
	id := blobID(1)
	b := openBlob(t, c, id, 10, nil)
	for _, i := range []uint32{0, 3, 9} {
		put(t, b, i)
	}
	want := make([]byte, 4098)
	copy(want, []byte{
		'P', 'A', 'M', 'B', // magic 0x424D4150, little-endian
		0x01, 0x00, 0x00, 0x00, // version 1
		'P', 'A', 'M', 'C', // magic2 0x434D4150
		0x00, 0x00, 0x00, 0x00, // all_ready: not yet
	})
	want[4096] = 0x90 // chunk 0 (0x80) | chunk 3 (0x10)
	want[4097] = 0x40 // chunk 9: 1 << (7 - 9%8)
	if got := readFile(t, mapPath(c, id)); !bytes.Equal(got, want) {
		t.Fatalf("chunk_map differs from hand-computed bytes:\nheader %x\nbitmap %x", got[:16], got[4096:])
	}
	if !bytes.Equal(want, handMap(10, 1, false, 0, 3, 9)) {
		t.Fatal("handMap disagrees with the literal bytes")
	}
	if b.Ready() {
		t.Fatal("Ready with 3 of 10 chunks")
	}

	for _, i := range []uint32{1, 2, 4, 5, 6, 7, 8} {
		put(t, b, i)
	}
	if !b.Ready() {
		t.Fatal("not Ready with every chunk put")
	}
	want[12], want[13], want[14], want[15] = 'P', 'A', 'M', 'M' // all_ready 0x4D4D4150
	want[4096], want[4097] = 0xff, 0xc0
	if got := readFile(t, mapPath(c, id)); !bytes.Equal(got, want) {
		t.Fatalf("complete chunk_map: header %x bitmap %x", got[:16], got[4096:])
	}
}

// TestChunkMapReadsUpstreamFile opens a chunk_map produced the way
// upstream writes it.
func TestChunkMapReadsUpstreamFile(t *testing.T) {
	c := openCache(t, Options{})
	id := blobID(2)
	writeFile(t, mapPath(c, id), handMap(10, 1, false, 0, 3, 9))
	b := openBlob(t, c, id, 10, nil)
	if got := hasSet(b); !equalU32(got, []uint32{0, 3, 9}) {
		t.Fatalf("Has reports %v, want [0 3 9]", got)
	}
	if b.Ready() {
		t.Fatal("Ready with 3 of 10 chunks")
	}
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestChunkMapAllReadySkipsScan: with all_ready set every chunk counts as
// cached without looking at the bitmap (upstream is_ready returns true
// once is_range_all_ready).
func TestChunkMapAllReadySkipsScan(t *testing.T) {
	c := openCache(t, Options{})
	id := blobID(3)
	writeFile(t, mapPath(c, id), handMap(10, 1, true)) // empty bitmap
	b := openBlob(t, c, id, 10, nil)
	if !b.Ready() || len(hasSet(b)) != 10 {
		t.Fatalf("all_ready file: Ready=%v Has=%v", b.Ready(), hasSet(b))
	}
}

// TestChunkMapFullBitmapMarksAllReady: like upstream PersistMap::open, a
// full bitmap without the flag gets the flag at open time.
func TestChunkMapFullBitmapMarksAllReady(t *testing.T) {
	c := openCache(t, Options{})
	id := blobID(4)
	writeFile(t, mapPath(c, id), handMap(10, 1, false, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9))
	b := openBlob(t, c, id, 10, nil)
	if !b.Ready() {
		t.Fatal("not Ready")
	}
	if got := readFile(t, mapPath(c, id)); !bytes.Equal(got, handMap(10, 1, true, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9)) {
		t.Fatalf("header after open: %x", got[:16])
	}
}

// TestChunkMapPaddingBitsIgnored: bits after the last chunk do not count
// (upstream counts every bit of the bitmap, so garbage padding could mark
// a blob ready; we deliberately do not).
func TestChunkMapPaddingBitsIgnored(t *testing.T) {
	c := openCache(t, Options{})
	id := blobID(5)
	writeFile(t, mapPath(c, id), handMap(10, 1, false, 0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15))
	b := openBlob(t, c, id, 10, nil)
	if b.Ready() || b.Has(9) {
		t.Fatalf("padding bits counted: Ready=%v Has(9)=%v", b.Ready(), b.Has(9))
	}
	put(t, b, 9)
	if !b.Ready() {
		t.Fatal("not Ready after the last chunk")
	}
}

// TestChunkMapWrongSize: upstream PersistMap::open returns EINVAL for a
// file whose size is not 4096 + ceil(n/8) ("it's too risky to accept the
// chunk state file") and the blob cannot be opened; the file is not
// modified. Remove then Blob starts afresh.
func TestChunkMapWrongSize(t *testing.T) {
	ctx := context.Background()
	for _, size := range []int{1, 4096, 4097, 4099, 8192} {
		c := openCache(t, Options{})
		id := blobID(6)
		content := handMap(10, 1, false, 0, 3, 9)
		if size <= len(content) {
			content = content[:size]
		} else {
			content = append(content, make([]byte, size-len(content))...)
		}
		writeFile(t, mapPath(c, id), content)
		_, err := c.Blob(ctx, id, 10, nil)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("size %d: Blob error %v, want ErrCorrupt", size, err)
		}
		if got := readFile(t, mapPath(c, id)); !bytes.Equal(got, content) {
			t.Fatalf("size %d: rejected chunk_map was modified", size)
		}
		if len(c.UnderlyingFiles()) != 0 {
			t.Fatalf("size %d: failed blob listed as in use", size)
		}
		if err := c.Remove(ctx, id); err != nil {
			t.Fatal(err)
		}
		b := openBlob(t, c, id, 10, nil)
		if got := hasSet(b); len(got) != 0 {
			t.Fatalf("size %d: recreated map has chunks %v", size, got)
		}
		if got := readFile(t, mapPath(c, id)); !bytes.Equal(got, handMap(10, 1, false)) {
			t.Fatalf("size %d: recreated map is not an empty map", size)
		}
	}
}

// TestChunkMapEmptyAndZeroFiles: a zero-length file, or a zero-filled
// file of the right size (upstream's window between set_len and the
// header write), gets a fresh header.
func TestChunkMapEmptyAndZeroFiles(t *testing.T) {
	for _, content := range [][]byte{{}, make([]byte, 4098)} {
		c := openCache(t, Options{})
		id := blobID(7)
		writeFile(t, mapPath(c, id), content)
		b := openBlob(t, c, id, 10, nil)
		if len(hasSet(b)) != 0 {
			t.Fatal("fresh map has chunks")
		}
		if got := readFile(t, mapPath(c, id)); !bytes.Equal(got, handMap(10, 1, false)) {
			t.Fatalf("%d-byte file: header %x, size %d", len(content), got[:16], len(got))
		}
	}
}

// TestChunkMapBadHeader: a wrong magic over non-zero content, or a wrong
// magic2 in a version-1 header, is rejected and left alone.
func TestChunkMapBadHeader(t *testing.T) {
	badMagic := handMap(10, 1, false, 3)
	badMagic[0] = 'X'
	badMagic2 := handMap(10, 1, false, 3)
	badMagic2[8] = 'X'
	for name, content := range map[string][]byte{"magic": badMagic, "magic2": badMagic2} {
		c := openCache(t, Options{})
		id := blobID(8)
		writeFile(t, mapPath(c, id), content)
		if _, err := c.Blob(context.Background(), id, 10, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("bad %s: Blob error %v, want ErrCorrupt", name, err)
		}
		if got := readFile(t, mapPath(c, id)); !bytes.Equal(got, content) {
			t.Fatalf("bad %s: file modified", name)
		}
	}
}

// TestChunkMapVersion0: a version-0 header (no magic2, no all_ready) is
// accepted with its bits, and never gets an all_ready flag.
func TestChunkMapVersion0(t *testing.T) {
	c := openCache(t, Options{})
	id := blobID(9)
	content := handMap(10, 0, false, 1, 2)
	copy(content[8:], []byte{0, 0, 0, 0}) // v0 files have no magic2
	writeFile(t, mapPath(c, id), content)
	b := openBlob(t, c, id, 10, nil)
	if got := hasSet(b); !equalU32(got, []uint32{1, 2}) {
		t.Fatalf("Has reports %v", got)
	}
	for i := range uint32(10) {
		put(t, b, i)
	}
	if !b.Ready() {
		t.Fatal("not Ready")
	}
	if got := readFile(t, mapPath(c, id)); !bytes.Equal(got[:16], content[:16]) {
		t.Fatalf("v0 header changed to %x", got[:16])
	}
}

func TestChunkMapSize(t *testing.T) {
	for n, want := range map[uint32]int64{1: 4097, 8: 4097, 9: 4098, 10: 4098, 16: 4098, 17: 4099, MaxChunks: 4096 + MaxChunks/8} {
		if got := ChunkMapSize(n); got != want {
			t.Errorf("ChunkMapSize(%d) = %d, want %d", n, got, want)
		}
	}
}
