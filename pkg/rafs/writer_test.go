package rafs

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
)

func testBlob(i int) BlobInfo {
	return BlobInfo{
		BlobID: strings.Repeat(fmt.Sprintf("%x", i+10), 64)[:64], Index: uint32(i), ChunkSize: DefaultChunkSize,
		Compressor: compress.Zstd, Digester: digester.Blake3,
		Features: blob.FeatureAligned | blob.FeatureInlinedChunkDigest, UncompressedSize: 64 << 20,
	}
}

// sampleTree returns a tree with every inode type, xattrs, hard links, a
// long symlink and a directory spanning several blocks.
func sampleTree() *Node {
	root := &Node{Inode: &Inode{Mode: ModeDir | 0o755, Mtime: 1700000000}}
	file := func(size uint64, blobIdx uint32, first uint32) *Inode {
		ino := &Inode{Mode: ModeRegular | 0o644, UID: 1000, GID: 1000, Size: size, Mtime: 1700000001, MtimeNsec: 5}
		n := (size + DefaultChunkSize - 1) / DefaultChunkSize
		for i := uint64(0); i < n; i++ {
			sz := size - i*DefaultChunkSize
			if sz > DefaultChunkSize {
				sz = DefaultChunkSize
			}
			var d digester.Digest
			d[0], d[1], d[2], d[3] = byte(blobIdx), byte(first), byte(first>>8), byte(i)
			ino.Chunks = append(ino.Chunks, ChunkInfo{Digest: d, BlobIndex: blobIdx, Index: first + uint32(i),
				UncompressedOffset: uint64(first+uint32(i)) * DefaultChunkSize, UncompressedSize: uint32(sz),
				CompressedOffset: uint64(first+uint32(i)) * 1000, CompressedSize: 1000, FileOffset: i * DefaultChunkSize, Flags: ChunkCompressed})
		}
		return ino
	}
	big := file(3*DefaultChunkSize+5, 1, 0)
	big.Xattrs = []Xattr{{"security.capability", []byte{1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}, {"user.empty", []byte{}}}
	root.SetChild(&Node{Name: "big", Inode: big})
	root.SetChild(&Node{Name: "hardlink-to-big", Inode: big})
	root.SetChild(&Node{Name: "empty", Inode: &Inode{Mode: ModeRegular | 0o4755}})
	root.SetChild(&Node{Name: "link", Inode: &Inode{Mode: ModeSymlink | 0o777, Symlink: "big"}})
	root.SetChild(&Node{Name: "longlink", Inode: &Inode{Mode: ModeSymlink | 0o777, Symlink: strings.Repeat("x/", 2000) + "end"}})
	root.SetChild(&Node{Name: "null", Inode: &Inode{Mode: ModeChar | 0o666, Rdev: 0x103}})
	root.SetChild(&Node{Name: "sda", Inode: &Inode{Mode: ModeBlock | 0o660, Rdev: 0x800}})
	root.SetChild(&Node{Name: "fifo", Inode: &Inode{Mode: ModeFifo | 0o600}})
	sub := &Node{Name: "many", Inode: &Inode{Mode: ModeDir | 0o1777, Xattrs: []Xattr{{"trusted.overlay.opaque", []byte("y")}}}}
	for i := 0; i < 700; i++ {
		sub.SetChild(&Node{Name: fmt.Sprintf("file-with-a-longish-name-%04d", i), Inode: file(uint64(i*100), 0, uint32(i))})
	}
	root.SetChild(sub)
	root.SetChild(&Node{Name: "ünïcødé-\xff\xfe", Inode: &Inode{Mode: ModeDir | 0o700}})
	return root
}

func TestWriterRoundTrip(t *testing.T) {
	ctx := context.Background()
	root := sampleTree()
	opts := WriterOptions{Flags: FlagsFor(compress.Zstd, digester.Blake3) | FlagExplicitUIDGID,
		Blobs: []BlobInfo{testBlob(0), testBlob(1)}, Prefetch: []*Inode{root.Child("big").Inode}}
	b, err := Marshal(root, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(b)%BlockSize != 0 {
		t.Fatalf("size %d not block aligned", len(b))
	}
	rd := openBytes(t, b)
	if rd.Ext.Flags&FlagHasXattr == 0 || rd.Ext.Flags&FlagInlinedDigest == 0 || rd.Ext.Flags&FlagEncryptionNone == 0 {
		t.Fatalf("flags %#x", uint64(rd.Ext.Flags))
	}
	if len(rd.Prefetch) != 1 {
		t.Fatalf("prefetch %v", rd.Prefetch)
	}
	got, err := rd.Load(ctx, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	compareTrees(t, root, got)
	if got.Child("big").Inode != got.Child("hardlink-to-big").Inode || got.Child("big").Inode.Nlink != 2 {
		t.Fatal("hard link lost")
	}
	if got.Child("many").Inode.Nlink != 2 || got.Inode.Nlink != 4 {
		t.Fatalf("dir nlink %d %d", got.Child("many").Inode.Nlink, got.Inode.Nlink)
	}
	// Deterministic output.
	b2, err := Marshal(sampleTree(), WriterOptions{Flags: opts.Flags, Blobs: opts.Blobs, Prefetch: nil})
	if err != nil {
		t.Fatal(err)
	}
	b3, _ := Marshal(sampleTree(), WriterOptions{Flags: opts.Flags, Blobs: opts.Blobs, Prefetch: nil})
	if !bytes.Equal(b2, b3) {
		t.Fatal("Marshal is not deterministic")
	}
}

func compareTrees(t *testing.T, want, got *Node) {
	t.Helper()
	var w, g []string
	dump := func(out *[]string) func(string, *Node) error {
		return func(p string, n *Node) error {
			i := n.Inode
			var chunks []string
			for _, c := range i.Chunks {
				chunks = append(chunks, fmt.Sprintf("%x/%d/%d/%d/%d", c.Digest[:4], c.BlobIndex, c.Index, c.UncompressedOffset, c.UncompressedSize))
			}
			xs := fmt.Sprint(i.Xattrs)
			if len(i.Xattrs) == 0 {
				xs = "[]"
			}
			*out = append(*out, fmt.Sprintf("%q mode=%o uid=%d gid=%d mtime=%d.%d rdev=%d size=%d link=%q x=%s c=%v",
				p, i.Mode, i.UID, i.GID, i.Mtime, i.MtimeNsec, i.Rdev, i.Size, i.Symlink, xs, chunks))
			return nil
		}
	}
	want.Walk(dump(&w))
	got.Walk(dump(&g))
	if !reflect.DeepEqual(w, g) {
		for i := range w {
			if i >= len(g) || w[i] != g[i] {
				t.Fatalf("entry %d differs:\nwant %s\ngot  %s", i, w[i], g[min(i, len(g)-1)])
			}
		}
		t.Fatalf("got %d entries, want %d", len(g), len(w))
	}
}

func TestCorruptBootstraps(t *testing.T) {
	base, err := Marshal(sampleTree(), WriterOptions{Flags: FlagsFor(compress.Zstd, digester.Blake3), Blobs: []BlobInfo{testBlob(0), testBlob(1)}})
	if err != nil {
		t.Fatal(err)
	}
	rd := openBytes(t, base)
	rootOff := rd.InodeOffset(rd.RootNid())
	put32 := func(b []byte, off int, v uint32) {
		b[off], b[off+1], b[off+2], b[off+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	cases := []struct {
		name string
		mod  func(b []byte) []byte
		want string
	}{
		{"bad magic", func(b []byte) []byte { put32(b, SuperOffset, 0x12345678); return b }, "bad EROFS magic"},
		{"truncated", func(b []byte) []byte { return b[:len(b)-BlockSize] }, ""},
		{"short", func(b []byte) []byte { return b[:100] }, "smaller than one block"},
		{"unaligned", func(b []byte) []byte { return append(b, 0) }, "not a multiple"},
		{"blob table out of range", func(b []byte) []byte { put32(b, ExtOffset+8, 1<<30); return b }, "invalid blob table"},
		{"chunk table overlaps blob table", func(b []byte) []byte {
			put32(b, ExtOffset+24, uint32(rd.Ext.BlobTableOffset))
			return b
		}, "overlaps"},
		{"chunk size", func(b []byte) []byte { put32(b, ExtOffset+20, 3000); return b }, "s_chunk_size"},
		{"two compressors", func(b []byte) []byte { b[ExtOffset] |= 0x3; return b }, "compression"},
		{"root nid out of range", func(b []byte) []byte { b[SuperOffset+14], b[SuperOffset+15] = 0xff, 0xff; return b }, ""},
		{"root not a dir", func(b []byte) []byte { b[rootOff+4], b[rootOff+5] = 0xa4, 0x81; return b }, "root inode"},
		{"extra devices", func(b []byte) []byte { b[SuperOffset+86] = 200; return b }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.mod(append([]byte(nil), base...))
			rd, err := Open(context.Background(), bytes.NewReader(b), int64(len(b)))
			if err == nil {
				_, err = rd.Load(context.Background(), LoadOptions{})
			}
			if err == nil {
				t.Fatal("corruption not detected")
			}
			if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestDirectoryLoopRejected(t *testing.T) {
	root := &Node{Inode: &Inode{Mode: ModeDir | 0o755}}
	a := &Node{Name: "a", Inode: &Inode{Mode: ModeDir | 0o755}}
	root.SetChild(a)
	b, err := Marshal(root, WriterOptions{Flags: FlagsFor(compress.None, digester.Sha256)})
	if err != nil {
		t.Fatal(err)
	}
	rd := openBytes(t, b)
	ctx := context.Background()
	ra, _ := rd.Lookup(ctx, "/a")
	// Point a's "." entry... rewrite a dirent of /a to the root nid: find
	// the root's nid bytes in a's dirent block and make "a/.." a child.
	rootIno, _ := rd.Inode(ctx, rd.RootNid())
	data, _ := rd.data(rootIno, 4096)
	// Replace the nid of entry "a" in the root with the root's own nid.
	off := uint64(rd.InodeOffset(rootIno.Nid)) + ExtendedInodeSize
	for i := 0; i+DirentSize <= len(data); i += DirentSize {
		if le64(data[i:]) == ra.Nid {
			put := b[off+uint64(i):]
			for k := 0; k < 8; k++ {
				put[k] = byte(rd.RootNid() >> (8 * k))
			}
			break
		}
	}
	rd = openBytes(t, b)
	err = rd.Walk(ctx, func(string, *DiskInode) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "loop") {
		t.Fatalf("loop not detected: %v", err)
	}
}

func le64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}
