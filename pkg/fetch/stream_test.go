package fetch_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// TestHotSetStream: the hot set streams from the blob's start in a few
// growing segments (the first one small), every hot file is then served
// from the cache without another request, and nothing else is fetched.
func TestHotSetStream(t *testing.T) {
	for _, batch := range []uint32{0, 0x4000} {
		t.Run(fmt.Sprintf("batch-%#x", batch), func(t *testing.T) {
			im := fetchtest.BuildHotImage(t, batch)
			be := fetchtest.NewStreamLog(im.Dir)
			e := open(t, im.Boot, be, fetch.Options{Cache: fetchtest.NewMemCache(), LogSize: 100})
			e.Stream(context.Background(), e.hotRefs(t, im.Hot), hotSet)
			reqs := be.Requests(im.DataEnd)
			if len(reqs) == 0 || len(reqs) > 3 {
				t.Fatalf("hot set took %d requests, want 1 to 3: %v", len(reqs), reqs)
			}
			// Two segments are in flight at once: they may be sent in
			// either order.
			slices.SortFunc(reqs, func(a, b fetchtest.Request) int { return int(a.Off - b.Off) })
			var end int64
			for i, r := range reqs {
				if !r.Stream || r.Kind != fetch.HotSet || r.Off != end {
					t.Fatalf("request %d is %v; want hot-set streams back to back from offset 0: %v", i, r, reqs)
				}
				end = r.Off + r.N
			}
			if reqs[0].N > fetch.HotFirstSegment {
				t.Errorf("first segment %d bytes, want at most %d", reqs[0].N, fetch.HotFirstSegment)
			}
			for _, p := range im.Hot {
				if err := e.readFile(t, p, im.Data[p]); err != nil {
					t.Fatal(err)
				}
			}
			if got := be.Requests(im.DataEnd); len(got) != len(reqs) {
				t.Fatalf("reading the hot files sent %d more requests: %v", len(got)-len(reqs), got[len(reqs):])
			}
			if err := e.readFile(t, "/cold/big", im.Data["/cold/big"]); err != nil {
				t.Fatal(err)
			}
			if got := be.Requests(im.DataEnd); len(got) == len(reqs) {
				t.Fatal("a cold file was served without a request: the hot set streamed more than the hot files")
			}
			// The fetch log has an entry per file a stream served, and
			// the bytes the backend sent.
			hotFiles := map[string]bool{}
			var logged int64
			for _, fe := range e.Log().Fetches {
				if fe.Kind == fetch.HotSet {
					hotFiles[fe.Path] = true
				}
				logged += fe.Bytes
			}
			// (Small files sharing a batch are logged under the first.)
			for _, p := range im.Hot {
				if !hotFiles[p] && (batch == 0 || strings.HasPrefix(p, "/lib/")) {
					t.Errorf("the fetch log has no hot-set entry for %s: %v", p, hotFiles)
				}
			}
			for p := range hotFiles {
				if !slices.Contains(im.Hot, p) {
					t.Errorf("hot-set entry for %s, which is not hot", p)
				}
			}
			if logged != e.Metrics.FetchedBytes.Load() {
				t.Errorf("%d bytes logged, %d sent", logged, e.Metrics.FetchedBytes.Load())
			}
		})
	}
}

// TestStreamJoin: a demand read of a chunk that a running hot-set segment
// holds waits for it and sends no request of its own, even while the
// segment's body is held back.
func TestStreamJoin(t *testing.T) {
	im := fetchtest.BuildHotImage(t, 0)
	be := fetchtest.NewStreamLog(im.Dir)
	gate := make(chan struct{})
	be.Gate = func(i int, r fetchtest.Request) chan struct{} {
		if r.Stream {
			return gate
		}
		return nil
	}
	e := open(t, im.Boot, be, fetch.Options{Cache: fetchtest.NewMemCache(), Amplify: 1 << 20})
	hot := e.hotRefs(t, im.Hot)
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Stream(context.Background(), hot, hotSet)
	}()
	be.WaitFor(t, "the first hot-set stream", func(r fetchtest.Request) bool { return r.Stream })
	// /lib/lib5.so is the first hot file: its chunks are in the first
	// segment, held after its first 4 KiB.
	read := make(chan error, 1)
	go func() { read <- e.readFile(t, "/lib/lib5.so", im.Data["/lib/lib5.so"]) }()
	select {
	case err := <-read:
		t.Fatalf("the read finished while the segment holding its chunks was held back: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	before := be.Requests(im.DataEnd)
	close(gate)
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	<-done
	for _, r := range before {
		if !r.Stream {
			t.Fatalf("the demand read sent its own request while a segment held its chunks: %v", before)
		}
	}
	for _, r := range be.Requests(im.DataEnd) {
		if r.Kind == fetch.Demand {
			t.Fatalf("a demand request was sent for a streamed chunk: %v", be.Requests(im.DataEnd))
		}
	}
}

// TestPrefetchAllPriority: prefetch_all streams the image in requests of
// at most MergeSize; a demand read issued while one of them is in flight
// is sent at once, before the queued ones.
func TestPrefetchAllPriority(t *testing.T) {
	im := fetchtest.BuildHotImage(t, 0x4000)
	be := fetchtest.NewStreamLog(im.Dir)
	gate := make(chan struct{})
	be.Gate = func(i int, r fetchtest.Request) chan struct{} {
		if r.Stream && r.Kind == fetch.Prefetch && i < 3 {
			return gate
		}
		return nil
	}
	e := open(t, im.Boot, be, fetch.Options{Cache: fetchtest.NewMemCache()})
	const merge = 128 << 10
	all := e.allRefs(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.Stream(context.Background(), all, fetch.StreamOptions{Kind: fetch.Prefetch, Max: merge, Workers: 1})
	}()
	be.WaitFor(t, "the first prefetch stream", func(r fetchtest.Request) bool { return r.Stream && r.Kind == fetch.Prefetch })
	go func() {
		// Walked last: in a queued prefetch range.
		if err := e.readFile(t, "/py/mod19.py", im.Data["/py/mod19.py"]); err != nil {
			t.Error(err)
		}
	}()
	be.WaitFor(t, "the demand read", func(r fetchtest.Request) bool { return r.Kind == fetch.Demand })
	close(gate)
	<-done
	reqs := be.Requests(im.DataEnd)
	streams := 0
	for i, r := range reqs {
		switch {
		case r.Kind == fetch.Demand && streams != 1:
			t.Fatalf("the demand request is request %d, after %d prefetch streams; want it right after the first: %v", i, streams, reqs)
		case r.Kind == fetch.Prefetch:
			streams++
			if r.N > merge {
				t.Errorf("prefetch request %v is larger than merging_size %d", r, merge)
			}
		}
	}
	if streams < 3 {
		t.Fatalf("prefetch_all made %d requests: %v", streams, reqs)
	}
	for p, d := range im.Data {
		if err := e.readFile(t, p, d); err != nil {
			t.Fatal(err)
		}
	}
	if got := be.Requests(im.DataEnd); len(got) != len(reqs) {
		t.Fatalf("reading every file after prefetch_all sent %d requests: %v", len(got)-len(reqs), got[len(reqs):])
	}
}

// TestStreamTampered: a chunk whose stored bytes were changed is dropped
// by the stream (counted, nothing cached); a read of it then fails with
// EIO, and the chunks around it are served.
func TestStreamTampered(t *testing.T) {
	for _, batch := range []uint32{0, 0x4000} {
		t.Run(fmt.Sprintf("batch-%#x", batch), func(t *testing.T) {
			im := fetchtest.BuildHotImage(t, batch)
			// Flip a byte in the middle of the first hot file's second
			// chunk's stored data (the blob starts with the hot set).
			rd, _ := rafs.Open(context.Background(), bytes.NewReader(im.Boot), int64(len(im.Boot)))
			table, _ := rd.ChunkTable(context.Background())
			var victim rafs.ChunkInfo
			for _, c := range table {
				if c.Flags&rafs.ChunkBatch == 0 && c.CompressedOffset > 0 && (victim.CompressedSize == 0 || c.CompressedOffset < victim.CompressedOffset) {
					victim = c
				}
			}
			blobPath := filepath.Join(im.Dir, rd.Blobs[0].BlobID)
			b, _ := os.ReadFile(blobPath)
			b[victim.CompressedOffset+uint64(victim.CompressedSize)/2] ^= 0xff
			os.WriteFile(blobPath, b, 0o644)
			be := fetchtest.NewStreamLog(im.Dir)
			cache := fetchtest.NewMemCache()
			e := open(t, im.Boot, be, fetch.Options{Cache: cache})
			e.Stream(context.Background(), e.hotRefs(t, im.Hot), hotSet)
			if e.Metrics.DigestFailures.Load() == 0 {
				t.Fatal("the stream did not notice the tampered chunk")
			}
			if cache.Has(context.Background(), rd.Blobs[0].BlobID, victim.Index) {
				t.Fatal("the tampered chunk was cached")
			}
			// The first hot file holds the victim.
			if err := e.readFile(t, im.Hot[0], im.Data[im.Hot[0]]); !errors.Is(err, fetch.ErrIO) {
				t.Fatalf("reading the tampered file: %v, want EIO", err)
			}
			for _, p := range im.Hot[1:] {
				if err := e.readFile(t, p, im.Data[p]); err != nil {
					t.Fatal(err)
				}
			}
		})
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
	res, dir := fetchtest.BuildImage(t, files, builder.Options{ChunkSize: 0x10000})
	rd, _ := rafs.Open(context.Background(), bytes.NewReader(res.Bootstrap), int64(len(res.Bootstrap)))
	dataEnd := int64(rd.Blobs[0].CIOffset)
	be := fetchtest.NewStreamLog(dir)
	e := open(t, res.Bootstrap, be, fetch.Options{Cache: fetchtest.NewMemCache()})
	// Every sixth file: 100 KB each, 500 KB apart.
	hot := []string{"/lib/lib00.so", "/lib/lib06.so", "/lib/lib12.so", "/lib/lib18.so"}
	e.Stream(context.Background(), e.hotRefs(t, hot), hotSet)
	reqs := be.Requests(dataEnd)
	if len(reqs) != 2 || reqs[0].Ranges < 2 || reqs[1].Ranges < 1 {
		t.Fatalf("4 scattered hot files took %v; want 2 multi-range requests (the first segment small)", reqs)
	}
	for _, p := range hot {
		if err := e.readFile(t, p, want[p]); err != nil {
			t.Fatal(err)
		}
	}
	if got := be.Requests(dataEnd); len(got) != len(reqs) {
		t.Fatalf("reading the hot files sent more requests: %v", got[len(reqs):])
	}
}
