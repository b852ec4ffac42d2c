package fetch

import (
	"container/list"
	"sync"
)

// hotChunks keeps the data of the chunks an engine verified last, up to
// a byte budget, least recently used out first (Options.HotBytes).
// Chunk data is immutable (named by its digest), so entries are never
// stale; callers must not modify what get returns. A nil *hotChunks
// keeps nothing.
type hotChunks struct {
	mu    sync.Mutex
	max   int64
	bytes int64                       // guarded by mu
	ll    *list.List                  // guarded by mu; front is most recent, values *hotEntry
	m     map[[2]uint32]*list.Element // guarded by mu
}

type hotEntry struct {
	key  [2]uint32
	data []byte
}

func newHotChunks(max int64) *hotChunks {
	return &hotChunks{max: max, ll: list.New(), m: map[[2]uint32]*list.Element{}}
}

// get returns a chunk's data if it is kept.
func (h *hotChunks) get(k [2]uint32) ([]byte, bool) {
	if h == nil {
		return nil, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	el, ok := h.m[k]
	if !ok {
		return nil, false
	}
	h.ll.MoveToFront(el)
	return el.Value.(*hotEntry).data, true
}

// add keeps a verified chunk's data, dropping the least recently used
// ones past the budget. A chunk larger than the budget is not kept.
func (h *hotChunks) add(k [2]uint32, data []byte) {
	if h == nil || int64(len(data)) > h.max {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if el, ok := h.m[k]; ok {
		h.ll.MoveToFront(el)
		return
	}
	h.m[k] = h.ll.PushFront(&hotEntry{key: k, data: data})
	h.bytes += int64(len(data))
	for h.bytes > h.max {
		el := h.ll.Back()
		e := el.Value.(*hotEntry)
		h.ll.Remove(el)
		delete(h.m, e.key)
		h.bytes -= int64(len(e.data))
	}
}
