package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/storage"
)

// amplifyImage builds one file of 8 incompressible 64 KiB chunks.
func amplifyImage(t *testing.T) (boot []byte, dir, blobID string, data []byte) {
	t.Helper()
	data = treetest.Random(77, 8*0x10000)
	res, dir := buildImage(t, []treetest.File{treetest.Reg("big", 0o644, data)}, builder.Options{ChunkSize: 0x10000})
	return res.Bootstrap, dir, res.BlobID, data
}

// buildImage builds files into a bootstrap and a blob, written as
// <dir>/<blob id> for a storage.FileSource.
func buildImage(t *testing.T, files []treetest.File, o builder.Options) (*builder.Result, string) {
	t.Helper()
	var blob bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(treetest.Tar(files)), &blob, o)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, res.BlobID), blob.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return res, dir
}

// dataRanges returns the ranges read at or above off0 (the chunk data,
// not the chunk-info table at the blob's end), sorted.
func (r *rangeCounter) dataRanges(below int64) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for k := range r.counts {
		off, _ := strconv.ParseInt(strings.Split(k, "+")[0], 10, 64)
		if off < below {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// TestAmplification: with Options.Amplify, a miss fetches the following
// uncached chunks of the blob in the same request, never past Amplify,
// never a cached chunk again, and no byte twice.
func TestAmplification(t *testing.T) {
	boot, dir, _, data := amplifyImage(t)
	be := &rangeCounter{FileSource: storage.FileSource{Dir: dir}, counts: map[string]int{}}
	f, err := Open(context.Background(), boot, be, Options{Cache: &memCache{m: map[string][]byte{}}, Amplify: 4 * 0x10000})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	table, _ := f.Reader().ChunkTable(context.Background())
	sort.Slice(table, func(i, j int) bool { return table[i].Index < table[j].Index })
	off := func(k int) int64 { return int64(table[k].CompressedOffset) }
	dataEnd := int64(table[7].CompressedOffset) + int64(table[7].CompressedSize)
	ino, _ := f.Lookup(context.Background(), f.RootNid(), "big")
	read := func(k int) error {
		buf := make([]byte, 100)
		n, err := f.Read(context.Background(), ino.Nid, buf, int64(k)*0x10000+5)
		if err == nil && !bytes.Equal(buf[:n], data[k*0x10000+5:][:n]) {
			err = errors.New("wrong bytes")
		}
		return err
	}
	span := func(from, n int) string {
		return strconv.FormatInt(off(from), 10) + "+" + strconv.FormatInt(off(from+n-1)+int64(table[from+n-1].CompressedSize)-off(from), 10)
	}
	for _, step := range []struct {
		chunk int
		want  []string
	}{
		{0, []string{span(0, 4)}},                         // 0 and the next three, in one request
		{3, []string{span(0, 4)}},                         // already there
		{5, []string{span(0, 4), span(5, 3)}},             // 5, 6, 7: the blob ends
		{4, []string{span(0, 4), span(4, 1), span(5, 3)}}, // 4 alone: 5 is cached
		{7, []string{span(0, 4), span(4, 1), span(5, 3)}},
	} {
		if err := read(step.chunk); err != nil {
			t.Fatalf("read chunk %d: %v", step.chunk, err)
		}
		want := append([]string(nil), step.want...)
		sort.Strings(want)
		if got := be.dataRanges(dataEnd); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("after reading chunk %d: data ranges %v, want %v", step.chunk, got, want)
		}
	}
	for k, n := range be.counts {
		if n != 1 {
			t.Errorf("range %s fetched %d times", k, n)
		}
	}
	if got := f.Metrics.AmplifiedChunks.Load(); got != 5 {
		t.Errorf("AmplifiedChunks %d, want 5", got)
	}
	if l := f.FetchLog(); l != nil {
		t.Error("fetch log without FetchLogSize")
	}
}

// TestAmplificationTampered: a tampered chunk inside an amplified span is
// neither served nor cached; its neighbours are, and reading it gives EIO.
func TestAmplificationTampered(t *testing.T) {
	boot, dir, blobID, data := amplifyImage(t)
	rd, _ := rafs.Open(context.Background(), bytes.NewReader(boot), int64(len(boot)))
	table, _ := rd.ChunkTable(context.Background())
	var c2 rafs.ChunkInfo
	for _, c := range table {
		if c.Index == 2 {
			c2 = c
		}
	}
	p := filepath.Join(dir, blobID)
	b, _ := os.ReadFile(p)
	b[c2.CompressedOffset+100] ^= 0xff
	os.WriteFile(p, b, 0o644)
	cache := &memCache{m: map[string][]byte{}}
	f, err := Open(context.Background(), boot, &storage.FileSource{Dir: dir}, Options{Cache: cache, Amplify: 8 * 0x10000})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ino, _ := f.Lookup(context.Background(), f.RootNid(), "big")
	buf := make([]byte, 0x10000)
	if _, err := f.Read(context.Background(), ino.Nid, buf, 0); err != nil || !bytes.Equal(buf, data[:0x10000]) {
		t.Fatalf("chunk 0: %v", err)
	}
	if cache.Has(context.Background(), blobID, 2) || !cache.Has(context.Background(), blobID, 3) {
		t.Fatal("the tampered chunk was cached, or its neighbour was not")
	}
	if f.Metrics.DigestFailures.Load() != 1 {
		t.Errorf("DigestFailures %d, want 1", f.Metrics.DigestFailures.Load())
	}
	if _, err := f.Read(context.Background(), ino.Nid, buf, 2*0x10000); !errors.Is(err, ErrIO) {
		t.Fatalf("tampered chunk 2: %v, want EIO", err)
	}
	if _, err := f.Read(context.Background(), ino.Nid, buf, 3*0x10000); err != nil || !bytes.Equal(buf, data[3*0x10000:4*0x10000]) {
		t.Fatalf("chunk 3: %v", err)
	}
}

// TestAmplificationConcurrent: many readers with amplification and
// read-ahead at once read the right bytes, and no byte of the blob is
// fetched twice: a reader of a chunk inside an amplified span waits for
// it, and a span never takes a chunk that is on its way.
func TestAmplificationConcurrent(t *testing.T) {
	boot, dir, _, data := amplifyImage(t)
	be := &rangeCounter{FileSource: storage.FileSource{Dir: dir}, counts: map[string]int{}}
	f, err := Open(context.Background(), boot, be, Options{Cache: &memCache{m: map[string][]byte{}}, Amplify: 3 * 0x10000, ReadAhead: 2 * 0x10000})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ino, _ := f.Lookup(context.Background(), f.RootNid(), "big")
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		go func(g int) {
			buf := make([]byte, 0x10000)
			for k := 0; k < 8; k++ {
				c := (g + k*3) % 8
				if _, err := f.Read(context.Background(), ino.Nid, buf, int64(c)*0x10000); err != nil || !bytes.Equal(buf, data[c*0x10000:][:0x10000]) {
					errs <- errors.New("chunk " + strconv.Itoa(c) + ": wrong bytes or " + errString(err))
					return
				}
			}
			errs <- nil
		}(g)
	}
	for g := 0; g < 16; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	f.bgWG.Wait()
	be.mu.Lock()
	defer be.mu.Unlock()
	seen := map[int64]bool{}
	for k, n := range be.counts {
		parts := strings.Split(k, "+")
		off, _ := strconv.ParseInt(parts[0], 10, 64)
		size, _ := strconv.ParseInt(parts[1], 10, 64)
		for b := off; b < off+size; b += 4096 {
			if seen[b] || n > 1 {
				t.Fatalf("bytes at %d fetched twice (ranges %v)", b, be.counts)
			}
			seen[b] = true
		}
	}
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// gatedBackend blocks every read until release is closed.
type gatedBackend struct {
	storage.FileSource
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func (g *gatedBackend) ReadRange(ctx context.Context, blobID string, off, n int64) ([]byte, error) {
	g.once.Do(func() { close(g.started) })
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.FileSource.ReadRange(ctx, blobID, off, n)
}

// TestJoinedFetchOutlivesFirstReader: a fetch that a demand read joined
// does not fail when the reader that started it (a read-ahead, say) is
// cancelled: the demand read gets its bytes, the cancelled one gives up
// at once.
func TestJoinedFetchOutlivesFirstReader(t *testing.T) {
	boot, dir, _, data := amplifyImage(t)
	g := &gatedBackend{FileSource: storage.FileSource{Dir: dir}, started: make(chan struct{}), release: make(chan struct{})}
	f, err := Open(context.Background(), boot, g, Options{Cache: &memCache{m: map[string][]byte{}}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ino, _ := f.Lookup(context.Background(), f.RootNid(), "big")
	first, cancel := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() {
		_, err := f.Read(first, ino.Nid, make([]byte, 10), 0)
		firstErr <- err
	}()
	<-g.started
	second := make(chan error, 1)
	buf := make([]byte, 10)
	go func() {
		_, err := f.Read(context.Background(), ino.Nid, buf, 0)
		second <- err
	}()
	time.Sleep(20 * time.Millisecond) // let the second reader join
	cancel()
	if err := <-firstErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled reader: %v", err)
	}
	close(g.release)
	if err := <-second; err != nil || !bytes.Equal(buf, data[:10]) {
		t.Fatalf("the reader that joined: %v", err)
	}
}

// TestAmplificationBatches: a miss of a small file's batch chunk caches
// the other chunks of its batch, which came in the same request: reading
// every small file fetches each batch once and nothing more, and every
// byte read is right. A span does not reach past its batch.
func TestAmplificationBatches(t *testing.T) {
	var files []treetest.File
	want := map[string][]byte{}
	for i := range 30 {
		name := fmt.Sprintf("m%02d.py", i)
		d := treetest.Random(int64(i), 1500+i*40) // incompressible: 1.5 to 2.7 KB, stored as is
		files = append(files, treetest.Reg(name, 0o644, d))
		want["/"+name] = d
	}
	res, dir := buildImage(t, files, builder.Options{ChunkSize: 0x10000, BatchSize: 0x4000})
	if res.Stats.BatchedChunks != 30 {
		t.Fatalf("%d chunks batched, want 30", res.Stats.BatchedChunks)
	}
	be := newStreamLog(dir)
	rd, _ := rafs.Open(context.Background(), bytes.NewReader(res.Bootstrap), int64(len(res.Bootstrap)))
	dataEnd := int64(rd.Blobs[0].CIOffset)
	cache := &memCache{m: map[string][]byte{}}
	f, err := Open(context.Background(), res.Bootstrap, be, Options{Cache: cache, Amplify: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := readFile(t, f, "/m00.py", want["/m00.py"]); err != nil {
		t.Fatal(err)
	}
	first := be.requests(dataEnd)
	if len(first) != 1 || first[0].off != 0 || first[0].n >= dataEnd {
		t.Fatalf("the first miss sent %v; want one request for the first batch only (data ends at %d)", first, dataEnd)
	}
	// The first batch's other files are cached now.
	if n := f.Metrics.AmplifiedChunks.Load(); n < 3 {
		t.Fatalf("%d chunks of the first batch came amplified", n)
	}
	for i := range 30 {
		p := fmt.Sprintf("/m%02d.py", i)
		if err := readFile(t, f, p, want[p]); err != nil {
			t.Fatal(err)
		}
	}
	reqs := be.requests(dataEnd)
	seen := map[int64]bool{}
	for _, r := range reqs {
		if seen[r.off] {
			t.Fatalf("batch at %d fetched twice: %v", r.off, reqs)
		}
		seen[r.off] = true
	}
	// 30 files of about 2.1 KB in 16 KiB batches: 4 or 5 batches.
	if len(reqs) < 4 || len(reqs) > 5 {
		t.Fatalf("%d requests for 30 small files in 16 KiB batches: %v", len(reqs), reqs)
	}
}
