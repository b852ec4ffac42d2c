package main

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"testing"

	"github.com/nydus-go/nydus/internal/treetest"
)

// TestCreateZranRef: `create -t targz-ref` reads a gzip layer in place:
// the ref blob goes to -D under its sha256, the bootstrap names the
// layer (by its sha256) and the ref blob, check verifies every chunk
// against the gzip layer, and unpack reads the layer's tree back. Also
// with --blob-inline-meta and a ToC, as nydus-snapshotter asks for it.
func TestCreateZranRef(t *testing.T) {
	dir := t.TempDir()
	files := append(treetest.Sample(), treetest.Reg("big", 0o644, treetest.Random(1, 3<<20+3)))
	src := treetest.Tar(files)
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(src)
	zw.Close()
	blobs := filepath.Join(dir, "blobs")
	os.Mkdir(blobs, 0o755)
	lp := writeFile(t, filepath.Join(blobs, sha256hex(b.Bytes())), b.Bytes())
	boot := filepath.Join(dir, "layer.boot")
	mustRun(t, "", "create", "-t", "targz-ref", "--whiteout-spec", "none", "--zran-span", "0x10000", "-B", boot, "-D", blobs, lp)
	mustRun(t, "", "check", boot, "-D", blobs)
	out := filepath.Join(dir, "out.tar")
	mustRun(t, "", "unpack", boot, "-D", blobs, "--output", out)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := treetest.FromTar(bytes.NewReader(src), treetest.Options{})
	have, err := treetest.FromTar(bytes.NewReader(got), treetest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d := treetest.Diff(want, have); d != "" {
		t.Fatalf("unpacked tree differs:\n%s", d)
	}
	// nydus-snapshotter's form: the ref blob carries the bootstrap.
	ref := filepath.Join(dir, "ref.blob")
	mustRun(t, "", "create", "--log-level", "warn", "--type", "targz-ref", "--blob-inline-meta", "--features", "blob-toc", "--blob", ref, lp)
	if st, err := os.Stat(ref); err != nil || st.Size() == 0 || st.Size() > int64(b.Len())/4 {
		t.Fatalf("ref blob: %v %v", st, err)
	}
}
