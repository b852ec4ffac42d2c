package fetch

import (
	"context"
	"sync"
	"time"
)

// Limiter is a simple token bucket over bytes: it paces the streams
// given it (StreamOptions.Limit) to a shared rate.
type Limiter struct {
	mu     sync.Mutex
	rate   int64
	tokens float64   // guarded by mu
	last   time.Time // guarded by mu
}

// NewLimiter returns a limiter of rate bytes per second (0 or less:
// unlimited).
func NewLimiter(rate int64) *Limiter { return &Limiter{rate: rate, last: time.Now()} }

// wait takes n bytes from the bucket, waiting (or until ctx ends) while
// it is in debt.
func (l *Limiter) wait(ctx context.Context, n int64) {
	if l.rate <= 0 {
		return
	}
	l.mu.Lock()
	now := time.Now()
	l.tokens += now.Sub(l.last).Seconds() * float64(l.rate)
	if l.tokens > float64(l.rate) {
		l.tokens = float64(l.rate)
	}
	l.last = now
	l.tokens -= float64(n)
	var d time.Duration
	if l.tokens < 0 {
		d = time.Duration(-l.tokens / float64(l.rate) * float64(time.Second))
	}
	l.mu.Unlock()
	if d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
}
