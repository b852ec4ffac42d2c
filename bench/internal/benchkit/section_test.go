package benchkit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSpliceSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "docs", "benchmarks.md")
	h := "## Conversion (`make bench-convert`)"
	if err := SpliceSection(path, h, h+"\n\nfirst\n", "# Benchmarks\n"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(b), "# Benchmarks") || !strings.Contains(string(b), "first") {
		t.Fatalf("new file:\n%s", b)
	}
	// Replaced up to the next level-2 heading outside a code fence, the
	// other sections kept, whatever blank lines the body ends with.
	doc := "# Benchmarks\n\n## Other\n\nkeep me\n\n" + h + "\n\nold\n### sub\n```\n## not a heading\n```\nold too\n\n## After\n\nkeep me too\n"
	want := "# Benchmarks\n\n## Other\n\nkeep me\n\n" + h + "\n\nnew\n### sub2\n\n## After\n\nkeep me too\n"
	for _, body := range []string{h + "\n\nnew\n### sub2\n", h + "\n\nnew\n### sub2\n\n\n"} {
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := SpliceSection(path, h, body, ""); err != nil {
			t.Fatal(err)
		}
		if b, _ = os.ReadFile(path); string(b) != want {
			t.Fatalf("spliced:\n%s\nwant:\n%s", b, want)
		}
	}
	// Appended when missing, other sections untouched.
	if err := os.WriteFile(path, []byte("# Benchmarks\n\n## Layer build\n\nx\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := SpliceSection(path, h, h+"\n\nnew\n", ""); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	if want := "# Benchmarks\n\n## Layer build\n\nx\n\n" + h + "\n\nnew\n"; string(b) != want {
		t.Fatalf("appended:\n%q\nwant:\n%q", b, want)
	}
}
