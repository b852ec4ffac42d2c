// Package fetchtest holds what the tests of the fetch engine (package
// fetch) and of the filesystem on it (package fs) share: an in-memory
// chunk cache, backends that record the requests they answer, and test
// images built into a directory that a storage.FileSource serves.
package fetchtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/blobcache"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/storage"
)

// MemCache is an in-memory fetch.ChunkCache that can tell which chunks
// it holds (Has). Like a cache on disk, it keeps copies: what it is given
// and what it returns share no memory with it.
type MemCache struct {
	mu sync.Mutex
	m  map[string][]byte // guarded by mu
}

// NewMemCache returns an empty cache.
func NewMemCache() *MemCache { return &MemCache{m: map[string][]byte{}} }

// Get implements fetch.ChunkCache.
func (c *MemCache) Get(_ context.Context, blobID string, ci uint32, _ int64, _ int, verify func([]byte) error) ([]byte, bool, error) {
	c.mu.Lock()
	b, ok := c.m[fmt.Sprint(blobID, ci)]
	c.mu.Unlock()
	if ok && verify != nil && verify(b) != nil {
		return nil, false, nil
	}
	return bytes.Clone(b), ok, nil
}

// Has reports whether a chunk is cached.
func (c *MemCache) Has(_ context.Context, blobID string, ci uint32) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.m[fmt.Sprint(blobID, ci)]
	return ok
}

// Put implements fetch.ChunkCache.
func (c *MemCache) Put(_ context.Context, blobID string, ci uint32, _ int64, data []byte) error {
	c.mu.Lock()
	c.m[fmt.Sprint(blobID, ci)] = bytes.Clone(data)
	c.mu.Unlock()
	return nil
}

// Tamper calls fn on the data of every cached chunk, which fn may change
// in place.
func (c *MemCache) Tamper(fn func(data []byte)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.m {
		fn(b)
	}
}

// RangeCounter counts the backend reads of each range, slowly enough for
// concurrent readers to overlap.
type RangeCounter struct {
	storage.FileSource
	mu     sync.Mutex
	counts map[string]int // "offset+length": reads; guarded by mu
}

// NewRangeCounter serves the blobs in dir.
func NewRangeCounter(dir string) *RangeCounter {
	return &RangeCounter{FileSource: storage.FileSource{Dir: dir}, counts: map[string]int{}}
}

// OpenRange counts a streamed range like a read one.
func (r *RangeCounter) OpenRange(ctx context.Context, blobID string, off, n int64) (io.ReadCloser, error) {
	r.mu.Lock()
	r.counts[fmt.Sprintf("%d+%d", off, n)]++
	r.mu.Unlock()
	return r.FileSource.OpenRange(ctx, blobID, off, n)
}

// ReadRange counts a range and reads it.
func (r *RangeCounter) ReadRange(ctx context.Context, blobID string, off, n int64) ([]byte, error) {
	r.mu.Lock()
	r.counts[fmt.Sprintf("%d+%d", off, n)]++
	r.mu.Unlock()
	time.Sleep(2 * time.Millisecond)
	return r.FileSource.ReadRange(ctx, blobID, off, n)
}

// Counts returns how many times each range ("offset+length") was read.
func (r *RangeCounter) Counts() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.counts))
	for k, n := range r.counts {
		out[k] = n
	}
	return out
}

// DataRanges returns the ranges read below below (the chunk data, not
// the chunk-info table at the blob's end), sorted.
func (r *RangeCounter) DataRanges(below int64) []string {
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

// Request is one backend request as a StreamLog saw it.
type Request struct {
	Stream bool // OpenRange or ReadRanges (else ReadRange)
	Kind   string
	Off, N int64
	Ranges int // ReadRanges: how many
}

func (r Request) String() string {
	op := "read"
	if r.Stream {
		op = "stream"
	}
	return fmt.Sprintf("%s %s %d+%d", op, r.Kind, r.Off, r.N)
}

// StreamLog is a blob backend that logs every request in the order it
// was sent, and can hold a stream's body until a gate opens.
type StreamLog struct {
	src storage.FileSource
	mu  sync.Mutex
	log []Request // guarded by mu
	// Gate, if set (before the first request), returns a channel a
	// request's body waits for (nil: none), with its index in the log.
	Gate func(i int, r Request) chan struct{}
	// sent is signalled after each request is logged.
	sent chan struct{}
}

// NewStreamLog serves the blobs in dir.
func NewStreamLog(dir string) *StreamLog {
	return &StreamLog{src: storage.FileSource{Dir: dir}, sent: make(chan struct{}, 1024)}
}

func (s *StreamLog) add(r Request) (chan struct{}, int) {
	s.mu.Lock()
	i := len(s.log)
	s.log = append(s.log, r)
	var g chan struct{}
	if s.Gate != nil {
		g = s.Gate(i, r)
	}
	s.mu.Unlock()
	s.sent <- struct{}{}
	return g, i
}

// ReadRange logs a request and reads it once its gate opens.
func (s *StreamLog) ReadRange(ctx context.Context, blobID string, off, n int64) ([]byte, error) {
	if g, _ := s.add(Request{Kind: fetch.KindOf(ctx), Off: off, N: n}); g != nil {
		select {
		case <-g:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.src.ReadRange(ctx, blobID, off, n)
}

// ReadRanges logs one request for all the ranges, as a multi-range GET.
func (s *StreamLog) ReadRanges(ctx context.Context, blobID string, ranges [][2]int64, fn func(i int, r io.Reader) error) error {
	last := ranges[len(ranges)-1]
	g, _ := s.add(Request{Stream: true, Kind: fetch.KindOf(ctx), Off: ranges[0][0], N: last[0] + last[1] - ranges[0][0], Ranges: len(ranges)})
	for i, r := range ranges {
		rc, err := s.src.OpenRange(ctx, blobID, r[0], r[1])
		if err != nil {
			return err
		}
		var rd io.Reader = rc
		if g != nil && i == 0 {
			rd = &gatedReader{rc: rc, gate: g, ctx: ctx}
		}
		err = fn(i, rd)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// OpenRange logs a streamed request; its body past the first 4 KiB
// waits for its gate.
func (s *StreamLog) OpenRange(ctx context.Context, blobID string, off, n int64) (io.ReadCloser, error) {
	g, _ := s.add(Request{Stream: true, Kind: fetch.KindOf(ctx), Off: off, N: n})
	rc, err := s.src.OpenRange(ctx, blobID, off, n)
	if err != nil || g == nil {
		return rc, err
	}
	return &gatedReader{rc: rc, gate: g, ctx: ctx}, nil
}

// Requests returns the logged data requests (below the chunk-info table
// at dataEnd).
func (s *StreamLog) Requests(dataEnd int64) []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Request
	for _, r := range s.log {
		if r.Off < dataEnd {
			out = append(out, r)
		}
	}
	return out
}

// WaitFor waits until a logged request satisfies ok.
func (s *StreamLog) WaitFor(t testing.TB, what string, ok func(Request) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		found := slices.ContainsFunc(s.log, ok)
		s.mu.Unlock()
		if found {
			return
		}
		select {
		case <-s.sent:
		case <-deadline:
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("timed out waiting for %s; requests: %v", what, s.log)
		}
	}
}

// gatedReader yields its first 4 KiB, then waits for gate.
type gatedReader struct {
	rc   io.ReadCloser
	gate chan struct{}
	ctx  context.Context
	read int
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if g.read >= 4096 {
		select {
		case <-g.gate:
		case <-g.ctx.Done():
			return 0, g.ctx.Err()
		}
	} else if len(p) > 4096-g.read {
		p = p[:4096-g.read]
	}
	n, err := g.rc.Read(p)
	g.read += n
	return n, err
}

func (g *gatedReader) Close() error { return g.rc.Close() }

// BuildImage builds files into a bootstrap and a blob, written as
// <dir>/<blob id> for a storage.FileSource.
func BuildImage(t testing.TB, files []treetest.File, o builder.Options) (*builder.Result, string) {
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

// AmplifyImage builds one file, /big, of 8 incompressible 64 KiB chunks.
func AmplifyImage(t testing.TB) (boot []byte, dir, blobID string, data []byte) {
	t.Helper()
	data = treetest.Random(77, 8*0x10000)
	res, dir := BuildImage(t, []treetest.File{treetest.Reg("big", 0o644, data)}, builder.Options{ChunkSize: 0x10000})
	return res.Bootstrap, dir, res.BlobID, data
}

// HotImage is an image whose prefetch list names some libraries and
// small files: built with the hot-set layout, they are the first bytes
// of the blob.
type HotImage struct {
	Boot    []byte
	Dir     string // holds the blob, for a storage.FileSource
	Blob    []byte
	Data    map[string][]byte // every file's content, by path
	Hot     []string          // the prefetch list
	DataEnd int64             // where the chunk data ends (the chunk-info table starts)
}

// BuildHotImage builds a HotImage, with batches of batch bytes (0: none).
func BuildHotImage(t testing.TB, batch uint32) *HotImage {
	t.Helper()
	im := &HotImage{Data: map[string][]byte{}}
	var files []treetest.File
	add := func(name string, d []byte) {
		files = append(files, treetest.Reg(name, 0o644, d))
		im.Data["/"+name] = d
	}
	for i := range 8 {
		add(fmt.Sprintf("lib/lib%d.so", i), treetest.Random(int64(100+i), 150_000)) // 3 chunks of 64 KiB
	}
	for i := range 20 {
		add(fmt.Sprintf("py/mod%02d.py", i), bytes.Repeat([]byte(fmt.Sprintf("def f%d(): pass\n", i)), 100+i*7))
	}
	add("cold/big", treetest.Random(9, 400_000))
	im.Hot = []string{"/lib/lib5.so", "/py/mod03.py", "/lib/lib1.so", "/py/mod17.py", "/py/mod04.py", "/lib/lib6.so"}
	var blob bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(treetest.Tar(files)), &blob,
		builder.Options{ChunkSize: 0x10000, BatchSize: batch, Prefetch: im.Hot})
	if err != nil {
		t.Fatal(err)
	}
	im.Dir = t.TempDir()
	im.Blob = blob.Bytes()
	if err := os.WriteFile(filepath.Join(im.Dir, res.BlobID), im.Blob, 0o644); err != nil {
		t.Fatal(err)
	}
	im.Boot = res.Bootstrap
	rd, err := rafs.Open(context.Background(), bytes.NewReader(im.Boot), int64(len(im.Boot)))
	if err != nil {
		t.Fatal(err)
	}
	im.DataEnd = int64(rd.Blobs[0].CIOffset)
	return im
}

// NewCopies returns the store of whole-file copies of a blob cache in a
// temporary directory, closed when the test ends.
func NewCopies(t testing.TB) *blobcache.Files {
	t.Helper()
	c, err := blobcache.Open(context.Background(), blobcache.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.Files()
}
