// Package lru is a least-recently-used cache bounded by the summed cost
// of its entries (bytes, usually). It is safe for concurrent use.
package lru

import (
	"container/list"
	"sync"
)

// Cache maps keys to values, keeping the most recently used ones whose
// costs add up to at most its budget. A nil *Cache keeps nothing.
type Cache[K comparable, V any] struct {
	max int64

	mu   sync.Mutex
	cost int64               // guarded by mu: the sum of the entries' costs
	ll   *list.List          // guarded by mu: front is most recent; values *entry[K, V]
	m    map[K]*list.Element // guarded by mu
	drop func(K, V)          // set once by OnEvict
}

type entry[K comparable, V any] struct {
	key  K
	val  V
	cost int64
}

// New returns a cache holding entries up to max in summed cost; max <= 0
// returns nil (a cache that keeps nothing).
func New[K comparable, V any](max int64) *Cache[K, V] {
	if max <= 0 {
		return nil
	}
	return &Cache[K, V]{max: max, ll: list.New(), m: map[K]*list.Element{}}
}

// OnEvict sets fn to be called (with the cache's lock held: it must not
// use the cache) for each entry dropped to stay under the budget.
func (c *Cache[K, V]) OnEvict(fn func(K, V)) {
	if c != nil {
		c.drop = fn
	}
}

// Get returns a key's value, making it the most recently used.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	var zero V
	if c == nil {
		return zero, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[k]
	if !ok {
		return zero, false
	}
	c.ll.MoveToFront(el)
	return el.Value.(*entry[K, V]).val, true
}

// Add keeps v under k at the given cost (replacing what k had), dropping
// the least recently used entries past the budget. An entry costing more
// than the whole budget is not kept.
func (c *Cache[K, V]) Add(k K, v V, cost int64) {
	if c == nil || cost > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[k]; ok {
		e := el.Value.(*entry[K, V])
		c.cost += cost - e.cost
		e.val, e.cost = v, cost
		c.ll.MoveToFront(el)
	} else {
		c.m[k] = c.ll.PushFront(&entry[K, V]{key: k, val: v, cost: cost})
		c.cost += cost
	}
	for c.cost > c.max {
		el := c.ll.Back()
		e := el.Value.(*entry[K, V])
		c.ll.Remove(el)
		delete(c.m, e.key)
		c.cost -= e.cost
		if c.drop != nil {
			c.drop(e.key, e.val)
		}
	}
}

// Remove drops k.
func (c *Cache[K, V]) Remove(k K) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[k]; ok {
		c.ll.Remove(el)
		delete(c.m, k)
		c.cost -= el.Value.(*entry[K, V]).cost
	}
}

// RemoveFunc drops every entry whose key satisfies match.
func (c *Cache[K, V]) RemoveFunc(match func(K) bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, el := range c.m {
		if match(k) {
			c.ll.Remove(el)
			delete(c.m, k)
			c.cost -= el.Value.(*entry[K, V]).cost
		}
	}
}

// Cost returns the summed cost of the entries kept.
func (c *Cache[K, V]) Cost() int64 {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cost
}

// Len returns the number of entries kept.
func (c *Cache[K, V]) Len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
