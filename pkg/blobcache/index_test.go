package blobcache

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/nydus-go/nydus/pkg/digester"
)

// indexPut caches test chunk idx of b and records its content.
func indexPut(t *testing.T, b *BlobCache, idx uint32) digester.Digest {
	t.Helper()
	put(t, b, idx)
	d := digester.Sum(digester.Blake3, chunkData(idx))
	b.Index(idx, chunkOff(idx), len(chunkData(idx)), digester.Blake3, d)
	return d
}

// TestContentIndex: a chunk cached and indexed in one blob is found by
// content for any other blob: after a restart (the journal and the
// chunk_map rebuild the index), with a torn journal tail (kill -9), by
// another process sharing the directory, not with another digest
// algorithm or size, not once its data changed on disk, and not after
// its blob is removed; the index stays within its bound.
func TestContentIndex(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := openCache(t, Options{Dir: dir})
	other := openCache(t, Options{Dir: dir}) // another process on the node
	a := openBlob(t, c, blobID(1), 4, nil)
	d1 := indexPut(t, a, 1)
	d2 := indexPut(t, a, 2)
	// A chunk that is not cached is not indexed.
	a.Index(3, chunkOff(3), len(chunkData(3)), digester.Blake3, digester.Sum(digester.Blake3, chunkData(3)))

	want1 := chunkData(1)
	if got, ok := c.Shared(ctx, digester.Blake3, d1, len(want1)); !ok || !bytes.Equal(got, want1) {
		t.Fatalf("Shared: %v", ok)
	}
	if _, ok := c.Shared(ctx, digester.Blake3, digester.Sum(digester.Blake3, chunkData(3)), len(chunkData(3))); ok {
		t.Fatal("an uncached chunk was indexed")
	}
	if _, ok := c.Shared(ctx, digester.Sha256, d1, len(want1)); ok {
		t.Fatal("another digest algorithm found the chunk")
	}
	if _, ok := c.Shared(ctx, digester.Blake3, d1, len(want1)+1); ok {
		t.Fatal("another size found the chunk")
	}
	// The other process sees it once it reads the journals again.
	time.Sleep(indexRefresh + 50*time.Millisecond)
	if got, ok := other.Shared(ctx, digester.Blake3, d2, len(chunkData(2))); !ok || !bytes.Equal(got, chunkData(2)) {
		t.Fatal("another cache on the directory does not find the chunk")
	}

	// Restart, with a torn record at the journal's end (kill -9).
	a.Release()
	c.Close()
	other.Close()
	f, err := os.OpenFile(dir+"/"+blobID(1)+DigestsSuffix, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("torn record"))
	f.Close()
	c = openCache(t, Options{Dir: dir})
	if c.IndexLen() != 2 {
		t.Fatalf("after a restart the index has %d entries, want 2", c.IndexLen())
	}
	if got, ok := c.Shared(ctx, digester.Blake3, d1, len(want1)); !ok || !bytes.Equal(got, want1) {
		t.Fatal("after a restart the chunk is not found")
	}

	// Changed on disk: not served, and forgotten.
	data, err := os.OpenFile(dir+"/"+blobID(1)+DataSuffix, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	data.WriteAt([]byte("tampered"), chunkOff(1)+10)
	data.Close()
	if _, ok := c.Shared(ctx, digester.Blake3, d1, len(want1)); ok {
		t.Fatal("a chunk changed on disk was served")
	}
	if c.IndexLen() != 1 {
		t.Fatalf("the changed chunk's entry stayed: %d entries", c.IndexLen())
	}

	// Removed with its blob, journal included.
	if err := c.Remove(ctx, blobID(1)); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Shared(ctx, digester.Blake3, d2, len(chunkData(2))); ok || c.IndexLen() != 0 {
		t.Fatalf("a removed blob's chunk is still indexed (%d entries)", c.IndexLen())
	}
	if _, err := os.Stat(dir + "/" + blobID(1) + DigestsSuffix); !os.IsNotExist(err) {
		t.Fatalf("the removed blob's journal is left: %v", err)
	}

	// Bounded.
	small := openCache(t, Options{Dir: t.TempDir(), IndexEntries: 2})
	b := openBlob(t, small, blobID(2), 4, nil)
	for i := range uint32(4) {
		indexPut(t, b, i)
	}
	if n := small.IndexLen(); n != 2 {
		t.Fatalf("index bounded at 2 has %d entries", n)
	}
}

// TestContentIndexOrphanJournal: a journal whose blob's files another
// tool removed (the snapshotter's cache GC) is removed at Open.
func TestContentIndexOrphanJournal(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, Options{Dir: dir})
	b := openBlob(t, c, blobID(3), 2, nil)
	indexPut(t, b, 0)
	b.Release()
	c.Close()
	for _, s := range []string{DataSuffix, ChunkMapSuffix} {
		os.Remove(dir + "/" + blobID(3) + s)
	}
	c = openCache(t, Options{Dir: dir})
	if _, err := os.Stat(dir + "/" + blobID(3) + DigestsSuffix); !os.IsNotExist(err) {
		t.Fatalf("orphan journal left: %v", err)
	}
	if c.IndexLen() != 0 {
		t.Fatalf("%d entries from an orphan journal", c.IndexLen())
	}
}

// TestContentIndexConcurrent: puts, records and lookups from many
// goroutines and two caches on one directory (run it with -race).
func TestContentIndexConcurrent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c1 := openCache(t, Options{Dir: dir})
	c2 := openCache(t, Options{Dir: dir})
	const n = 16
	done := make(chan struct{})
	for w := range 4 {
		c := c1
		if w%2 == 1 {
			c = c2
		}
		go func() {
			defer func() { done <- struct{}{} }()
			b, err := c.Blob(ctx, blobID(10+w%2), n, nil)
			if err != nil {
				t.Error(err)
				return
			}
			defer b.Release()
			for i := range uint32(n) {
				if err := b.Put(ctx, i, chunkOff(i), chunkData(i), nil); err != nil {
					t.Error(err)
					return
				}
				b.Index(i, chunkOff(i), len(chunkData(i)), digester.Blake3, digester.Sum(digester.Blake3, chunkData(i)))
				j := (i * 7) % n
				if got, ok := c.Shared(ctx, digester.Blake3, digester.Sum(digester.Blake3, chunkData(j)), len(chunkData(j))); ok && !bytes.Equal(got, chunkData(j)) {
					t.Errorf("chunk %d: wrong bytes", j)
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
	for i := range uint32(n) {
		if got, ok := c1.Shared(ctx, digester.Blake3, digester.Sum(digester.Blake3, chunkData(i)), len(chunkData(i))); !ok || !bytes.Equal(got, chunkData(i)) {
			t.Fatalf("chunk %d not shared after the concurrent puts", i)
		}
	}
}
