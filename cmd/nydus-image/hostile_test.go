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
		if !strings.Contains(r.Stderr, boot) {
			t.Errorf("%s: the error does not name the bootstrap: %s", args[0], r.Stderr)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("unpack wrote an archive of the crafted bootstrap")
	}
}

// headerOnly returns the header blocks of one tar entry, without data or
// end-of-archive marker: what a hostile or truncated layer starts with.
func headerOnly(t *testing.T, h *tar.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	// Flush would demand the data; the header is already in b.
	return append([]byte(nil), b.Bytes()...)
}

// TestHugeDeclaredSizes: a 3 KB tar whose header declares a file of 2^62
// (PAX), 2^54 (PAX) or 2^50 (GNU base-256) bytes fails at once with one
// line naming the entry, not with a panic or an out-of-memory crash; a
// file whose data ends early says where.
func TestHugeDeclaredSizes(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name   string
		size   int64
		format tar.Format
	}{
		{"pax-2^62", 1 << 62, tar.FormatPAX},
		{"pax-2^54", 1 << 54, tar.FormatPAX},
		{"base256-2^50", 1 << 50, tar.FormatGNU},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := headerOnly(t, &tar.Header{Typeflag: tar.TypeReg, Name: "huge", Size: tc.size, Mode: 0o644, Format: tc.format})
			if tc.format == tar.FormatGNU && !bytes.Contains(b[124:136], []byte{0x80}) {
				t.Fatal("the header does not use base-256")
			}
			src := writeFile(t, filepath.Join(dir, tc.name+".tar"), b)
			r := run(t, "", "create", "-t", "tar-rafs", "-B", filepath.Join(dir, "boot"), "--blob", filepath.Join(dir, "blob"), src)
			oneLineError(t, r, "huge: size")
			if r.Code != 1 || !strings.Contains(r.Stderr, "exceeds the limit") {
				t.Fatalf("exit %d: %s", r.Code, r.Stderr)
			}
		})
	}
	// Within the limit but short: the error gives the offset where the
	// data ended, and nothing was allocated for the declared terabyte.
	b := headerOnly(t, &tar.Header{Typeflag: tar.TypeReg, Name: "short", Size: 1 << 40, Mode: 0o644, Format: tar.FormatPAX})
	src := writeFile(t, filepath.Join(dir, "short.tar"), append(b, "0123456789"...))
	r := run(t, "", "create", "-t", "tar-rafs", "-B", filepath.Join(dir, "boot"), "--blob", filepath.Join(dir, "blob"), src)
	oneLineError(t, r, "ends at offset 10")
}

// TestUnstorableXattrsExplained: xattrs RAFS v6 (or Linux) cannot hold
// are dropped with a warning that gives the real reason.
func TestUnstorableXattrsExplained(t *testing.T) {
	dir := t.TempDir()
	h := tar.Header{Typeflag: tar.TypeReg, Name: "f", Mode: 0o644, Format: tar.FormatPAX, PAXRecords: map[string]string{
		"SCHILY.xattr.user.":                            "empty name",
		"SCHILY.xattr.user." + strings.Repeat("n", 300): "long name",
		"SCHILY.xattr.user.big":                         strings.Repeat("v", 70000),
		"SCHILY.xattr.weird.ns":                         "x",
		"SCHILY.xattr.user.ok":                          "kept",
	}}
	src := writeFile(t, filepath.Join(dir, "x.tar"), treetest.Tar([]treetest.File{{Header: h}}))
	boot := filepath.Join(dir, "boot")
	r := mustRun(t, "", "create", "-t", "tar-rafs", "-B", boot, "-D", filepath.Join(dir, "blobs"), src)
	for _, want := range []string{
		`user.\" dropped: the name is empty after its namespace prefix`,
		"the name is 300 bytes after its namespace prefix",
		`user.big\" dropped: the value is 70000 bytes`,
		`weird.ns\" dropped: RAFS v6 stores only`,
	} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("no warning %q:\n%s", want, r.Stderr)
		}
	}
	if strings.Contains(r.Stderr, "user.ok") {
		t.Errorf("a storable xattr was dropped:\n%s", r.Stderr)
	}
}
