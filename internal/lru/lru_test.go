package lru

import (
	"sync"
	"testing"
)

func TestBudgetAndOrder(t *testing.T) {
	c := New[int, string](10)
	var dropped []int
	c.OnEvict(func(k int, _ string) { dropped = append(dropped, k) })
	c.Add(1, "a", 4)
	c.Add(2, "b", 4)
	if _, ok := c.Get(1); !ok { // 1 is now the most recent
		t.Fatal("1 missing")
	}
	c.Add(3, "c", 4) // over 10: 2 goes
	if _, ok := c.Get(2); ok || len(dropped) != 1 || dropped[0] != 2 {
		t.Fatalf("dropped %v", dropped)
	}
	if c.Cost() != 8 || c.Len() != 2 {
		t.Fatalf("cost %d len %d", c.Cost(), c.Len())
	}
	c.Add(4, "too big", 11)
	if _, ok := c.Get(4); ok || c.Cost() != 8 {
		t.Fatal("an entry over the budget was kept")
	}
	c.Add(1, "a2", 2) // replace: cost follows
	if v, _ := c.Get(1); v != "a2" || c.Cost() != 6 {
		t.Fatalf("replace: %q cost %d", v, c.Cost())
	}
	c.RemoveFunc(func(k int) bool { return k == 3 })
	c.Remove(1)
	if c.Len() != 0 || c.Cost() != 0 {
		t.Fatalf("after removals: len %d cost %d", c.Len(), c.Cost())
	}
}

func TestNilKeepsNothing(t *testing.T) {
	c := New[int, int](0)
	c.Add(1, 1, 1)
	if _, ok := c.Get(1); ok || c.Len() != 0 || c.Cost() != 0 {
		t.Fatal("a nil cache kept something")
	}
}

func TestConcurrent(t *testing.T) {
	c := New[int, int](100)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				c.Add((g*7+i)%300, i, int64(1+i%5))
				c.Get(i % 300)
			}
		}(g)
	}
	wg.Wait()
	if c.Cost() > 100 {
		t.Fatalf("cost %d over the budget", c.Cost())
	}
}
