package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/stargz"
)

// TestCreateTOCRef: `create -t estargztoc-ref` from an eStargz layer file
// and from its TOC JSON (upstream's form, --blob-id and hex
// --blob-data-size) give the same bootstrap, which check verifies
// against the layer and unpack reads back; a plain zstd layer is refused
// with one line naming it.
func TestCreateTOCRef(t *testing.T) {
	dir := t.TempDir()
	files := []treetest.File{treetest.Dir("etc/", 0o755), treetest.Reg("etc/hostname", 0o644, []byte("nydus\n")),
		treetest.Reg("big", 0o644, treetest.Random(1, 5<<20+3))}
	src := treetest.Tar(files)
	b, err := estargz.Build(io.NewSectionReader(bytes.NewReader(src), 0, int64(len(src))))
	if err != nil {
		t.Fatal(err)
	}
	layer, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	blobs := filepath.Join(dir, "blobs")
	os.Mkdir(blobs, 0o755)
	id := sha256hex(layer)
	lp := writeFile(t, filepath.Join(blobs, id), layer)
	boot := filepath.Join(dir, "layer.boot")
	mustRun(t, "", "create", "-t", "estargztoc-ref", "-B", boot, lp)
	mustRun(t, "", "check", boot, "-D", blobs)
	out := filepath.Join(dir, "out.tar")
	mustRun(t, "", "unpack", boot, "-D", blobs, "--output", out)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := treetest.FromTar(bytes.NewReader(src), treetest.Options{IgnoreMtimeNsec: true})
	have, err := treetest.FromTar(bytes.NewReader(got), treetest.Options{IgnoreMtimeNsec: true})
	if err != nil {
		t.Fatal(err)
	}
	if d := treetest.Diff(want, have); d != "" {
		t.Fatalf("unpacked tree differs:\n%s", d)
	}

	// The TOC JSON, as nydus-snapshotter hands it over.
	toc, _, js, err := stargz.ReadTOC(func(off, n int64) ([]byte, error) { return layer[off : off+n], nil }, int64(len(layer)))
	if err != nil || len(toc.Entries) == 0 {
		t.Fatal(err)
	}
	jp := writeFile(t, filepath.Join(dir, stargz.TOCTarName), js)
	boot2 := filepath.Join(dir, "toc.boot")
	mustRun(t, "", "create", "--source-type", "stargz_index", "--bootstrap", boot2, "--blob-id", id,
		"--blob-data-size", strconv.FormatInt(int64(len(layer)), 16), "--chunk-size", "0x400000", jp)
	b1, _ := os.ReadFile(boot)
	b2, _ := os.ReadFile(boot2)
	if !bytes.Equal(b1, b2) {
		t.Fatal("the bootstraps from the layer and from its TOC differ")
	}
	if r := run(t, "", "create", "-t", "estargztoc-ref", "-B", boot2, jp); r.Code == 0 || !strings.Contains(r.Stderr, "--blob-id") {
		t.Fatalf("TOC JSON without --blob-id: exit %d, %s", r.Code, r.Stderr)
	}

	zs, _ := compress.Compress(compress.Zstd, nil, src)
	zp := writeFile(t, filepath.Join(dir, "plain.tar.zst"), zs)
	r := run(t, "", "create", "-t", "estargztoc-ref", "-B", filepath.Join(dir, "z.boot"), zp)
	if r.Code == 0 || !strings.Contains(r.Stderr, zp) || !strings.Contains(r.Stderr, "plain zstd layer") || strings.Count(strings.TrimSpace(r.Stderr), "\n") != 0 {
		t.Fatalf("plain zstd layer: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "z.boot")); err == nil {
		t.Fatal("a bootstrap was left behind")
	}
}
