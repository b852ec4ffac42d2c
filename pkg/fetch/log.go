package fetch

import (
	"context"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Fetch kinds: why a chunk was fetched from the backend (WithKind). They
// set a request's priority: Demand, Dependency, Sibling and HotSet go
// first.
const (
	Demand    = "demand"    // a read needed it
	ReadAhead = "readahead" // read-ahead after a sequential miss
	HotSet    = "hotset"    // the hot set (prefetch table, prefetch files), streamed at mount
	Prefetch  = "prefetch"  // prefetch_all
	WholeFile = "wholefile" // assembling a whole-file copy
	// Dependency marks fetches of a program's interpreter and libraries
	// made when the program was opened (fs.Options.Dependencies).
	Dependency = "dependency"
	// Sibling marks fetches of a directory's small files made because
	// one of them was read and missed (fs.Options.Siblings).
	Sibling = "sibling"
)

// Entry is one chunk fetched from the backend, as kept by the fetch log.
type Entry struct {
	// Start is when the fetch began, relative to Log.Start.
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

// Log is what an engine fetched, in order, when Options.LogSize is set.
type Log struct {
	// Start is when the engine was opened.
	Start time.Time `json:"start"`
	// Fetches are the most recent fetches, in the order they started.
	Fetches []Entry `json:"fetches"`
	// Dropped counts older fetches that no longer fit.
	Dropped int64 `json:"dropped"`
}

// fetchLog is a bounded ring of fetches.
type fetchLog struct {
	start   time.Time
	mu      sync.Mutex
	ring    []Entry // guarded by mu
	next    int     // guarded by mu
	full    bool    // guarded by mu
	dropped int64   // guarded by mu
}

func (l *fetchLog) add(f Entry) {
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

// Log returns the fetch log, or nil when it is off.
func (e *Engine) Log() *Log {
	l := e.flog
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	out := &Log{Start: l.start, Dropped: l.dropped}
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

// WithKind marks the fetches made under ctx with kind.
func WithKind(ctx context.Context, kind string) context.Context {
	return context.WithValue(ctx, fetchKindKey{}, kind)
}

// KindOf returns the fetch kind of ctx (WithKind); Demand if none.
func KindOf(ctx context.Context) string {
	if k, ok := ctx.Value(fetchKindKey{}).(string); ok {
		return k
	}
	return Demand
}

// addFetchedBytes counts backend bytes against the fetch ctx belongs to.
func addFetchedBytes(ctx context.Context, n int64) {
	if c, ok := ctx.Value(fetchBytesKey{}).(*atomic.Int64); ok {
		c.Add(n)
	}
}
