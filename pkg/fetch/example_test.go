package fetch_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"log"
	"sync"

	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/storage"
)

// mapCache is a fetch.ChunkCache in memory (package blobcache keeps
// chunks on disk, as upstream nydusd does).
type mapCache struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (c *mapCache) Get(_ context.Context, blobID string, ci uint32, _ int64, _ int, verify func([]byte) error) ([]byte, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.m[fmt.Sprint(blobID, "/", ci)]
	if ok && verify != nil && verify(b) != nil {
		return nil, false, nil
	}
	return b, ok, nil
}

func (c *mapCache) Put(_ context.Context, blobID string, ci uint32, _ int64, data []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[fmt.Sprint(blobID, "/", ci)] = data
	return nil
}

// An engine reads a file's chunks: the first read of a chunk fetches it
// from the backend and verifies it, the next one finds it in the cache.
func ExampleNew() {
	ctx := context.Background()
	// An image of one file: a tar layer built into a bootstrap and a
	// blob.
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	content := []byte("hello, fetch\n")
	tw.WriteHeader(&tar.Header{Name: "hello.txt", Mode: 0o644, Size: int64(len(content))})
	tw.Write(content)
	tw.Close()
	var blob bytes.Buffer
	res, err := builder.Create(ctx, &layer, &blob, builder.Options{})
	if err != nil {
		log.Fatal(err)
	}
	rd, err := rafs.Open(ctx, bytes.NewReader(res.Bootstrap), int64(len(res.Bootstrap)))
	if err != nil {
		log.Fatal(err)
	}

	// The backend: storage.BytesSource serves one blob from memory;
	// storage.FileSource serves a directory of blobs, registry.Client a
	// registry.
	e, err := fetch.New(ctx, rd, storage.BytesSource(blob.Bytes()), fetch.Options{Cache: &mapCache{m: map[string][]byte{}}})
	if err != nil {
		log.Fatal(err)
	}
	defer e.Close()

	// A file's chunks are its chunk addresses in the bootstrap, looked up
	// in the engine's chunk table.
	ino, err := rd.Lookup(ctx, "/hello.txt")
	if err != nil {
		log.Fatal(err)
	}
	addrs, err := rd.ChunkAddrs(ctx, ino)
	if err != nil {
		log.Fatal(err)
	}
	for range 2 {
		for _, a := range addrs {
			info, _ := e.Info(a.BlobIndex, a.CIIndex)
			data, fetched, err := e.Chunk(ctx, fetch.Ref{Path: "/hello.txt", Info: info})
			if err != nil {
				log.Fatal(err) // wraps fetch.ErrIO
			}
			fmt.Printf("%q fetched=%v\n", data, fetched)
		}
	}
	fmt.Println("fetched:", e.Metrics.FetchedChunks.Load(), "cache hits:", e.Metrics.CacheHits.Load())
	// Output:
	// "hello, fetch\n" fetched=true
	// "hello, fetch\n" fetched=false
	// fetched: 1 cache hits: 1
}
