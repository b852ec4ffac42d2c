package fs

import "testing"

func TestSizeClassMatchesUpstreamBuckets(t *testing.T) {
	for n, want := range map[int]int{0: 0, 1023: 0, 1024: 1, 4095: 1, 4096: 2, 16 << 10: 3, 64<<10 - 1: 3, 64 << 10: 4, 128 << 10: 5, 512<<10 - 1: 5, 512 << 10: 6, 1 << 20: 7, 8 << 20: 7} {
		if got := sizeClass(n); got != want {
			t.Errorf("sizeClass(%d) = %d, want %d", n, got, want)
		}
	}
}
