package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSpliceSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "docs", "benchmarks.md")
	h := "## Layer build (`make bench-build`)"
	if err := spliceSection(path, h, h+"\n\nfirst\n"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(b), "# Benchmarks") || !strings.Contains(string(b), "first") {
		t.Fatalf("new file:\n%s", b)
	}
	doc := "# Benchmarks\n\n## Other\n\nkeep me\n\n" + h + "\n\nold\n```\n## not a heading\n```\nold too\n\n## After\n\nkeep me too\n"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := spliceSection(path, h, h+"\n\nnew\n\n"); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	want := "# Benchmarks\n\n## Other\n\nkeep me\n\n" + h + "\n\nnew\n\n## After\n\nkeep me too\n"
	if string(b) != want {
		t.Fatalf("spliced:\n%s\nwant:\n%s", b, want)
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Fatalf("median = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Fatalf("median = %v", m)
	}
}
