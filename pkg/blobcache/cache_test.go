package blobcache

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestPutReadHas(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, Options{})
	b := openBlob(t, c, blobID(1), 8, nil)
	for i := range uint32(8) {
		if b.Has(i) {
			t.Fatalf("fresh blob has chunk %d", i)
		}
	}
	put(t, b, 2)
	put(t, b, 5)
	put(t, b, 5) // idempotent
	if got := hasSet(b); !equalU32(got, []uint32{2, 5}) {
		t.Fatalf("Has = %v", got)
	}
	if checkCached(t, b) != 2 {
		t.Fatal("wrong count")
	}
	got, err := b.ReadChunk(ctx, 5, chunkOff(5), len(chunkData(5)), verifier(5))
	if err != nil || !bytes.Equal(got, chunkData(5)) {
		t.Fatalf("ReadChunk: %v", err)
	}
	if _, err := b.ReadChunk(ctx, 3, chunkOff(3), 4096, nil); !errors.Is(err, ErrNotCached) {
		t.Fatalf("ReadChunk of a missing chunk: %v", err)
	}
	if b.Has(8) || b.Has(1<<31) {
		t.Fatal("Has out of range")
	}
	for _, bad := range []struct {
		idx  uint32
		off  int64
		data []byte
	}{
		{8, 0, []byte{1}},
		{0, -4096, []byte{1}},
		{0, 0, nil},
		{0, 1 << 60, []byte{1}},
	} {
		if err := b.Put(ctx, bad.idx, bad.off, bad.data, nil); err == nil {
			t.Errorf("Put(%d, %d, %d bytes) succeeded", bad.idx, bad.off, len(bad.data))
		} else if !strings.Contains(err.Error(), blobID(1)) {
			t.Errorf("error does not name the blob: %v", err)
		}
	}
}

// TestPutVerifyFailureWritesNothing: a failing verify leaves the data
// file and the chunk_map untouched.
func TestPutVerifyFailureWritesNothing(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, Options{})
	id := blobID(1)
	b := openBlob(t, c, id, 4, nil)
	put(t, b, 0)
	data0 := readFile(t, filepath.Join(c.o.Dir, id+DataSuffix))
	map0 := readFile(t, mapPath(c, id))
	wrong := chunkData(2)
	wrong[100] ^= 1
	err := b.Put(ctx, 2, chunkOff(2), wrong, verifier(2))
	if !errors.Is(err, errDigest) || !strings.Contains(err.Error(), "chunk 2") || !strings.Contains(err.Error(), id) {
		t.Fatalf("Put with bad data: %v", err)
	}
	if b.Has(2) {
		t.Fatal("chunk set after failed verify")
	}
	if !bytes.Equal(readFile(t, filepath.Join(c.o.Dir, id+DataSuffix)), data0) {
		t.Fatal("data file changed by a failed Put")
	}
	if !bytes.Equal(readFile(t, mapPath(c, id)), map0) {
		t.Fatal("chunk_map changed by a failed Put")
	}
}

// TestPutOrder checks the durable steps of a Put happen in the order the
// crash-safety argument needs: write, fdatasync, set bit, msync.
func TestPutOrder(t *testing.T) {
	c := openCache(t, Options{})
	var mu sync.Mutex
	var evs []string
	c.hooks = &hooks{event: func(ev string, idx uint32) {
		mu.Lock()
		evs = append(evs, ev)
		mu.Unlock()
	}}
	b := openBlob(t, c, blobID(1), 2, nil)
	put(t, b, 0)
	put(t, b, 0)
	put(t, b, 1)
	want := []string{"write", "datasync", "setbit", "mapsync", "write", "datasync", "setbit", "mapsync", "allready"}
	if !slices.Equal(evs, want) {
		t.Fatalf("events %v, want %v", evs, want)
	}
}

func TestValidateOnRead(t *testing.T) {
	ctx := context.Background()
	for _, validate := range []bool{false, true} {
		c := openCache(t, Options{ValidateOnRead: validate})
		id := blobID(1)
		b := openBlob(t, c, id, 2, nil)
		put(t, b, 0)
		put(t, b, 1)
		if !b.Ready() {
			t.Fatal("not ready")
		}
		// Corrupt chunk 1 on disk behind the cache's back.
		f, err := os.OpenFile(filepath.Join(c.o.Dir, id+DataSuffix), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte("garbage"), chunkOff(1)+10)
		f.Close()

		got, err := b.ReadChunk(ctx, 1, chunkOff(1), len(chunkData(1)), verifier(1))
		if !validate {
			if err != nil || bytes.Equal(got, chunkData(1)) {
				t.Fatalf("without validation: err %v, data unchanged %v", err, bytes.Equal(got, chunkData(1)))
			}
			continue
		}
		if !errors.Is(err, ErrCorrupt) || !errors.Is(err, errDigest) || !strings.Contains(err.Error(), "chunk 1") {
			t.Fatalf("ReadChunk of corrupt data: %v", err)
		}
		if b.Has(1) || b.Ready() || !b.Has(0) {
			t.Fatalf("after corruption: Has(1)=%v Ready=%v Has(0)=%v", b.Has(1), b.Ready(), b.Has(0))
		}
		if m := readFile(t, mapPath(c, id)); !bytes.Equal(m, handMap(2, 1, false, 0)) {
			t.Fatalf("chunk_map after invalidation: header %x bitmap %x", m[:16], m[4096:])
		}
		put(t, b, 1) // refetch
		if got, err := b.ReadChunk(ctx, 1, chunkOff(1), len(chunkData(1)), verifier(1)); err != nil || !bytes.Equal(got, chunkData(1)) {
			t.Fatalf("after refetch: %v", err)
		}
		if !b.Ready() {
			t.Fatal("not ready after refetch")
		}
		if m := readFile(t, mapPath(c, id)); !bytes.Equal(m, handMap(2, 1, true, 0, 1)) {
			t.Fatalf("chunk_map after refetch: header %x bitmap %x", m[:16], m[4096:])
		}
	}
}

// TestShortDataFileIsCorrupt: a set bit over a truncated data file is
// cleared on ReadChunk, with or without validation.
func TestShortDataFileIsCorrupt(t *testing.T) {
	c := openCache(t, Options{})
	id := blobID(1)
	b := openBlob(t, c, id, 2, nil)
	put(t, b, 1)
	if err := os.Truncate(filepath.Join(c.o.Dir, id+DataSuffix), chunkOff(1)+10); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ReadChunk(context.Background(), 1, chunkOff(1), len(chunkData(1)), nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadChunk of a truncated chunk: %v", err)
	}
	if b.Has(1) {
		t.Fatal("bit still set")
	}
}

func TestBlobIDValidation(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, Options{})
	good := strings.Repeat("0123456789abcdef", 4)
	if !ValidBlobID(good) {
		t.Fatal("valid id rejected")
	}
	for _, id := range []string{
		"",
		good[:63],
		good + "0",
		strings.ToUpper(good),
		"../" + good[3:],
		good[:60] + "/../",
		"sha256:" + good[7:],
		good[:63] + "g",
		good[:63] + "\x00",
	} {
		if ValidBlobID(id) {
			t.Errorf("ValidBlobID(%q)", id)
		}
		if _, err := c.Blob(ctx, id, 1, nil); !errors.Is(err, ErrInvalidBlobID) {
			t.Errorf("Blob(%q): %v", id, err)
		}
		if err := c.Remove(ctx, id); !errors.Is(err, ErrInvalidBlobID) {
			t.Errorf("Remove(%q): %v", id, err)
		}
	}
	if ents, _ := os.ReadDir(c.o.Dir); len(ents) != 0 {
		t.Fatalf("files created for invalid ids: %v", ents)
	}
}

func TestPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "cache")
	c := openCache(t, Options{Dir: dir})
	id := blobID(1)
	b := openBlob(t, c, id, 2, testMeta(t, 2))
	put(t, b, 0)
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v, %v", fi.Mode(), err)
	}
	for _, s := range []string{DataSuffix, ChunkMapSuffix, MetaSuffix} {
		fi, err := os.Stat(filepath.Join(dir, id+s))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v, %v", s, fi.Mode(), err)
		}
	}
}

func TestMetaFile(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, Options{})
	id := blobID(1)
	meta := testMeta(t, 3)
	p := filepath.Join(c.o.Dir, id+MetaSuffix)

	if _, err := c.Blob(ctx, id, 4, meta); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("meta with the wrong chunk count: %v", err)
	}
	if _, err := c.Blob(ctx, id, 3, meta[:len(meta)-1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated meta: %v", err)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("invalid meta written")
	}

	b, err := c.Blob(ctx, id, 3, meta)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, p), meta) {
		t.Fatal("meta file content differs")
	}
	fi1, _ := os.Stat(p)
	b2, err := c.Blob(ctx, id, 3, meta) // same content: not rewritten
	if err != nil || b2 != b {
		t.Fatalf("second Blob: %v, same handle %v", err, b2 == b)
	}
	b.Release()
	b2.Release()
	time.Sleep(10 * time.Millisecond)
	b, err = c.Blob(ctx, id, 3, meta)
	if err != nil {
		t.Fatal(err)
	}
	if fi2, _ := os.Stat(p); !os.SameFile(fi1, fi2) || !fi2.ModTime().Equal(fi1.ModTime()) {
		t.Fatal("identical meta file was rewritten")
	}
	b.Release()

	// A differing file (say, from an older build) is replaced atomically,
	// and nil meta leaves a pre-seeded file alone.
	writeFile(t, p, bytes.Repeat([]byte{1}, len(meta)))
	b = openBlob(t, c, id, 3, meta)
	if !bytes.Equal(readFile(t, p), meta) {
		t.Fatal("differing meta not replaced")
	}
	id2 := blobID(2)
	p2 := filepath.Join(c.o.Dir, id2+MetaSuffix)
	writeFile(t, p2, []byte("pre-seeded by the snapshotter"))
	openBlob(t, c, id2, 3, nil)
	if string(readFile(t, p2)) != "pre-seeded by the snapshotter" {
		t.Fatal("nil meta touched the meta file")
	}
	if !slices.Contains(c.UnderlyingFiles(), id2+MetaSuffix) {
		t.Fatal("pre-seeded meta not listed")
	}
	_ = b
}

func TestRefcountRemoveUnderlyingFiles(t *testing.T) {
	ctx := context.Background()
	c := openCache(t, Options{})
	id1, id2 := blobID(1), blobID(2)
	b1, err := c.Blob(ctx, id1, 4, testMeta(t, 4))
	if err != nil {
		t.Fatal(err)
	}
	b1b, err := c.Blob(ctx, id1, 4, nil)
	if err != nil || b1b != b1 {
		t.Fatalf("second reference: %v", err)
	}
	if _, err := c.Blob(ctx, id1, 5, nil); err == nil {
		t.Fatal("chunk count mismatch accepted")
	}
	b2, err := c.Blob(ctx, id2, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	put(t, b1, 1)
	want := []string{id1 + ".blob.data", id1 + ".blob.data.chunk_map", id1 + ".blob.meta", id2 + ".blob.data", id2 + ".blob.data.chunk_map"}
	if got := c.UnderlyingFiles(); !slices.Equal(got, want) {
		t.Fatalf("UnderlyingFiles = %v, want %v", got, want)
	}

	err = c.Remove(ctx, id1)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), id1) {
		t.Fatalf("Remove in use: %v", err)
	}
	b1.Release()
	if err := c.Remove(ctx, id1); !errors.Is(err, ErrInUse) {
		t.Fatalf("Remove with one reference left: %v", err)
	}
	if !b1.Has(1) {
		t.Fatal("handle closed while referenced")
	}
	b1b.Release()
	if b1.Has(1) || b1.Ready() {
		t.Fatal("released handle still answers")
	}
	if err := b1.Put(ctx, 2, chunkOff(2), chunkData(2), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after release: %v", err)
	}
	if got := c.UnderlyingFiles(); !slices.Equal(got, want[3:]) {
		t.Fatalf("UnderlyingFiles after release = %v", got)
	}
	before := c.Usage()
	if err := c.Remove(ctx, id1); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(ctx, id1); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	for _, s := range []string{DataSuffix, ChunkMapSuffix, MetaSuffix} {
		if _, err := os.Stat(filepath.Join(c.o.Dir, id1+s)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s survived Remove", s)
		}
	}
	if after := c.Usage(); after >= before {
		t.Fatalf("usage %d -> %d after Remove", before, after)
	}
	b1.Release() // over-release is logged, not fatal
	b2.Release()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Blob(ctx, id2, 2, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Blob after Close: %v", err)
	}
}

// TestUsageAndScan: Usage counts allocated blocks, and a reopened cache
// finds the same usage by scanning.
func TestUsageAndScan(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := openCache(t, Options{Dir: dir})
	b := openBlob(t, c, blobID(1), 64, testMeta(t, 64))
	u0 := c.Usage()
	if u0 <= 0 {
		t.Fatalf("usage %d with map and meta", u0)
	}
	for i := range uint32(16) {
		put(t, b, i)
	}
	u1 := c.Usage()
	var payload int64
	for i := range uint32(16) {
		payload += int64(len(chunkData(i)))
	}
	if u1-u0 < payload || u1-u0 > payload+16*4096+64<<10 {
		t.Fatalf("usage grew by %d for %d bytes of chunks", u1-u0, payload)
	}
	// The data file is sparse: 64 KiB stride but less data.
	fi, _ := os.Stat(filepath.Join(dir, blobID(1)+DataSuffix))
	if allocated(fi) >= fi.Size() {
		t.Logf("data file not sparse (allocated %d, size %d)", allocated(fi), fi.Size())
	}
	b.Release()
	c.Close()
	// A stale temporary file is cleaned up, a fresh one is left alone.
	stale := filepath.Join(dir, "."+blobID(1)+MetaSuffix+tmpInfix+"123")
	fresh := filepath.Join(dir, "."+blobID(2)+MetaSuffix+tmpInfix+"456")
	writeFile(t, stale, []byte("x"))
	writeFile(t, fresh, []byte("x"))
	old := time.Now().Add(-time.Hour)
	os.Chtimes(stale, old, old)
	writeFile(t, filepath.Join(dir, "unrelated"), []byte("not ours"))

	c2 := openCache(t, Options{Dir: dir})
	if got := c2.Usage(); got != u1 {
		t.Fatalf("rescanned usage %d, want %d", got, u1)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("stale temporary file kept")
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Fatal("fresh temporary file removed")
	}
	b2 := openBlob(t, c2, blobID(1), 64, nil)
	if checkCached(t, b2) != 16 {
		t.Fatal("chunks lost across reopen")
	}
	_ = ctx
}

// TestEvictLRU: over the cap, blobs not in use go, least recently used
// first; blobs in use never do.
func TestEvictLRU(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := openCache(t, Options{Dir: dir})
	fill := func(id string) { fillBlob(t, c, id, 8) }
	a, b, d := blobID(1), blobID(2), blobID(3)
	fill(a)
	time.Sleep(2 * time.Millisecond)
	fill(b)
	per := c.Usage() / 2
	time.Sleep(2 * time.Millisecond)
	// Touch a so that b becomes the least recently used.
	ba, err := c.Blob(ctx, a, 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	ba.Release()
	c.Close()

	exists := func(id string) bool {
		_, err := os.Stat(filepath.Join(dir, id+DataSuffix))
		return err == nil
	}
	// Reopen with a cap of about two and a half blobs; a third blob in use
	// pushes the usage over it.
	var evicted []string
	c2 := openCache(t, Options{Dir: dir, MaxBytes: per*5/2 + 1, OnEvict: func(id string, n int64) {
		if n <= 0 {
			t.Errorf("evicting %s freed %d bytes", id, n)
		}
		evicted = append(evicted, id)
	}})
	if !exists(a) || !exists(b) {
		t.Fatal("evicted below the cap")
	}
	bd := openBlob(t, c2, d, 8, nil)
	for i := range uint32(8) {
		put(t, bd, i)
	}
	if exists(b) || !exists(a) || !exists(d) {
		t.Fatalf("after overflow: a=%v b=%v d=%v; want only b evicted", exists(a), exists(b), exists(d))
	}
	if len(evicted) != 1 || evicted[0] != b {
		t.Errorf("OnEvict told of %v, want [%s]", evicted, b)
	}
	if _, err := os.Stat(filepath.Join(dir, b+ChunkMapSuffix)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("evicted blob's chunk_map left")
	}
	if u := c2.Usage(); u > c2.o.MaxBytes {
		t.Fatalf("usage %d over cap %d", u, c2.o.MaxBytes)
	}

	// With a tiny cap, everything not in use goes but the blob in use stays.
	c2.Close()
	c3 := openCache(t, Options{Dir: dir, MaxBytes: 1})
	if exists(a) || exists(d) {
		t.Fatal("blobs not in use survived a tiny cap")
	}
	bd = openBlob(t, c3, d, 8, nil)
	put(t, bd, 0)
	put(t, bd, 1)
	if !exists(d) || checkCached(t, bd) != 2 {
		t.Fatal("blob in use was evicted")
	}
	if err := c3.Remove(ctx, d); !errors.Is(err, ErrInUse) {
		t.Fatalf("Remove in use: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := Open(ctx, Options{}); err == nil {
		t.Fatal("empty dir accepted")
	}
	f := filepath.Join(t.TempDir(), "file")
	writeFile(t, f, nil)
	if _, err := Open(ctx, Options{Dir: f}); err == nil {
		t.Fatal("regular file accepted as dir")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	c := openCache(t, Options{})
	if _, err := c.Blob(cctx, blobID(1), 1, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Blob with cancelled ctx: %v", err)
	}
	b := openBlob(t, c, blobID(1), 1, nil)
	if err := b.Put(cctx, 0, 0, chunkData(0), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with cancelled ctx: %v", err)
	}
	if _, err := c.Blob(ctx, blobID(2), 0, nil); err == nil {
		t.Fatal("zero chunks accepted")
	}
	// A symlink planted in the directory is not followed.
	target := filepath.Join(t.TempDir(), "target")
	writeFile(t, target, nil)
	if err := os.Symlink(target, filepath.Join(c.o.Dir, blobID(3)+DataSuffix)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Blob(ctx, blobID(3), 1, nil); err == nil {
		t.Fatal("symlinked data file followed")
	}
}
