package storage

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFileSourceAltDirs: a blob dir lacks is read from the first of
// alt_dirs that has it; one none has is an error naming it.
func TestFileSourceAltDirs(t *testing.T) {
	dir, alt1, alt2 := t.TempDir(), t.TempDir(), t.TempDir()
	id := strings.Repeat("ab", 32)
	other := strings.Repeat("cd", 32)
	os.WriteFile(filepath.Join(alt2, id), []byte("in alt2"), 0o644)
	os.WriteFile(filepath.Join(dir, other), []byte("in dir"), 0o644)
	os.WriteFile(filepath.Join(alt1, other), []byte("shadowed"), 0o644)
	s := &FileSource{Dir: dir, AltDirs: []string{alt1, alt2}}
	defer s.Close()
	for blob, want := range map[string]string{id: "in alt2", other: "in dir"} {
		b, err := s.ReadRange(context.Background(), blob, 0, int64(len(want)))
		if err != nil || string(b) != want {
			t.Errorf("%s: %q %v, want %q", blob[:4], b, err, want)
		}
	}
	if _, err := s.ReadRange(context.Background(), strings.Repeat("ef", 32), 0, 1); err == nil || !strings.Contains(err.Error(), strings.Repeat("ef", 32)) {
		t.Errorf("a blob no directory has: %v", err)
	}
}
