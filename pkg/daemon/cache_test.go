package daemon

import (
	"runtime"
	"testing"
	"time"

	"github.com/nydus-go/nydus/pkg/blob"
)

// TestMetaShare: the first table shared for a blob is the one every
// image gets, and it goes once no image holds it.
func TestMetaShare(t *testing.T) {
	var s metaShare
	a, b := &blob.Meta{}, &blob.Meta{}
	if got := s.ShareMeta("x", a); got != a {
		t.Fatal("the first table is not shared")
	}
	if got := s.ShareMeta("x", b); got != a || s.SharedMeta("x") != a {
		t.Fatal("a second table replaced the first")
	}
	runtime.KeepAlive(a)
	a = nil
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		s.mu.Lock()
		n := len(s.m)
		s.mu.Unlock()
		if n == 0 && s.SharedMeta("x") == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a table no image holds is still shared")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
