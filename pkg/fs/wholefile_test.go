package fs

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCleanWholeFileDirRemovesOnlyOldPartialBuilds(t *testing.T) {
	dir := t.TempDir()
	old := time.Now().Add(-time.Hour)
	for _, n := range []string{".build-old", ".build-new", "0123abcd"} {
		os.WriteFile(filepath.Join(dir, n), []byte("x"), 0o400)
	}
	os.Chtimes(filepath.Join(dir, ".build-old"), old, old)
	os.Chtimes(filepath.Join(dir, "0123abcd"), old, old)
	if n := CleanWholeFileDir(dir, 10*time.Minute); n != 1 {
		t.Fatalf("removed %d, want 1", n)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != ".build-new" || names[1] != "0123abcd" {
		t.Fatalf("left %v", names)
	}
	if n := CleanWholeFileDir(filepath.Join(dir, "missing"), 0); n != 0 {
		t.Fatalf("missing dir: %d", n)
	}
}
