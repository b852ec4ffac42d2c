package blobcache

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/compress"
)

// errDigest is what test verifiers return on a mismatch.
var errDigest = errors.New("digest mismatch")

// blobID returns a valid, distinct blob id for i.
func blobID(i int) string { return fmt.Sprintf("%064x", 0xb10b0000+i) }

// chunkStride is the spacing of test chunks in the uncompressed blob.
const chunkStride = 64 << 10

// chunkOff returns test chunk idx's (4 KiB aligned) uncompressed offset.
func chunkOff(idx uint32) int64 { return int64(idx) * chunkStride }

// chunkData returns the deterministic content of test chunk idx: 4 KiB to
// just under 64 KiB of pseudo-random bytes seeded by idx.
func chunkData(idx uint32) []byte {
	b := make([]byte, 4096+int(idx*7919)%(chunkStride-4096))
	x := idx*2654435761 + 0x9e3779b9
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// verifier checks data against test chunk idx by sha256, like a digest
// check would.
func verifier(idx uint32) func([]byte) error {
	want := sha256.Sum256(chunkData(idx))
	return func(b []byte) error {
		if sha256.Sum256(b) != want {
			return fmt.Errorf("chunk %d: %w", idx, errDigest)
		}
		return nil
	}
}

// testMeta returns a valid blob.meta file for n uncompressed test chunks.
func testMeta(t testing.TB, n int) []byte {
	t.Helper()
	var ci []byte
	var coff uint64
	for i := range uint32(n) {
		size := uint32(len(chunkData(i)))
		ci = blob.AppendChunkInfo(ci, blob.ChunkInfo{
			CompressedOffset:   coff,
			CompressedSize:     size,
			UncompressedOffset: uint64(chunkOff(i)),
			UncompressedSize:   size,
		}, true)
		coff += uint64(size)
	}
	h := blob.MetaHeader{
		Features:           blob.FeatureAligned | blob.FeatureChunkInfoV2,
		CICompressor:       compress.None,
		CIEntries:          uint32(n),
		CIOffset:           coff,
		CICompressedSize:   uint64(len(ci)),
		CIUncompressedSize: uint64(len(ci)),
	}
	meta, err := blob.MarshalMetaFile(h, ci)
	if err != nil {
		t.Fatal(err)
	}
	return meta
}

// openCache opens a cache that is closed when the test ends.
func openCache(t testing.TB, o Options) *Cache {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	c, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// openBlob opens a blob that is released when the test ends.
func openBlob(t testing.TB, c *Cache, id string, n int, meta []byte) *BlobCache {
	t.Helper()
	b, err := c.Blob(context.Background(), id, n, meta)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Release)
	return b
}

// put stores test chunk idx with its verifier.
func put(t testing.TB, b *BlobCache, idx uint32) {
	t.Helper()
	if err := b.Put(context.Background(), idx, chunkOff(idx), chunkData(idx), verifier(idx)); err != nil {
		t.Fatal(err)
	}
}

// checkCached fails unless every chunk with its bit set holds the right
// bytes; it returns the number of chunks set.
func checkCached(t testing.TB, b *BlobCache) int {
	t.Helper()
	set := 0
	for idx := range uint32(b.Chunks()) {
		if !b.Has(idx) {
			continue
		}
		set++
		want := chunkData(idx)
		got := make([]byte, len(want))
		if n, err := b.ReadAt(context.Background(), got, chunkOff(idx)); err != nil || n != len(got) {
			t.Fatalf("chunk %d is marked cached but reading it gives %d bytes, %v", idx, n, err)
		}
		if err := verifier(idx)(got); err != nil {
			t.Fatalf("chunk %d is marked cached but holds wrong data: %v", idx, err)
		}
	}
	return set
}

// fillBlob caches every one of the n test chunks of blob id.
func fillBlob(t testing.TB, c *Cache, id string, n int) {
	t.Helper()
	b, err := c.Blob(context.Background(), id, n, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range uint32(n) {
		put(t, b, i)
	}
	b.Release()
}
