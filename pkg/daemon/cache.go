package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nydus-go/nydus/pkg/blobcache"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// chunkCache adapts a blobcache.Cache to one image's fetch.ChunkCache,
// keeping a handle per blob for the image's lifetime.
type chunkCache struct {
	c     *blobcache.Cache
	n     map[string]int // chunk count per blob id
	mu    sync.Mutex
	blobs map[string]*blobcache.BlobCache
}

func newChunkCache(c *blobcache.Cache, rd *rafs.Reader) *chunkCache {
	n := make(map[string]int, len(rd.Blobs))
	for _, bi := range rd.Blobs {
		n[bi.BlobID] = int(bi.ChunkCount)
	}
	return &chunkCache{c: c, n: n, blobs: map[string]*blobcache.BlobCache{}}
}

func (cc *chunkCache) blob(ctx context.Context, id string) (*blobcache.BlobCache, error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if b, ok := cc.blobs[id]; ok {
		return b, nil
	}
	n := cc.n[id]
	if n == 0 {
		return nil, fmt.Errorf("blob %s has no chunks", id)
	}
	b, err := cc.c.Blob(ctx, id, n, nil)
	if err != nil {
		return nil, err
	}
	cc.blobs[id] = b
	return b, nil
}

// Get implements fetch.ChunkCache.
func (cc *chunkCache) Get(ctx context.Context, id string, ci uint32, off int64, size int, verify func([]byte) error) ([]byte, bool, error) {
	b, err := cc.blob(ctx, id)
	if err != nil {
		return nil, false, err
	}
	if !b.Has(ci) {
		return nil, false, nil
	}
	data, err := b.ReadChunk(ctx, ci, off, size, verify)
	if errors.Is(err, blobcache.ErrCorrupt) || errors.Is(err, blobcache.ErrNotCached) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return data, true, nil
}

// Has reports whether a chunk is cached (used to skip read-ahead).
func (cc *chunkCache) Has(ctx context.Context, id string, ci uint32) bool {
	b, err := cc.blob(ctx, id)
	return err == nil && b.Has(ci)
}

// Put implements fetch.ChunkCache; data was verified by the caller.
func (cc *chunkCache) Put(ctx context.Context, id string, ci uint32, off int64, data []byte) error {
	b, err := cc.blob(ctx, id)
	if err != nil {
		return err
	}
	return b.Put(ctx, ci, off, data, nil)
}

// LoadMeta implements storage.MetaStore with the cache's .blob.meta
// files.
func (cc *chunkCache) LoadMeta(ctx context.Context, id string, _ int) ([]byte, bool) {
	b, err := cc.c.Meta(ctx, id)
	return b, err == nil
}

// HasMeta implements storage.MetaStore.
func (cc *chunkCache) HasMeta(ctx context.Context, id string) bool { return cc.c.HasMeta(id) }

// StoreMeta implements storage.MetaStore: the file is written beside the
// blob's data, as upstream nydusd does.
func (cc *chunkCache) StoreMeta(ctx context.Context, id string, chunks int, file []byte) error {
	b, err := cc.c.Blob(ctx, id, chunks, file)
	if err != nil {
		return err
	}
	b.Release()
	return nil
}

// release drops every blob handle.
func (cc *chunkCache) release() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for _, b := range cc.blobs {
		b.Release()
	}
	cc.blobs = map[string]*blobcache.BlobCache{}
}
