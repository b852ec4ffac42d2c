package fetch

import (
	"context"
	"sync"
)

// priorities orders backend requests: demand reads (and the dependency
// fetches of a program being started, which its loader is about to
// read) go at once; background requests (read-ahead, prefetch,
// whole-file assembly) wait while any demand request is in flight, so on
// a constrained link they yield the bandwidth to what a reader is waiting
// for. A background request already sent is not interrupted.
type priorities struct {
	mu     sync.Mutex
	demand int           // demand requests in flight; guarded by mu
	idle   chan struct{} // closed when demand drops to 0; guarded by mu
}

func newPriorities() *priorities {
	p := &priorities{idle: make(chan struct{})}
	close(p.idle)
	return p
}

// urgent reports whether requests of a fetch kind go first: what a
// reader waits for, what a starting program is about to load, the small
// files beside one just read, and the hot set, which the builder laid
// out in the order the image's programs read it.
func urgent(kind string) bool {
	return kind == Demand || kind == Dependency || kind == HotSet || kind == Sibling
}

// enter admits a request of ctx's fetch kind and returns the function
// that ends it; a background request waits for demand to drain (or ctx).
func (p *priorities) enter(ctx context.Context) (leave func(), err error) {
	if urgent(KindOf(ctx)) {
		p.mu.Lock()
		if p.demand == 0 {
			p.idle = make(chan struct{})
		}
		p.demand++
		p.mu.Unlock()
		return func() {
			p.mu.Lock()
			if p.demand--; p.demand == 0 {
				close(p.idle)
			}
			p.mu.Unlock()
		}, nil
	}
	for {
		p.mu.Lock()
		idle, busy := p.idle, p.demand > 0
		p.mu.Unlock()
		if !busy {
			return func() {}, nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
