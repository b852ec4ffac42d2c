package fetch

import (
	"github.com/nydus-go/nydus/internal/lru"
	"github.com/nydus-go/nydus/pkg/digester"
)

// HotCache keeps the data of the chunks verified last, in memory, up to
// a byte budget, least recently used out first (Options.Hot). Entries
// are named by the chunk's digest (content addressed: never stale), so
// one HotCache can serve every engine of a process, and images sharing
// chunks share its entries. Callers must not modify what it holds.
type HotCache struct {
	c *lru.Cache[hotKey, []byte]
}

type hotKey struct {
	alg    digester.Algorithm
	digest digester.Digest
}

// NewHotCache returns a HotCache of max bytes (nil, which keeps nothing,
// if max <= 0).
func NewHotCache(max int64) *HotCache {
	if max <= 0 {
		return nil
	}
	return &HotCache{c: lru.New[hotKey, []byte](max)}
}

// Bytes returns the bytes it holds.
func (h *HotCache) Bytes() int64 {
	if h == nil {
		return 0
	}
	return h.c.Cost()
}

func (h *HotCache) get(k hotKey) ([]byte, bool) {
	if h == nil {
		return nil, false
	}
	return h.c.Get(k)
}

func (h *HotCache) add(k hotKey, data []byte) {
	if h != nil {
		h.c.Add(k, data, int64(len(data)))
	}
}
