package blobcache

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestConcurrent runs Put, Has, ReadAt, ReadChunk, Blob/Release and the
// accounting calls from many goroutines, on the same and on different
// chunks. Run it under -race.
func TestConcurrent(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, Options{ValidateOnRead: true})
	const n = 48
	ids := []string{blobID(1), blobID(2)}
	blobs := []*BlobCache{openBlob(t, c, ids[0], n, testMeta(t, n)), openBlob(t, c, ids[1], n, nil)}

	var wg sync.WaitGroup
	errc := make(chan error, 100)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	for g := range 12 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for range 120 {
				b := blobs[r.IntN(2)]
				idx := uint32(r.IntN(n))
				if g%2 == 0 {
					idx = uint32(r.IntN(3)) // hammer the same few chunks
				}
				switch r.IntN(6) {
				case 0, 1:
					if err := b.Put(ctx, idx, chunkOff(idx), chunkData(idx), verifier(idx)); err != nil {
						fail(err)
					}
				case 2:
					if b.Has(idx) {
						got := make([]byte, len(chunkData(idx)))
						if _, err := b.ReadAt(ctx, got, chunkOff(idx)); err != nil {
							fail(err)
						} else if !bytes.Equal(got, chunkData(idx)) {
							fail(errors.New("Has chunk but ReadAt returned wrong bytes"))
						}
					}
				case 3:
					got, err := b.ReadChunk(ctx, idx, chunkOff(idx), len(chunkData(idx)), verifier(idx))
					if err != nil && !errors.Is(err, ErrNotCached) {
						fail(err)
					} else if err == nil && !bytes.Equal(got, chunkData(idx)) {
						fail(errors.New("ReadChunk returned wrong bytes"))
					}
				case 4:
					bb, err := c.Blob(ctx, ids[r.IntN(2)], n, nil)
					if err != nil {
						fail(err)
						continue
					}
					bb.Has(idx)
					bb.Release()
				case 5:
					c.Usage()
					c.UnderlyingFiles()
					b.Ready()
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	for _, b := range blobs {
		for i := range uint32(n) {
			put(t, b, i)
		}
		if !b.Ready() || checkCached(t, b) != n {
			t.Fatal("not complete")
		}
	}
	all := make([]uint32, n)
	for i := range all {
		all[i] = uint32(i)
	}
	for _, id := range ids {
		if got := readFile(t, mapPath(c, id)); !bytes.Equal(got, handMap(n, 1, true, all...)) {
			t.Fatalf("final chunk_map: header %x bitmap %x", got[:16], got[4096:])
		}
	}
}

// TestConcurrentInvalidate: many readers find corrupt chunks at once and
// re-put them; at the end everything is correct and the all_ready flag
// agrees with the bitmap.
func TestConcurrentInvalidate(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, Options{ValidateOnRead: true})
	const n = 16
	id := blobID(1)
	b := openBlob(t, c, id, n, nil)
	for i := range uint32(n) {
		put(t, b, i)
	}
	f, err := os.OpenFile(filepath.Join(c.o.Dir, id+DataSuffix), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range uint32(8) {
		f.WriteAt([]byte("corrupt"), chunkOff(i)+1)
	}
	f.Close()

	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for k := range 40 {
				idx := uint32((g + k) % n)
				_, err := b.ReadChunk(ctx, idx, chunkOff(idx), len(chunkData(idx)), verifier(idx))
				switch {
				case errors.Is(err, ErrCorrupt), errors.Is(err, ErrNotCached):
					if err := b.Put(ctx, idx, chunkOff(idx), chunkData(idx), verifier(idx)); err != nil {
						t.Error(err)
					}
				case err != nil:
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	for i := range uint32(n) {
		put(t, b, i)
	}
	if !b.Ready() || checkCached(t, b) != n {
		t.Fatal("not complete after refetch")
	}
	for i := range uint32(n) {
		if _, err := b.ReadChunk(ctx, i, chunkOff(i), len(chunkData(i)), verifier(i)); err != nil {
			t.Fatal(err)
		}
	}
	all := make([]uint32, n)
	for i := range all {
		all[i] = uint32(i)
	}
	if got := readFile(t, mapPath(c, id)); !bytes.Equal(got, handMap(n, 1, true, all...)) {
		t.Fatalf("final chunk_map: header %x bitmap %x", got[:16], got[4096:])
	}
}
