package rafs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"log"

	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// bootstrap builds a one-layer image with package builder and returns
// its bootstrap (the data blob is dropped: reading the tree needs only
// the bootstrap).
func bootstrap() []byte {
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	tw.WriteHeader(&tar.Header{Name: "usr/bin/", Mode: 0o755, Typeflag: tar.TypeDir})
	tw.WriteHeader(&tar.Header{Name: "usr/bin/tool", Mode: 0o755, Size: 3 << 20})
	tw.Write(bytes.Repeat([]byte{1, 2, 3, 4}, 3<<20/4))
	tw.WriteHeader(&tar.Header{Name: "usr/bin/t", Typeflag: tar.TypeSymlink, Linkname: "tool"})
	tw.Close()
	res, err := builder.Create(context.Background(), &layer, io.Discard, builder.Options{})
	if err != nil {
		log.Fatal(err)
	}
	return res.Bootstrap
}

// Open validates a bootstrap's superblocks and tables; inodes,
// directories and chunk indexes are read as they are asked for. Walk
// visits the whole tree.
func ExampleOpen() {
	ctx := context.Background()
	b := bootstrap()
	rd, err := rafs.Open(ctx, bytes.NewReader(b), int64(len(b)))
	if err != nil {
		log.Fatal(err) // wraps rafs.ErrNotRafsV6 or a corruption error
	}
	fmt.Println("blobs:", len(rd.Blobs), "chunk size:", rd.ChunkSize())

	err = rd.Walk(ctx, func(path string, ino *rafs.DiskInode) error {
		switch {
		case ino.IsRegular():
			addrs, err := rd.ChunkAddrs(ctx, ino)
			if err != nil {
				return err
			}
			fmt.Printf("%s: %d bytes in %d chunks of blob %d\n", path, ino.Size, len(addrs), addrs[0].BlobIndex)
		case ino.IsSymlink():
			target, err := rd.Readlink(ctx, ino)
			if err != nil {
				return err
			}
			fmt.Printf("%s -> %s\n", path, target)
		default:
			fmt.Printf("%s: %s\n", path, rafs.TypeName(ino.Mode))
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// blobs: 1 chunk size: 1048576
	// /: directory
	// /usr: directory
	// /usr/bin: directory
	// /usr/bin/t -> tool
	// /usr/bin/tool: 3145728 bytes in 3 chunks of blob 0
}

// Marshal writes an in-memory tree as a bootstrap. A tree without file
// data needs no blob; package builder makes the trees of real layers.
func ExampleMarshal() {
	root := &rafs.Node{Inode: &rafs.Inode{Mode: rafs.ModeDir | 0o755}}
	etc := &rafs.Node{Name: "etc", Inode: &rafs.Inode{Mode: rafs.ModeDir | 0o755}}
	root.SetChild(etc)
	etc.SetChild(&rafs.Node{Name: "localtime", Inode: &rafs.Inode{
		Mode: rafs.ModeSymlink | 0o777, Symlink: "/usr/share/zoneinfo/UTC"}})
	// The flags name the image's compressor and chunk digest.
	b, err := rafs.Marshal(root, rafs.WriterOptions{Flags: rafs.FlagsFor(compress.Zstd, digester.Blake3)})
	if err != nil {
		log.Fatal(err)
	}

	ctx := context.Background()
	rd, err := rafs.Open(ctx, bytes.NewReader(b), int64(len(b)))
	if err != nil {
		log.Fatal(err)
	}
	ino, err := rd.Lookup(ctx, "/etc/localtime")
	if err != nil {
		log.Fatal(err)
	}
	target, err := rd.Readlink(ctx, ino)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(target)
	// Output:
	// /usr/share/zoneinfo/UTC
}
