package rafs

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
)

const fixtures = "../../testdata/upstream"

func fixture(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtures, rel))
	if err != nil {
		t.Fatalf("fixture %s: %v", rel, err)
	}
	return b
}

func openBytes(t testing.TB, b []byte) *Reader {
	t.Helper()
	rd, err := Open(context.Background(), bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return rd
}

func TestOpenUpstreamV6Fixture(t *testing.T) {
	ctx := context.Background()
	rd := openBytes(t, fixture(t, "nydus/bootstrap/rafs-v6-2.2.boot"))
	sb := rd.Super
	if sb.RootNid != 128 || sb.Inos != 3 || sb.Blocks != 9 || sb.MetaBlkAddr != 2 || sb.ExtraDevices != 1 {
		t.Fatalf("superblock = %+v", sb)
	}
	if rd.Ext.Flags != 0x194 || rd.Ext.BlobTableOffset != 4096 || rd.Ext.ChunkSize != 1<<20 ||
		rd.Ext.ChunkTableOffset != 16384 || rd.Ext.ChunkTableSize != 160 {
		t.Fatalf("ext = %+v", rd.Ext)
	}
	if rd.Ext.Flags.Compressor() != compress.Zstd || rd.Ext.Flags.Digester() != digester.Blake3 {
		t.Fatalf("algorithms %v %v", rd.Ext.Flags.Compressor(), rd.Ext.Flags.Digester())
	}
	if len(rd.Devices) != 1 || rd.Devices[0].Blocks != 9 || rd.Devices[0].MappedBlkAddr != 512 ||
		!strings.HasPrefix(rd.Devices[0].BlobID, "be7d77eeb719f708") {
		t.Fatalf("devices = %+v", rd.Devices)
	}
	b := rd.Blobs[0]
	if b.ChunkCount != 2 || b.Compressor != compress.Zstd || b.Features != 0x70000021 ||
		b.CompressedSize != 14554 || b.UncompressedSize != 36864 || b.TOCSize != 1024 ||
		b.CIOffset != 8314 || b.CICompressedSize != 32 || b.CIUncompressedSize != 32 {
		t.Fatalf("blob = %+v", b)
	}
	root, err := rd.Inode(ctx, rd.RootNid())
	if err != nil {
		t.Fatal(err)
	}
	if rd.InodeOffset(root.Nid) != 12288 || root.Compact || root.Layout != LayoutFlatInline || root.Size != 67 {
		t.Fatalf("root = %+v at %d", root, rd.InodeOffset(root.Nid))
	}
	ents, err := rd.ReadDir(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	want := []Dirent{{"lib.rs", 133, ftReg}, {"sync_io.rs", 136, ftReg}}
	if len(ents) != 2 || ents[0] != want[0] || ents[1] != want[1] {
		t.Fatalf("dirents = %+v", ents)
	}
	lib, err := rd.Lookup(ctx, "/lib.rs")
	if err != nil {
		t.Fatal(err)
	}
	if lib.Size != 16931 {
		t.Fatalf("lib.rs size %d", lib.Size)
	}
	addrs, err := rd.ChunkAddrs(ctx, lib)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0] != (ChunkAddr{BlobIndex: 0, CIIndex: 0, BlkAddr: 0}) {
		t.Fatalf("lib.rs chunks %+v", addrs)
	}
	sio, _ := rd.Lookup(ctx, "/sync_io.rs")
	addrs, _ = rd.ChunkAddrs(ctx, sio)
	if sio.Size != 13400 || len(addrs) != 1 || addrs[0].CIIndex != 1 || addrs[0].BlkAddr != 5 {
		t.Fatalf("sync_io.rs %+v %+v", sio, addrs)
	}
	table, err := rd.ChunkTable(ctx)
	if err != nil || len(table) != 2 {
		t.Fatalf("chunk table %v %v", table, err)
	}
	tree, err := rd.Load(ctx, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := tree.Child("sync_io.rs").Inode.Chunks[0]
	if c.CompressedOffset != 4828 || c.CompressedSize != 2974 || c.UncompressedOffset != 20480 || c.UncompressedSize != 13400 {
		t.Fatalf("sync_io.rs chunk info %+v", c)
	}
}

// TestSnapshotterFixture opens the v6 bootstrap layer of nydus-snapshotter.
func TestSnapshotterFixture(t *testing.T) {
	boot := bootFromLayer(t, "nydus-snapshotter/v6-bootstrap-chunk-pos-438272.tar.gz")
	rd := openBytes(t, boot)
	ctx := context.Background()
	n := 0
	var files int
	err := rd.Walk(ctx, func(p string, ino *DiskInode) error {
		n++
		if ino.IsRegular() {
			files++
			if _, err := rd.ChunkAddrs(ctx, ino); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 100 || files == 0 {
		t.Fatalf("walked %d entries, %d files", n, files)
	}
	if _, err := rd.Load(ctx, LoadOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d entries, %d files, %d blobs", n, files, len(rd.Blobs))
}

func TestRejectsInvalidFixtures(t *testing.T) {
	for _, name := range []string{"nydus-snapshotter/invalid-bootstrap-file-size-133513.tar.gz", "nydus-snapshotter/v5-bootstrap-file-size-736032.tar.gz"} {
		boot := bootFromLayer(t, name)
		_, err := Open(context.Background(), bytes.NewReader(boot), int64(len(boot)))
		if err == nil {
			t.Fatalf("%s: Open succeeded", name)
		}
		t.Logf("%s: %v", name, err)
	}
	v5 := fixture(t, "nydus/bootstrap/nydusd_daemon_test_bootstrap")
	_, err := Open(context.Background(), bytes.NewReader(v5), int64(len(v5)))
	if !errors.Is(err, ErrNotRafsV6) {
		t.Fatalf("v5 bootstrap: %v", err)
	}
}

func bootFromLayer(t *testing.T, rel string) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(fixture(t, rel)))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			t.Fatalf("%s: no image.boot", rel)
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "image/image.boot" || h.Name == "image.boot" {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}
