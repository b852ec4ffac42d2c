package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestAptSources(t *testing.T) {
	dir := t.TempDir()
	d := filepath.Join(dir, "sources.list.d")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(name, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "sources.list"), "# comment\ndeb-src http://src.invalid/debian bookworm main\ndeb [arch=amd64 signed-by=/k.gpg] http://one.invalid/debian bookworm-updates main\n")
	write(filepath.Join(d, "a.sources"), "Types: deb\nURIs: http://off.invalid/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n\nTypes: deb deb-src\nURIs: http://two.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main contrib\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n -----END PGP PUBLIC KEY BLOCK-----\n")
	write(filepath.Join(d, "b.list.disabled"), "deb http://ignored.invalid/debian bookworm main\n")
	srcs, err := aptSources(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range srcs {
		if slices.Contains(s.suites, "bookworm") && slices.Contains(s.components, "main") {
			got = append(got, s.uri)
		}
	}
	if want := []string{"http://two.invalid/debian"}; !slices.Equal(got, want) {
		t.Fatalf("bookworm/main sources = %v, want %v (all: %+v)", got, want, srcs)
	}
}

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
