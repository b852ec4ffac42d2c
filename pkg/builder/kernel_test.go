package builder

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nydus-go/nydus/internal/roottest"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/rafs"
	"golang.org/x/sys/unix"
)

// cacheFile is a BlobCache backed by a temporary file.
func cacheFile(t *testing.T, dir, name string) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// mountErofs mounts a bootstrap with the kernel's EROFS driver as a
// file-backed mount, with one device= option per blob cache file.
func mountErofs(t *testing.T, boot string, devices []string) string {
	t.Helper()
	mnt := t.TempDir()
	var opts []string
	for _, d := range devices {
		opts = append(opts, "device="+d)
	}
	if err := unix.Mount(boot, mnt, "erofs", unix.MS_RDONLY, strings.Join(opts, ",")); err != nil {
		t.Fatalf("mount -t erofs %s (%s): %v", boot, strings.Join(opts, ","), err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return mnt
}

func TestKernelMountsOutput(t *testing.T) {
	roottest.RequireRoot(t)
	layer := treetest.Tar(treetest.Sample())
	for _, cs := range []uint32{0x100000, 0x4000} {
		t.Run(filepathSafe(cs), func(t *testing.T) {
			dir := t.TempDir()
			cache := cacheFile(t, dir, "blob.data")
			var blob bytes.Buffer
			res, err := Create(context.Background(), bytes.NewReader(layer), &blob,
				Options{ChunkSize: cs, Whiteout: WhiteoutNone, BlobCache: cache})
			if err != nil {
				t.Fatal(err)
			}
			if err := cache.Truncate(int64(res.UncompressedSize)); err != nil {
				t.Fatal(err)
			}
			boot := filepath.Join(dir, "image.boot")
			if err := os.WriteFile(boot, res.Bootstrap, 0o644); err != nil {
				t.Fatal(err)
			}
			mnt := mountErofs(t, boot, []string{cache.Name()})
			got, err := treetest.FromDir(mnt, treetest.Options{})
			if err != nil {
				t.Fatal(err)
			}
			want := tree(t, layer)
			if d := treetest.Diff(want, got); d != "" {
				t.Fatalf("kernel view differs from the source layer:\n%s", d)
			}
		})
	}
}

// TestKernelMountsMergedImage mounts a two-blob merged image: chunk
// indexes carry CI-index bits above the device id, which the kernel
// masks off.
func TestKernelMountsMergedImage(t *testing.T) {
	roottest.RequireRoot(t)
	ctx := context.Background()
	dir := t.TempDir()
	l1 := treetest.Tar([]treetest.File{
		treetest.Dir("./", 0o755),
		treetest.Reg("keep", 0o644, treetest.Random(11, 300000)),
		treetest.Reg("gone", 0o644, []byte("deleted above")),
		treetest.Dir("opq/", 0o755),
		treetest.Reg("opq/old", 0o644, []byte("hidden by opaque")),
	})
	l2 := treetest.Tar([]treetest.File{
		treetest.Dir("./", 0o755),
		treetest.Reg(".wh.gone", 0o644, nil),
		treetest.Dir("opq/", 0o700),
		treetest.Reg("opq/.wh..wh..opq", 0o644, nil),
		treetest.Reg("opq/new", 0o644, treetest.Random(12, 70000)),
		treetest.Reg("keep-copy", 0o644, treetest.Random(11, 300000)),
	})
	var srcs []MergeSource
	var devices []string
	for i, l := range [][]byte{l1, l2} {
		cache := cacheFile(t, dir, filepathSafe(uint32(i))+".data")
		var blob bytes.Buffer
		res, err := Create(ctx, bytes.NewReader(l), &blob, Options{Whiteout: WhiteoutNone, InlineMeta: true, TOC: true, ChunkSize: 0x1000, BlobCache: cache})
		if err != nil {
			t.Fatal(err)
		}
		cache.Truncate(int64(res.UncompressedSize))
		p := filepath.Join(dir, res.BlobID)
		os.WriteFile(p, res.Bootstrap, 0o644)
		rd, err := rafs.Open(ctx, bytes.NewReader(res.Bootstrap), int64(len(res.Bootstrap)))
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, MergeSource{Reader: rd, Path: p})
		devices = append(devices, cache.Name())
	}
	m, err := Merge(ctx, srcs, MergeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Blobs) != 2 {
		t.Fatalf("merged blobs %v", m.Blobs)
	}
	boot := filepath.Join(dir, "merged.boot")
	os.WriteFile(boot, m.Bootstrap, 0o644)
	mnt := mountErofs(t, boot, devices)
	got, err := treetest.FromDir(mnt, treetest.Options{IgnoreRootAttrs: true})
	if err != nil {
		t.Fatal(err)
	}
	want := tree(t, l1)
	want.Remove("/gone")
	want.Remove("/opq/old")
	up := tree(t, l2)
	want["/opq"] = up["/opq"]
	want["/opq/new"] = up["/opq/new"]
	want["/keep-copy"] = up["/keep-copy"]
	want["/"] = got["/"]
	if d := treetest.Diff(want, got); d != "" {
		t.Fatalf("merged kernel view differs:\n%s", d)
	}
}

func filepathSafe(v uint32) string { return fmt.Sprintf("n%d", v) }
