package fetch_test

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

	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/storage"
)

// TestAmplification: with Options.Amplify, a miss fetches the following
// uncached chunks of the blob in the same request, never past Amplify,
// never a cached chunk again, and no byte twice.
func TestAmplification(t *testing.T) {
	boot, dir, _, data := fetchtest.AmplifyImage(t)
	be := fetchtest.NewRangeCounter(dir)
	e := open(t, boot, be, fetch.Options{Cache: fetchtest.NewMemCache(), Amplify: 4 * 0x10000})
	table, _ := e.rd.ChunkTable(context.Background())
	sort.Slice(table, func(i, j int) bool { return table[i].Index < table[j].Index })
	off := func(k int) int64 { return int64(table[k].CompressedOffset) }
	dataEnd := int64(table[7].CompressedOffset) + int64(table[7].CompressedSize)
	big := e.refs(t, "/big")
	read := func(k int) error {
		got, _, err := e.Chunk(context.Background(), big[k])
		if err == nil && !bytes.Equal(got[5:105], data[k*0x10000+5:][:100]) {
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
		if got := be.DataRanges(dataEnd); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("after reading chunk %d: data ranges %v, want %v", step.chunk, got, want)
		}
	}
	for k, n := range be.Counts() {
		if n != 1 {
			t.Errorf("range %s fetched %d times", k, n)
		}
	}
	if got := e.Metrics.AmplifiedChunks.Load(); got != 5 {
		t.Errorf("AmplifiedChunks %d, want 5", got)
	}
	if l := e.Log(); l != nil {
		t.Error("fetch log without LogSize")
	}
}

// TestAmplificationTampered: a tampered chunk inside an amplified span is
// neither served nor cached; its neighbours are, and reading it gives EIO.
func TestAmplificationTampered(t *testing.T) {
	boot, dir, blobID, data := fetchtest.AmplifyImage(t)
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
	cache := fetchtest.NewMemCache()
	e := open(t, boot, &storage.FileSource{Dir: dir}, fetch.Options{Cache: cache, Amplify: 8 * 0x10000})
	big := e.refs(t, "/big")
	if got, _, err := e.Chunk(context.Background(), big[0]); err != nil || !bytes.Equal(got, data[:0x10000]) {
		t.Fatalf("chunk 0: %v", err)
	}
	if cache.Has(context.Background(), blobID, 2) || !cache.Has(context.Background(), blobID, 3) {
		t.Fatal("the tampered chunk was cached, or its neighbour was not")
	}
	if e.Metrics.DigestFailures.Load() != 1 {
		t.Errorf("DigestFailures %d, want 1", e.Metrics.DigestFailures.Load())
	}
	if _, _, err := e.Chunk(context.Background(), big[2]); !errors.Is(err, fetch.ErrIO) {
		t.Fatalf("tampered chunk 2: %v, want EIO", err)
	}
	if got, _, err := e.Chunk(context.Background(), big[3]); err != nil || !bytes.Equal(got, data[3*0x10000:4*0x10000]) {
		t.Fatalf("chunk 3: %v", err)
	}
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
	boot, dir, _, data := fetchtest.AmplifyImage(t)
	g := &gatedBackend{FileSource: storage.FileSource{Dir: dir}, started: make(chan struct{}), release: make(chan struct{})}
	e := open(t, boot, g, fetch.Options{Cache: fetchtest.NewMemCache()})
	c0 := e.refs(t, "/big")[0]
	first, cancel := context.WithCancel(context.Background())
	firstErr := make(chan error, 1)
	go func() {
		_, _, err := e.Chunk(first, c0)
		firstErr <- err
	}()
	<-g.started
	second := make(chan error, 1)
	var got []byte
	go func() {
		var err error
		got, _, err = e.Chunk(context.Background(), c0)
		second <- err
	}()
	time.Sleep(20 * time.Millisecond) // let the second reader join
	cancel()
	if err := <-firstErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled reader: %v", err)
	}
	close(g.release)
	if err := <-second; err != nil || !bytes.Equal(got[:10], data[:10]) {
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
	res, dir := fetchtest.BuildImage(t, files, builder.Options{ChunkSize: 0x10000, BatchSize: 0x4000})
	if res.Stats.BatchedChunks != 30 {
		t.Fatalf("%d chunks batched, want 30", res.Stats.BatchedChunks)
	}
	be := fetchtest.NewStreamLog(dir)
	rd, _ := rafs.Open(context.Background(), bytes.NewReader(res.Bootstrap), int64(len(res.Bootstrap)))
	dataEnd := int64(rd.Blobs[0].CIOffset)
	e := open(t, res.Bootstrap, be, fetch.Options{Cache: fetchtest.NewMemCache(), Amplify: 1 << 20})
	if err := e.readFile(t, "/m00.py", want["/m00.py"]); err != nil {
		t.Fatal(err)
	}
	first := be.Requests(dataEnd)
	if len(first) != 1 || first[0].Off != 0 || first[0].N >= dataEnd {
		t.Fatalf("the first miss sent %v; want one request for the first batch only (data ends at %d)", first, dataEnd)
	}
	// The first batch's other files are cached now.
	if n := e.Metrics.AmplifiedChunks.Load(); n < 3 {
		t.Fatalf("%d chunks of the first batch came amplified", n)
	}
	for i := range 30 {
		p := fmt.Sprintf("/m%02d.py", i)
		if err := e.readFile(t, p, want[p]); err != nil {
			t.Fatal(err)
		}
	}
	reqs := be.Requests(dataEnd)
	seen := map[int64]bool{}
	for _, r := range reqs {
		if seen[r.Off] {
			t.Fatalf("batch at %d fetched twice: %v", r.Off, reqs)
		}
		seen[r.Off] = true
	}
	// 30 files of about 2.1 KB in 16 KiB batches: 4 or 5 batches.
	if len(reqs) < 4 || len(reqs) > 5 {
		t.Fatalf("%d requests for 30 small files in 16 KiB batches: %v", len(reqs), reqs)
	}
}
