package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/storage"
)

// request is one backend request as streamLog saw it.
type request struct {
	stream bool // OpenRange or ReadRanges (else ReadRange)
	kind   string
	off, n int64
	ranges int // ReadRanges: how many
}

func (r request) String() string {
	op := "read"
	if r.stream {
		op = "stream"
	}
	return fmt.Sprintf("%s %s %d+%d", op, r.kind, r.off, r.n)
}

// streamLog is a blob backend that logs every request in the order it
// was sent, and can hold a stream's body until a gate opens.
type streamLog struct {
	src storage.FileSource
	mu  sync.Mutex
	log []request
	// gate, if set, returns a channel a request's body waits for (nil:
	// none), with its index in the log.
	gate func(i int, r request) chan struct{}
	// sent is signalled after each request is logged.
	sent chan struct{}
}

func newStreamLog(dir string) *streamLog {
	return &streamLog{src: storage.FileSource{Dir: dir}, sent: make(chan struct{}, 1024)}
}

func (s *streamLog) add(r request) (chan struct{}, int) {
	s.mu.Lock()
	i := len(s.log)
	s.log = append(s.log, r)
	var g chan struct{}
	if s.gate != nil {
		g = s.gate(i, r)
	}
	s.mu.Unlock()
	s.sent <- struct{}{}
	return g, i
}

func (s *streamLog) ReadRange(ctx context.Context, blobID string, off, n int64) ([]byte, error) {
	if g, _ := s.add(request{kind: fetchKind(ctx), off: off, n: n}); g != nil {
		select {
		case <-g:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.src.ReadRange(ctx, blobID, off, n)
}

// ReadRanges logs one request for all the ranges, as a multi-range GET.
func (s *streamLog) ReadRanges(ctx context.Context, blobID string, ranges [][2]int64, fn func(i int, r io.Reader) error) error {
	last := ranges[len(ranges)-1]
	g, _ := s.add(request{stream: true, kind: fetchKind(ctx), off: ranges[0][0], n: last[0] + last[1] - ranges[0][0], ranges: len(ranges)})
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

func (s *streamLog) OpenRange(ctx context.Context, blobID string, off, n int64) (io.ReadCloser, error) {
	g, _ := s.add(request{stream: true, kind: fetchKind(ctx), off: off, n: n})
	rc, err := s.src.OpenRange(ctx, blobID, off, n)
	if err != nil || g == nil {
		return rc, err
	}
	return &gatedReader{rc: rc, gate: g, ctx: ctx}, nil
}

// requests returns the logged data requests (below the chunk-info table
// at dataEnd).
func (s *streamLog) requests(dataEnd int64) []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []request
	for _, r := range s.log {
		if r.off < dataEnd {
			out = append(out, r)
		}
	}
	return out
}

// waitFor waits until a logged request satisfies ok.
func (s *streamLog) waitFor(t *testing.T, what string, ok func(request) bool) {
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

// hotImage is an image whose prefetch list names some libraries and
// small files: built with the hot-set layout, they are the first bytes
// of the blob.
type hotImage struct {
	boot    []byte
	dir     string
	blob    []byte
	data    map[string][]byte
	hot     []string
	dataEnd int64
}

func buildHotImage(t *testing.T, batch uint32) *hotImage {
	t.Helper()
	im := &hotImage{data: map[string][]byte{}}
	var files []treetest.File
	add := func(name string, d []byte) {
		files = append(files, treetest.Reg(name, 0o644, d))
		im.data["/"+name] = d
	}
	for i := range 8 {
		add(fmt.Sprintf("lib/lib%d.so", i), treetest.Random(int64(100+i), 150_000)) // 3 chunks of 64 KiB
	}
	for i := range 20 {
		add(fmt.Sprintf("py/mod%02d.py", i), bytes.Repeat([]byte(fmt.Sprintf("def f%d(): pass\n", i)), 100+i*7))
	}
	add("cold/big", treetest.Random(9, 400_000))
	im.hot = []string{"/lib/lib5.so", "/py/mod03.py", "/lib/lib1.so", "/py/mod17.py", "/py/mod04.py", "/lib/lib6.so"}
	var blob bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(treetest.Tar(files)), &blob,
		builder.Options{ChunkSize: 0x10000, BatchSize: batch, Prefetch: im.hot})
	if err != nil {
		t.Fatal(err)
	}
	im.dir = t.TempDir()
	im.blob = blob.Bytes()
	if err := os.WriteFile(filepath.Join(im.dir, res.BlobID), im.blob, 0o644); err != nil {
		t.Fatal(err)
	}
	im.boot = res.Bootstrap
	rd, err := rafs.Open(context.Background(), bytes.NewReader(im.boot), int64(len(im.boot)))
	if err != nil {
		t.Fatal(err)
	}
	im.dataEnd = int64(rd.Blobs[0].CIOffset)
	return im
}

// readFile reads a whole file through f and compares it.
func readFile(t *testing.T, f *FS, p string, want []byte) error {
	t.Helper()
	ino, err := f.lookupPath(context.Background(), p)
	if err != nil {
		return err
	}
	buf := make([]byte, len(want)+10)
	n, err := f.Read(context.Background(), ino.Nid, buf, 0)
	if err != nil {
		return err
	}
	if !bytes.Equal(buf[:n], want) {
		return fmt.Errorf("%s: wrong bytes", p)
	}
	return nil
}

// TestHotSetStream: the hot set streams from the blob's start in a few
// growing segments (the first one small), every hot file is then served
// from the cache without another request, and nothing else is fetched.
func TestHotSetStream(t *testing.T) {
	for _, batch := range []uint32{0, 0x4000} {
		t.Run(fmt.Sprintf("batch-%#x", batch), func(t *testing.T) {
			im := buildHotImage(t, batch)
			be := newStreamLog(im.dir)
			f, err := Open(context.Background(), im.boot, be, Options{Cache: &memCache{m: map[string][]byte{}}, FetchLogSize: 100})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.Prefetch(context.Background(), PrefetchOptions{Paths: f.PrefetchTablePaths(context.Background())})
			reqs := be.requests(im.dataEnd)
			if len(reqs) == 0 || len(reqs) > 3 {
				t.Fatalf("hot set took %d requests, want 1 to 3: %v", len(reqs), reqs)
			}
			// Two segments are in flight at once: they may be sent in
			// either order.
			slices.SortFunc(reqs, func(a, b request) int { return int(a.off - b.off) })
			var end int64
			for i, r := range reqs {
				if !r.stream || r.kind != FetchHotSet || r.off != end {
					t.Fatalf("request %d is %v; want hot-set streams back to back from offset 0: %v", i, r, reqs)
				}
				end = r.off + r.n
			}
			if reqs[0].n > hotFirstSegment {
				t.Errorf("first segment %d bytes, want at most %d", reqs[0].n, hotFirstSegment)
			}
			for _, p := range im.hot {
				if err := readFile(t, f, p, im.data[p]); err != nil {
					t.Fatal(err)
				}
			}
			if got := be.requests(im.dataEnd); len(got) != len(reqs) {
				t.Fatalf("reading the hot files sent %d more requests: %v", len(got)-len(reqs), got[len(reqs):])
			}
			if err := readFile(t, f, "/cold/big", im.data["/cold/big"]); err != nil {
				t.Fatal(err)
			}
			if got := be.requests(im.dataEnd); len(got) == len(reqs) {
				t.Fatal("a cold file was served without a request: the hot set streamed more than the hot files")
			}
			// The fetch log has an entry per file a stream served, and
			// the bytes the backend sent.
			hotFiles := map[string]bool{}
			var logged int64
			for _, fe := range f.FetchLog().Fetches {
				if fe.Kind == FetchHotSet {
					hotFiles[fe.Path] = true
				}
				logged += fe.Bytes
			}
			// (Small files sharing a batch are logged under the first.)
			for _, p := range im.hot {
				if !hotFiles[p] && (batch == 0 || strings.HasPrefix(p, "/lib/")) {
					t.Errorf("the fetch log has no hot-set entry for %s: %v", p, hotFiles)
				}
			}
			for p := range hotFiles {
				if !slices.Contains(im.hot, p) {
					t.Errorf("hot-set entry for %s, which is not hot", p)
				}
			}
			if logged != f.Metrics.FetchedBytes.Load() {
				t.Errorf("%d bytes logged, %d sent", logged, f.Metrics.FetchedBytes.Load())
			}
		})
	}
}

// TestStreamJoin: a demand read of a chunk that a running hot-set segment
// holds waits for it and sends no request of its own, even while the
// segment's body is held back.
func TestStreamJoin(t *testing.T) {
	im := buildHotImage(t, 0)
	be := newStreamLog(im.dir)
	gate := make(chan struct{})
	be.gate = func(i int, r request) chan struct{} {
		if r.stream {
			return gate
		}
		return nil
	}
	f, err := Open(context.Background(), im.boot, be, Options{Cache: &memCache{m: map[string][]byte{}}, Amplify: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Prefetch(context.Background(), PrefetchOptions{Paths: im.hot})
	}()
	be.waitFor(t, "the first hot-set stream", func(r request) bool { return r.stream })
	// /lib/lib5.so is the first hot file: its chunks are in the first
	// segment, held after its first 4 KiB.
	read := make(chan error, 1)
	go func() { read <- readFile(t, f, "/lib/lib5.so", im.data["/lib/lib5.so"]) }()
	select {
	case err := <-read:
		t.Fatalf("the read finished while the segment holding its chunks was held back: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	before := be.requests(im.dataEnd)
	close(gate)
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	<-done
	for _, r := range before {
		if !r.stream {
			t.Fatalf("the demand read sent its own request while a segment held its chunks: %v", before)
		}
	}
	for _, r := range be.requests(im.dataEnd) {
		if r.kind == FetchDemand {
			t.Fatalf("a demand request was sent for a streamed chunk: %v", be.requests(im.dataEnd))
		}
	}
}

// TestPrefetchAllPriority: prefetch_all streams the image in requests of
// at most MergeSize; a demand read issued while one of them is in flight
// is sent at once, before the queued ones.
func TestPrefetchAllPriority(t *testing.T) {
	im := buildHotImage(t, 0x4000)
	be := newStreamLog(im.dir)
	gate := make(chan struct{})
	be.gate = func(i int, r request) chan struct{} {
		if r.stream && r.kind == FetchPrefetch && i < 3 {
			return gate
		}
		return nil
	}
	f, err := Open(context.Background(), im.boot, be, Options{Cache: &memCache{m: map[string][]byte{}}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const merge = 128 << 10
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Prefetch(context.Background(), PrefetchOptions{All: true, Workers: 1, MergeSize: merge})
	}()
	be.waitFor(t, "the first prefetch stream", func(r request) bool { return r.stream && r.kind == FetchPrefetch })
	go func() {
		// Walked last: in a queued prefetch range.
		if err := readFile(t, f, "/py/mod19.py", im.data["/py/mod19.py"]); err != nil {
			t.Error(err)
		}
	}()
	be.waitFor(t, "the demand read", func(r request) bool { return r.kind == FetchDemand })
	close(gate)
	<-done
	reqs := be.requests(im.dataEnd)
	streams := 0
	for i, r := range reqs {
		switch {
		case r.kind == FetchDemand && streams != 1:
			t.Fatalf("the demand request is request %d, after %d prefetch streams; want it right after the first: %v", i, streams, reqs)
		case r.kind == FetchPrefetch:
			streams++
			if r.n > merge {
				t.Errorf("prefetch request %v is larger than merging_size %d", r, merge)
			}
		}
	}
	if streams < 3 {
		t.Fatalf("prefetch_all made %d requests: %v", streams, reqs)
	}
	for p, d := range im.data {
		if err := readFile(t, f, p, d); err != nil {
			t.Fatal(err)
		}
	}
	if got := be.requests(im.dataEnd); len(got) != len(reqs) {
		t.Fatalf("reading every file after prefetch_all sent %d requests: %v", len(got)-len(reqs), got[len(reqs):])
	}
}

// TestStreamTampered: a chunk whose stored bytes were changed is dropped
// by the stream (counted, nothing cached); a read of it then fails with
// EIO, and the chunks around it are served.
func TestStreamTampered(t *testing.T) {
	for _, batch := range []uint32{0, 0x4000} {
		t.Run(fmt.Sprintf("batch-%#x", batch), func(t *testing.T) {
			im := buildHotImage(t, batch)
			// Flip a byte in the middle of the first hot file's second
			// chunk's stored data (the blob starts with the hot set).
			rd, _ := rafs.Open(context.Background(), bytes.NewReader(im.boot), int64(len(im.boot)))
			table, _ := rd.ChunkTable(context.Background())
			var victim rafs.ChunkInfo
			for _, c := range table {
				if c.Flags&rafs.ChunkBatch == 0 && c.CompressedOffset > 0 && (victim.CompressedSize == 0 || c.CompressedOffset < victim.CompressedOffset) {
					victim = c
				}
			}
			blobPath := filepath.Join(im.dir, rd.Blobs[0].BlobID)
			b, _ := os.ReadFile(blobPath)
			b[victim.CompressedOffset+uint64(victim.CompressedSize)/2] ^= 0xff
			os.WriteFile(blobPath, b, 0o644)
			be := newStreamLog(im.dir)
			cache := &memCache{m: map[string][]byte{}}
			f, err := Open(context.Background(), im.boot, be, Options{Cache: cache})
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.Prefetch(context.Background(), PrefetchOptions{Paths: im.hot})
			if f.Metrics.DigestFailures.Load() == 0 {
				t.Fatal("the stream did not notice the tampered chunk")
			}
			if cache.Has(context.Background(), rd.Blobs[0].BlobID, victim.Index) {
				t.Fatal("the tampered chunk was cached")
			}
			// The first hot file holds the victim.
			if err := readFile(t, f, im.hot[0], im.data[im.hot[0]]); !errors.Is(err, ErrIO) {
				t.Fatalf("reading the tampered file: %v, want EIO", err)
			}
			for _, p := range im.hot[1:] {
				if err := readFile(t, f, p, im.data[p]); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestPrefetchRootIsPrefetchAll: a prefetch table naming the root is not
// streamed as a hot set (which goes before read-ahead) but as
// prefetch_all, behind every other request.
func TestPrefetchRootIsPrefetchAll(t *testing.T) {
	im := buildHotImage(t, 0)
	be := newStreamLog(im.dir)
	f, err := Open(context.Background(), im.boot, be, Options{Cache: &memCache{m: map[string][]byte{}}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Prefetch(context.Background(), PrefetchOptions{Paths: []string{"/"}})
	reqs := be.requests(im.dataEnd)
	var total int64
	for _, r := range reqs {
		if r.kind != FetchPrefetch {
			t.Fatalf("request %v: want only prefetch_all streams: %v", r, reqs)
		}
		total += r.n
	}
	if total < im.dataEnd*9/10 {
		t.Fatalf("prefetch of / fetched %d of %d bytes", total, im.dataEnd)
	}
}

// TestScatteredHotSetOneRequest: hot files scattered over the blob (an
// image built without the hot-set layout, or by upstream's tools) come
// in one multi-range request where the backend takes them, not one
// request per file, and read back right.
func TestScatteredHotSetOneRequest(t *testing.T) {
	var files []treetest.File
	want := map[string][]byte{}
	for i := range 24 {
		name := fmt.Sprintf("lib/lib%02d.so", i)
		want["/"+name] = treetest.Random(int64(200+i), 100_000)
		files = append(files, treetest.Reg(name, 0o644, want["/"+name]))
	}
	res, dir := buildImage(t, files, builder.Options{ChunkSize: 0x10000})
	rd, _ := rafs.Open(context.Background(), bytes.NewReader(res.Bootstrap), int64(len(res.Bootstrap)))
	dataEnd := int64(rd.Blobs[0].CIOffset)
	be := newStreamLog(dir)
	f, err := Open(context.Background(), res.Bootstrap, be, Options{Cache: &memCache{m: map[string][]byte{}}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Every sixth file: 100 KB each, 500 KB apart.
	hot := []string{"/lib/lib00.so", "/lib/lib06.so", "/lib/lib12.so", "/lib/lib18.so"}
	f.Prefetch(context.Background(), PrefetchOptions{Paths: hot})
	reqs := be.requests(dataEnd)
	if len(reqs) != 2 || reqs[0].ranges < 2 || reqs[1].ranges < 1 {
		t.Fatalf("4 scattered hot files took %v; want 2 multi-range requests (the first segment small)", reqs)
	}
	for _, p := range hot {
		if err := readFile(t, f, p, want[p]); err != nil {
			t.Fatal(err)
		}
	}
	if got := be.requests(dataEnd); len(got) != len(reqs) {
		t.Fatalf("reading the hot files sent more requests: %v", got[len(reqs):])
	}
}
