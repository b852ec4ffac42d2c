package benchkit

import (
	"os"
	"path/filepath"
	"slices"
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
	srcs, err := AptSources(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range srcs {
		if slices.Contains(s.Suites, "bookworm") && slices.Contains(s.Components, "main") {
			got = append(got, s.URI)
		}
	}
	if want := []string{"http://two.invalid/debian"}; !slices.Equal(got, want) {
		t.Fatalf("bookworm/main sources = %v, want %v (all: %+v)", got, want, srcs)
	}
	if uri, err := Mirror(dir, "bookworm", "main"); err != nil || uri != "http://two.invalid/debian" {
		t.Fatalf("Mirror = %q, %v", uri, err)
	}
	if _, err := Mirror(dir, "trixie", "main"); err == nil {
		t.Fatal("Mirror found a trixie source")
	}
}
