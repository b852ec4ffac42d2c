package fs

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Fetch kinds: why a chunk was fetched from the backend.
const (
	FetchDemand    = "demand"    // a read needed it
	FetchReadAhead = "readahead" // read-ahead after a sequential miss
	FetchHotSet    = "hotset"    // the hot set (prefetch table, prefetch files), streamed at mount
	FetchPrefetch  = "prefetch"  // prefetch_all
	FetchWholeFile = "wholefile" // assembling a whole-file copy
)

// Fetch is one chunk fetched from the backend, as kept by the fetch log.
type Fetch struct {
	// Start is when the fetch began, relative to FetchLog.Start.
	Start time.Duration `json:"start_ns"`
	// Duration is how long the backend took, decompression and
	// verification included.
	Duration time.Duration `json:"duration_ns"`
	Kind     string        `json:"kind"`
	Path     string        `json:"path"`
	BlobID   string        `json:"blob_id"`
	Chunk    uint32        `json:"chunk"`
	// Offset is where the chunk's data starts in the blob; Bytes is what
	// the backend sent for it (a whole batch for a batch chunk, nothing
	// when another chunk's fetch of the batch served it).
	Offset uint64 `json:"offset"`
	Bytes  int64  `json:"bytes"`
	// Amplified counts the following chunks of the blob that came in the
	// same request (Options.Amplify); Bytes includes theirs.
	Amplified int    `json:"amplified,omitempty"`
	Err       string `json:"error,omitempty"`
}

// FetchLog is what a filesystem fetched, in order, when
// Options.FetchLogSize is set.
type FetchLog struct {
	// Start is when the filesystem was opened.
	Start time.Time `json:"start"`
	// Fetches are the most recent fetches, in the order they started.
	Fetches []Fetch `json:"fetches"`
	// Dropped counts older fetches that no longer fit.
	Dropped int64 `json:"dropped"`
}

// fetchLog is a bounded ring of fetches.
type fetchLog struct {
	start   time.Time
	mu      sync.Mutex
	ring    []Fetch
	next    int
	full    bool
	dropped int64
}

func (l *fetchLog) add(f Fetch) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.full {
		l.dropped++
	}
	l.ring[l.next] = f
	l.next++
	if l.next == len(l.ring) {
		l.next, l.full = 0, true
	}
}

// FetchLog returns the fetch log, or nil when it is off.
func (f *FS) FetchLog() *FetchLog {
	l := f.flog
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	out := &FetchLog{Start: l.start, Dropped: l.dropped}
	if l.full {
		out.Fetches = append(out.Fetches, l.ring[l.next:]...)
	}
	out.Fetches = append(out.Fetches, l.ring[:l.next]...)
	// Fetches are logged as they end; concurrent ones end out of order.
	sort.SliceStable(out.Fetches, func(i, j int) bool { return out.Fetches[i].Start < out.Fetches[j].Start })
	return out
}

type fetchKindKey struct{}
type fetchBytesKey struct{}

// withFetchKind marks the fetches made under ctx with kind.
func withFetchKind(ctx context.Context, kind string) context.Context {
	return context.WithValue(ctx, fetchKindKey{}, kind)
}

func fetchKind(ctx context.Context) string {
	if k, ok := ctx.Value(fetchKindKey{}).(string); ok {
		return k
	}
	return FetchDemand
}

// addFetchedBytes counts backend bytes against the fetch ctx belongs to.
func addFetchedBytes(ctx context.Context, n int64) {
	if c, ok := ctx.Value(fetchBytesKey{}).(*atomic.Int64); ok {
		c.Add(n)
	}
}
