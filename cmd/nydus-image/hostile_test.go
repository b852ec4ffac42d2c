package main

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nydus-go/nydus/internal/treetest"
)

// craftedDuplicateBootstrap builds a bootstrap whose root holds a symlink
// "a" -> /outside and a directory "b" holding "evil", then renames "b"
// to "a" in the root's dirent block: two entries named "a". Extracted
// naively, "a/evil" would land in /outside.
func craftedDuplicateBootstrap(t *testing.T, dir string) (boot, blobDir string) {
	t.Helper()
	src := writeFile(t, filepath.Join(dir, "src.tar"), treetest.Tar([]treetest.File{
		{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: "a", Linkname: "/outside", Mode: 0o777}},
		treetest.Dir("b/", 0o755),
		treetest.Reg("b/evil", 0o644, []byte("owned\n")),
	}))
	boot = filepath.Join(dir, "boot")
	blobDir = filepath.Join(dir, "blobs")
	mustRun(t, "", "create", "-t", "tar-rafs", "-B", boot, "-D", blobDir, src)
	b, err := os.ReadFile(boot)
	if err != nil {
		t.Fatal(err)
	}
	// The root's names follow its dirents: ".", "..", "a", "b".
	i := bytes.Index(b, []byte("...ab"))
	if i < 0 || bytes.Count(b, []byte("...ab")) != 1 {
		t.Fatal("root dirent names not found in the bootstrap")
	}
	b[i+4] = 'a'
	writeFile(t, boot, b)
	return boot, blobDir
}

// TestDuplicateNamesRejected: a bootstrap with two root entries named
// "a" (a symlink out of the tree and a directory) is refused by check,
// unpack and inspect, so unpack never writes an archive that escapes its
// target on extraction.
func TestDuplicateNamesRejected(t *testing.T) {
	dir := t.TempDir()
	boot, blobs := craftedDuplicateBootstrap(t, dir)
	out := filepath.Join(dir, "out.tar")
	for _, args := range [][]string{
		{"check", boot, "-D", blobs},
		{"unpack", boot, "-D", blobs, "--output", out},
	} {
		r := run(t, "", args...)
		oneLineError(t, r, `duplicate entry "a"`)
		if !strings.Contains(r.stderr, boot) {
			t.Errorf("%s: the error does not name the bootstrap: %s", args[0], r.stderr)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("unpack wrote an archive of the crafted bootstrap")
	}
}
