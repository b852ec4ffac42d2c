package fs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"log"

	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fs"
	"github.com/nydus-go/nydus/pkg/storage"
)

// image builds a one-layer Nydus image of a few files and returns its
// bootstrap and its data blob.
func image() (bootstrap, blob []byte) {
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	tw.WriteHeader(&tar.Header{Name: "etc/", Mode: 0o755, Typeflag: tar.TypeDir})
	tw.WriteHeader(&tar.Header{Name: "etc/hostname", Mode: 0o644, Size: 6})
	tw.Write([]byte("nydus\n"))
	tw.WriteHeader(&tar.Header{Name: "etc/name", Typeflag: tar.TypeSymlink, Linkname: "hostname"})
	tw.Close()
	var out bytes.Buffer
	res, err := builder.Create(context.Background(), &layer, &out, builder.Options{})
	if err != nil {
		log.Fatal(err)
	}
	return res.Bootstrap, out.Bytes()
}

// An FS reads an image without FUSE: the tree comes from the bootstrap,
// file data is fetched from the blob backend chunk by chunk on the first
// read and verified against its digest. Package fusefs serves the same
// calls to the kernel.
func ExampleOpen() {
	ctx := context.Background()
	bootstrap, blob := image()

	// The backend: storage.BytesSource serves a blob from memory;
	// storage.FileSource serves blobs from a directory, registry.Client
	// from a registry.
	f, err := fs.Open(ctx, bootstrap, storage.BytesSource(blob), fs.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()

	etc, err := f.Lookup(ctx, f.RootNid(), "etc")
	if err != nil {
		log.Fatal(err)
	}
	entries, err := f.ReadDir(ctx, etc.Nid)
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range entries {
		fmt.Println(e.Name)
	}

	link, err := f.Lookup(ctx, etc.Nid, "name")
	if err != nil {
		log.Fatal(err)
	}
	target, err := f.Readlink(ctx, link.Nid)
	if err != nil {
		log.Fatal(err)
	}
	file, err := f.Lookup(ctx, etc.Nid, target)
	if err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, file.Size)
	n, err := f.Read(ctx, file.Nid, buf, 0)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("name -> %s: %q\n", target, buf[:n])

	if _, err := f.Lookup(ctx, etc.Nid, "passwd"); err != nil {
		fmt.Println("passwd:", err)
	}
	fmt.Println("chunks fetched:", f.Metrics.FetchedChunks.Load())
	// Output:
	// hostname
	// name
	// name -> hostname: "nydus\n"
	// passwd: no such file or directory
	// chunks fetched: 1
}
