package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/nydus-go/nydus/internal/treetest"
)

// TestParentDedupDeletedFile is the seed's ADD payload / RUN rm / ADD
// payload built layer by layer with --parent-bootstrap: the second ADD
// reuses the chunks of the payload the first layer stored, although the
// parent no longer shows the file, and stores under 1 MiB of new data;
// the result unpacks to the OCI-applied tree. Without the parent's blobs
// (another --parent-blob-dir) the payload is stored again. Blobs with a
// ToC give their chunk digests; others are hashed chunk by chunk.
func TestParentDedupDeletedFile(t *testing.T) {
	for _, toc := range []bool{true, false} {
		t.Run(map[bool]string{true: "blob-toc", false: "no-toc"}[toc], func(t *testing.T) { parentDedup(t, toc) })
	}
}

func parentDedup(t *testing.T, toc bool) {
	payload := treetest.Random(77, 6<<20)
	layers := [][]treetest.File{
		{treetest.Reg("opt/payload.bin", 0o644, payload), treetest.Reg("etc/a", 0o644, []byte("a\n"))},
		{treetest.Reg("opt/.wh.payload.bin", 0o644, nil), treetest.Reg("etc/b", 0o644, []byte("b\n"))},
		{treetest.Reg("opt/payload.bin", 0o644, payload), treetest.Reg("etc/c", 0o644, []byte("c\n"))},
	}
	dir := t.TempDir()
	blobs := filepath.Join(dir, "blobs")
	var want treetest.Tree
	build := func(i int, parent, parentBlobs string) (boot string, blobSize int64) {
		tarPath := writeFile(t, filepath.Join(dir, "layer.tar"), treetest.Tar(layers[i]))
		boot = filepath.Join(dir, "boot"+string(rune('0'+i)))
		out := filepath.Join(dir, "blobs-out")
		os.RemoveAll(out)
		args := []string{"create", "--log-level", "warn", "-t", "tar-rafs", "-B", boot, "-D", out, tarPath}
		if toc {
			args = append(args, "--features", "blob-toc")
		}
		if parent != "" {
			args = append(args, "--parent-bootstrap", parent, "--parent-blob-dir", parentBlobs)
		}
		mustRun(t, "", args...)
		ents, _ := os.ReadDir(out)
		os.MkdirAll(blobs, 0o755)
		for _, e := range ents {
			fi, _ := e.Info()
			blobSize += fi.Size()
			os.Rename(filepath.Join(out, e.Name()), filepath.Join(blobs, e.Name()))
		}
		return boot, blobSize
	}
	for i, l := range layers {
		up, err := treetest.FromTar(bytes.NewReader(treetest.Tar(l)), treetest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			want = treetest.ApplyOCI(treetest.Tree{}, up)
		} else {
			want = treetest.ApplyOCI(want, up)
		}
	}
	b1, _ := build(0, "", "")
	b2, _ := build(1, b1, blobs)
	b3, size3 := build(2, b2, blobs)
	if size3 >= 1<<20 {
		t.Fatalf("the re-added 6 MiB payload stored a %d-byte blob; want under 1 MiB", size3)
	}
	checkUnpack(t, b3, blobs, want)
	mustRun(t, "", "check", "--log-level", "warn", "--bootstrap", b3, "--blob-dir", blobs)

	// The parent's blobs out of reach: only visible files dedup.
	_, size3 = build(2, b2, t.TempDir())
	if size3 < 6<<20 {
		t.Fatalf("without the parent's blobs the payload stored only %d bytes", size3)
	}
}

// TestMergeParentDedup: merge on top of a parent with its blobs at hand
// takes a layer's chunks from the parent's blobs wherever they hold them,
// even for a file the parent deleted: a layer that only re-adds such a
// file drops out of the merged image, which unpacks, without that
// layer's blob, to the OCI-applied tree.
func TestMergeParentDedup(t *testing.T) {
	payload := treetest.Random(78, 3<<20)
	base := []treetest.File{treetest.Reg("opt/payload.bin", 0o644, payload), treetest.Reg("etc/a", 0o644, []byte("a\n"))}
	layers := [][]treetest.File{
		{treetest.Reg("opt/.wh.payload.bin", 0o644, nil), treetest.Reg("etc/b", 0o644, []byte("b\n"))},
		{treetest.Reg("opt/payload.bin", 0o644, payload)},
	}
	dir := t.TempDir()
	blobs := filepath.Join(dir, "blobs")
	// build returns the layer's bootstrap, named after its blob.
	build := func(name string, files []treetest.File) (boot, id string) {
		tarPath := writeFile(t, filepath.Join(dir, name+".tar"), treetest.Tar(files))
		out := filepath.Join(dir, name+"-out")
		tmp := filepath.Join(dir, name+".tmp")
		mustRun(t, "", "create", "--log-level", "warn", "-t", "tar-rafs", "-B", tmp, "-D", out, tarPath)
		ents, _ := os.ReadDir(out)
		if len(ents) != 1 {
			t.Fatalf("%s: %d blobs", name, len(ents))
		}
		id = ents[0].Name()
		os.MkdirAll(blobs, 0o755)
		os.Rename(filepath.Join(out, id), filepath.Join(blobs, id))
		boot = filepath.Join(dir, id+".boot")
		os.Rename(tmp, boot)
		return boot, id
	}
	parent, _ := build("base", base)
	l1, _ := build("l1", layers[0])
	l2, l2blob := build("l2", layers[1])
	merged := filepath.Join(dir, "merged.boot")
	report := filepath.Join(dir, "report.json")
	mustRun(t, "", "merge", "--log-level", "warn", "--parent-bootstrap", parent, "--blob-dir", blobs, "-B", merged, "-J", report, l1, l2)
	rep, _ := os.ReadFile(report)
	if bytes.Contains(rep, []byte(l2blob)) {
		t.Fatalf("the merged image still references the layer that only re-adds the parent's payload:\n%s", rep)
	}
	// Without the parent's blobs, the layer stays.
	mustRun(t, "", "merge", "--log-level", "warn", "--parent-bootstrap", parent, "-B", filepath.Join(dir, "plain.boot"), "-J", report, l1, l2)
	if rep, _ := os.ReadFile(report); !bytes.Contains(rep, []byte(l2blob)) {
		t.Fatalf("without the parent's blobs the layer's blob is not referenced:\n%s", rep)
	}
	os.Remove(filepath.Join(blobs, l2blob))
	want := treetest.Tree{}
	for _, l := range append([][]treetest.File{base}, layers...) {
		up, err := treetest.FromTar(bytes.NewReader(treetest.Tar(l)), treetest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		want = treetest.ApplyOCI(want, up)
	}
	checkUnpack(t, merged, blobs, want)
}

// checkUnpack unpacks a bootstrap with its blobs and compares the tree
// with want.
func checkUnpack(t *testing.T, boot, blobs string, want treetest.Tree) {
	t.Helper()
	outTar := filepath.Join(t.TempDir(), "out.tar")
	mustRun(t, "", "unpack", "--log-level", "warn", "--bootstrap", boot, "--blob-dir", blobs, "--output", outTar)
	f, err := os.Open(outTar)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := treetest.FromTar(f, treetest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d := treetest.Diff(want, got); d != "" {
		t.Fatalf("%s unpacks to a tree that differs from the OCI-applied layers:\n%s", boot, d)
	}
}
