package daemon

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"weak"

	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/blobcache"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/storage"
)

// chunkCache adapts a blobcache.Cache to one image's fetch.ChunkCache,
// keeping a handle per blob for the image's lifetime.
type chunkCache struct {
	*metaShare // the daemon's
	c          *blobcache.Cache
	n          map[string]int // chunk count per blob id; immutable
	// mu guards blobs. It is held while a blob's handle is opened
	// (blobcache.Cache.Blob: file I/O) or released: it is taken before
	// blobcache's locks, never under them or under Daemon.mu.
	mu    sync.Mutex
	blobs map[string]*blobcache.BlobCache // open handles, by blob id; guarded by mu
}

func newChunkCache(c *blobcache.Cache, rd *rafs.Reader, share *metaShare) *chunkCache {
	n := make(map[string]int, len(rd.Blobs))
	for _, bi := range rd.Blobs {
		n[bi.BlobID] = int(bi.ChunkCount)
	}
	return &chunkCache{metaShare: share, c: c, n: n, blobs: map[string]*blobcache.BlobCache{}}
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

// Shared implements fetch.ChunkSharer with the cache's content index:
// a chunk of the same content cached for any blob, of any image.
func (cc *chunkCache) Shared(ctx context.Context, alg digester.Algorithm, d digester.Digest, size int) ([]byte, bool) {
	return cc.c.Shared(ctx, alg, d, size)
}

// Index implements fetch.ChunkSharer.
func (cc *chunkCache) Index(ctx context.Context, id string, ci uint32, off int64, size int, alg digester.Algorithm, d digester.Digest) {
	if b, err := cc.blob(ctx, id); err == nil {
		b.Index(ci, off, size, alg, d)
	}
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

// metaShare shares the decoded chunk-info tables of blobs between the
// images of the daemon (storage.MetaShare): a table is decoded once
// while any image uses it, then goes with the last one (weak pointers).
type metaShare struct {
	mu sync.Mutex                         // guards m; a leaf
	m  map[string]weak.Pointer[blob.Meta] // guarded by mu
}

// SharedMeta implements storage.MetaShare.
func (s *metaShare) SharedMeta(id string) *blob.Meta {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[id].Value()
}

// ShareMeta implements storage.MetaShare.
func (s *metaShare) ShareMeta(id string, m *blob.Meta) *blob.Meta {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]weak.Pointer[blob.Meta]{}
	}
	if old := s.m[id].Value(); old != nil {
		return old
	}
	wp := weak.Make(m)
	s.m[id] = wp
	runtime.AddCleanup(m, func(id string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.m[id] == wp {
			delete(s.m, id)
		}
	}, id)
	return m
}

var _ storage.MetaShare = (*chunkCache)(nil)
