package fusefs

import (
	"os"
	"path/filepath"
	"testing"
)

// TestJournal: records replay into the open state they describe, a new
// journal starts with a given state, and a damaged one is refused with
// its line.
func TestJournal(t *testing.T) {
	p := filepath.Join(t.TempDir(), "api.sock.opens")
	if st, err := readJournal(p); err != nil || len(st) != 0 {
		t.Fatalf("no journal: %v, %v", st, err)
	}
	j, err := openJournal(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	fs := &FileSystem{journal: j}
	fs.o.defaults()
	fs.record("P %d %d\n", 10, 3)
	fs.record("C %d\n", 11)
	fs.record("P %d %d\n", 12, 4)
	fs.record("p %d\n", 12)
	fs.record("C %d\n", 13)
	fs.record("c %d\n", 13)
	j.Close()
	st, err := readJournal(p)
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint64]inherited{10: {backing: 3}, 11: {cached: true}}
	if len(st) != len(want) || st[10] != want[10] || st[11] != want[11] {
		t.Fatalf("state %v, want %v", st, want)
	}
	// A successor's journal starts with what it inherited.
	j, err = openJournal(p, st)
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	if again, err := readJournal(p); err != nil || len(again) != 2 || again[10] != want[10] || again[11] != want[11] {
		t.Fatalf("restarted journal: %v, %v", again, err)
	}
	for _, bad := range []string{"P 1\n", "X 1\n", "P x 2\n", "P 1 0\n", "C\n"} {
		os.WriteFile(p, []byte("C 5\n"+bad), 0o600)
		if _, err := readJournal(p); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
