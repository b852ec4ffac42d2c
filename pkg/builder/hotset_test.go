package builder

import (
	"archive/tar"
	"bytes"
	"slices"
	"testing"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// hotLayer is a layer whose tar order differs from the hot list's: a
// directory, a symlinked directory (Debian's merged /lib), a hard link
// and a file larger than one chunk.
func hotLayer() []byte {
	return treetest.Tar([]treetest.File{
		treetest.Dir("usr", 0o755),
		treetest.Dir("usr/lib", 0o755),
		treetest.Reg("usr/lib/a.so", 0o644, treetest.Random(1, 3000)),
		treetest.Reg("usr/lib/b.so", 0o644, treetest.Random(2, 70000)),
		treetest.Reg("usr/lib/c.so", 0o644, treetest.Random(3, 5000)),
		{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: "lib", Linkname: "usr/lib", Mode: 0o777, ModTime: treetest.T, Format: tar.FormatPAX}},
		treetest.Dir("etc", 0o755),
		treetest.Reg("etc/conf", 0o644, treetest.Random(4, 100)),
		treetest.Reg("etc/other", 0o644, treetest.Random(5, 200)),
		{Header: tar.Header{Typeflag: tar.TypeLink, Name: "etc/conf-link", Linkname: "etc/conf", ModTime: treetest.T, Format: tar.FormatPAX}},
		treetest.Dir("bin", 0o755),
		treetest.Reg("bin/sh", 0o755, treetest.Random(6, 20000)),
		treetest.Reg("bin/zz", 0o755, treetest.Random(7, 20000)),
	})
}

// fileOffsets returns each regular file's first chunk's stored offset.
func fileOffsets(t *testing.T, b *built) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	tr := b.rd
	err := walkFiles(t, tr, func(p string, addrs []rafs.ChunkInfo) {
		if len(addrs) > 0 {
			out[p] = addrs[0].CompressedOffset
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestHotSetLayout: the files of the prefetch list come first in the
// blob, in list order (through a symlinked directory and a directory
// entry), then the others in tar order; the image unpacks to its source
// and two builds are byte-identical.
func TestHotSetLayout(t *testing.T) {
	layer := hotLayer()
	for _, batch := range []uint32{0, 0x4000} {
		o := Options{Whiteout: WhiteoutNone, ChunkSize: 0x10000, BatchSize: batch,
			Prefetch: []string{"/bin/sh", "/lib/b.so", "/etc/conf-link"}, HotFiles: []string{"/usr/lib", "/nonexistent"}}
		b := build(t, layer, o)
		offs := fileOffsets(t, b)
		order := []string{"/bin/sh", "/usr/lib/b.so", "/etc/conf", "/usr/lib/a.so", "/usr/lib/c.so", "/etc/other", "/bin/zz"}
		got := slices.Clone(order)
		slices.SortStableFunc(got, func(x, y string) int {
			switch {
			case offs[x] < offs[y]:
				return -1
			case offs[x] > offs[y]:
				return 1
			}
			return 0
		})
		if batch == 0 && !slices.Equal(got, order) {
			t.Fatalf("batch %#x: blob order %v, want %v (offsets %v)", batch, got, order, offs)
		}
		if batch > 0 {
			// Small files share batches; a batch holds the hot ones
			// before any cold one, and /bin/sh (not batched) comes
			// first.
			if offs["/bin/sh"] != 0 || offs["/etc/conf"] > offs["/etc/other"] || offs["/usr/lib/b.so"] > offs["/bin/zz"] {
				t.Fatalf("batch %#x: offsets %v", batch, offs)
			}
		}
		if d := treetest.Diff(tree(t, layer), tree(t, unpack(t, b, compress.Zstd))); d != "" {
			t.Fatalf("unpacked tree differs:\n%s", d)
		}
		b2 := build(t, layer, o)
		if !bytes.Equal(b.blob, b2.blob) || !bytes.Equal(b.res.Bootstrap, b2.res.Bootstrap) {
			t.Fatal("two builds with the same hot set differ")
		}
		if len(b.rd.Prefetch) != 3 {
			t.Fatalf("prefetch table has %d entries, want the 3 of Prefetch (HotFiles stay out of it)", len(b.rd.Prefetch))
		}
		plain := build(t, layer, Options{Whiteout: WhiteoutNone, ChunkSize: 0x10000, BatchSize: batch})
		if bytes.Equal(plain.blob, b.blob) {
			t.Fatal("the hot set did not change the blob's layout")
		}
	}
}

// TestHotSetShortData: a tar whose data ends early fails the spooled
// build with the entry's name, as an unspooled build does.
func TestHotSetShortData(t *testing.T) {
	layer := hotLayer()
	cut := layer[:bytes.Index(layer, treetest.Random(2, 70000))+1000]
	_, err := Create(t.Context(), bytes.NewReader(cut), &bytes.Buffer{}, Options{Prefetch: []string{"/bin/sh"}})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("usr/lib/b.so")) {
		t.Fatalf("got %v, want an error naming usr/lib/b.so", err)
	}
}

// walkFiles calls fn with every regular file's path and chunk records.
func walkFiles(t *testing.T, rd *rafs.Reader, fn func(p string, chunks []rafs.ChunkInfo)) error {
	t.Helper()
	table, err := rd.ChunkTable(t.Context())
	if err != nil {
		return err
	}
	byAddr := map[[2]uint32]rafs.ChunkInfo{}
	for _, c := range table {
		byAddr[[2]uint32{c.BlobIndex, c.Index}] = c
	}
	return rd.Walk(t.Context(), func(p string, ino *rafs.DiskInode) error {
		if !ino.IsRegular() {
			return nil
		}
		addrs, err := rd.ChunkAddrs(t.Context(), ino)
		if err != nil {
			return err
		}
		var cs []rafs.ChunkInfo
		for _, a := range addrs {
			cs = append(cs, byAddr[[2]uint32{a.BlobIndex, a.CIIndex}])
		}
		fn(p, cs)
		return nil
	})
}

// TestHotSetRoot: a prefetch list naming the root (nydus-snapshotter's
// converter's default "/") makes every file hot: the blob keeps tar order
// and nothing is spooled, and the table still names the root.
func TestHotSetRoot(t *testing.T) {
	layer := hotLayer()
	plain := build(t, layer, Options{Whiteout: WhiteoutNone, ChunkSize: 0x10000})
	root := build(t, layer, Options{Whiteout: WhiteoutNone, ChunkSize: 0x10000, Prefetch: []string{"/"}, SpoolDir: "/nonexistent-spool-dir"})
	if !bytes.Equal(plain.blob, root.blob) {
		t.Fatal("a root prefetch list reordered the blob")
	}
	if len(root.rd.Prefetch) != 1 || root.rd.Prefetch[0] != root.rd.RootNid() {
		t.Fatalf("prefetch table %v, want the root nid %d", root.rd.Prefetch, root.rd.RootNid())
	}
}
