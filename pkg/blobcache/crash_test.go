package blobcache

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Crash test parameters: the child fills crashBlobs blobs of crashChunks
// chunks; the parent kills it crashRounds times.
const (
	crashChunks = 160
	crashBlobs  = 4
	crashRounds = 16

	envCrashDir  = "BLOBCACHE_CRASH_DIR"
	envCrashBlob = "BLOBCACHE_CRASH_BLOB"
)

// TestCrashChild is the process TestCrashSafety kills; it does nothing
// unless started by it.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(envCrashDir)
	if dir == "" {
		t.Skip("only runs as TestCrashSafety's child")
	}
	k, _ := strconv.Atoi(os.Getenv(envCrashBlob))
	ctx := context.Background()
	c, err := Open(ctx, Options{Dir: dir, ValidateOnRead: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Blob(ctx, blobID(k), crashChunks, testMeta(t, crashChunks))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(g)))
			for _, i := range r.Perm(crashChunks) {
				idx := uint32(i)
				if err := b.Put(ctx, idx, chunkOff(idx), chunkData(idx), verifier(idx)); err != nil {
					t.Error(err)
					return
				}
				if _, err := b.ReadChunk(ctx, idx, chunkOff(idx), len(chunkData(idx)), verifier(idx)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.Release()
	c.Close()
}

// TestCrashSafety re-executes the test binary as TestCrashChild, which
// Puts chunks from several goroutines, and SIGKILLs it at random moments
// (including while it creates the blob's files). After every kill a fresh
// Cache must open the directory, and every chunk whose bit is set must
// hold exactly its data.
func TestCrashSafety(t *testing.T) {
	if os.Getenv(envCrashDir) != "" {
		t.Skip("child process")
	}
	if testing.Short() {
		t.Skip("short mode")
	}
	dir := t.TempDir()
	meta := testMeta(t, crashChunks)
	ctx := context.Background()
	var partial, complete, total int
	for round := range crashRounds {
		k := round % crashBlobs
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), envCrashDir+"="+dir, envCrashBlob+"="+strconv.Itoa(k))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		cmd.Process.Kill() // SIGKILL
		err := cmd.Wait()
		var ee *exec.ExitError
		if err != nil && !(errors.As(err, &ee) && !ee.Exited()) {
			t.Fatalf("round %d: child failed: %v\n%s", round, err, out.Bytes())
		}

		c, err := Open(ctx, Options{Dir: dir})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		for j := range crashBlobs {
			id := blobID(j)
			if _, err := os.Stat(filepath.Join(dir, id+ChunkMapSuffix)); err != nil {
				continue
			}
			if m, err := os.ReadFile(filepath.Join(dir, id+MetaSuffix)); err == nil && !bytes.Equal(m, meta) {
				t.Fatalf("round %d: blob %d: meta file is torn (%d bytes)", round, j, len(m))
			}
			b, err := c.Blob(ctx, id, crashChunks, nil)
			if err != nil {
				t.Fatalf("round %d: blob %d after crash: %v", round, j, err)
			}
			set := checkCached(t, b)
			if j == k {
				t.Logf("round %d: blob %d has %d/%d chunks", round, k, set, crashChunks)
				total += set
				switch {
				case set == crashChunks:
					complete++
				case set > 0:
					partial++
				}
			}
			b.Release()
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d rounds: %d killed part-way with chunks cached, %d complete", crashRounds, partial, complete)
	if total == 0 {
		t.Fatal("no round got as far as caching a chunk; the test proves nothing")
	}
}
