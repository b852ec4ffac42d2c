package builder_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log"

	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/storage"
)

// layer returns an uncompressed tar layer of the given name and content
// pairs, in order: a name ending in "/" is a directory, others are
// regular files.
func layer(files ...string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; i < len(files); i += 2 {
		name, data := files[i], files[i+1]
		hdr := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}
		if name[len(name)-1] == '/' {
			hdr = &tar.Header{Name: name, Mode: 0o755, Typeflag: tar.TypeDir}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			log.Fatal(err)
		}
		if _, err := io.WriteString(tw, data); err != nil {
			log.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		log.Fatal(err)
	}
	return buf.Bytes()
}

// Create builds one layer: the data blob is written to a writer (a
// buffer here, a file or a pipe in nydus-image), the RAFS v6 bootstrap
// comes back in the result. Check then reads every chunk of the blob
// back and verifies it.
func ExampleCreate() {
	ctx := context.Background()
	// Two 1 MiB chunks of the big file are identical: the blob stores
	// the chunk once.
	big := string(bytes.Repeat([]byte("nydus-go"), 2<<20/8)) + "tail"
	tarLayer := layer(
		"etc/", "",
		"etc/hostname", "nydus\n",
		"data/big", big,
	)

	var blob bytes.Buffer
	res, err := builder.Create(ctx, bytes.NewReader(tarLayer), &blob, builder.Options{ChunkSize: 1 << 20})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("files:", res.Stats.Files, "chunks:", res.Stats.Chunks, "unique chunks:", res.Stats.UniqueChunks)
	fmt.Println("blob id is the blob's sha256:", res.BlobID == fmt.Sprintf("%x", sha256.Sum256(blob.Bytes())))

	rd, err := rafs.Open(ctx, bytes.NewReader(res.Bootstrap), int64(len(res.Bootstrap)))
	if err != nil {
		log.Fatal(err)
	}
	sum, err := builder.Check(ctx, rd, storage.BytesSource(blob.Bytes()))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("checked:", sum.Files, "files,", sum.Dirs, "directories,", sum.Chunks, "chunks,", sum.Blobs, "blob")
	// Output:
	// files: 2 chunks: 4 unique chunks: 3
	// blob id is the blob's sha256: true
	// checked: 2 files, 3 directories, 4 chunks, 1 blob
}

// Unpack writes an image's filesystem back as a tar stream, reading
// every file's chunks from the blob and verifying their digests.
func ExampleUnpack() {
	ctx := context.Background()
	var blob bytes.Buffer
	res, err := builder.Create(ctx, bytes.NewReader(layer("etc/", "", "etc/hostname", "nydus\n")), &blob, builder.Options{})
	if err != nil {
		log.Fatal(err)
	}
	rd, err := rafs.Open(ctx, bytes.NewReader(res.Bootstrap), int64(len(res.Bootstrap)))
	if err != nil {
		log.Fatal(err)
	}

	var out bytes.Buffer
	if err := builder.Unpack(ctx, rd, storage.BytesSource(blob.Bytes()), &out, builder.UnpackOptions{}); err != nil {
		log.Fatal(err)
	}
	tr := tar.NewReader(&out)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			log.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		fmt.Printf("%s %q\n", hdr.Name, data)
	}
	// Output:
	// ./ ""
	// etc/ ""
	// etc/hostname "nydus\n"
}

// Merge stacks per-layer bootstraps, lowest first, into the image's
// bootstrap: an upper layer's files replace the lower layer's, its
// whiteouts hide them, and the merged blob table lists the blobs that
// hold the data of the files left.
func ExampleMerge() {
	ctx := context.Background()
	var srcs []builder.MergeSource
	for _, l := range [][]byte{
		layer("etc/", "", "etc/hostname", "lower\n", "etc/motd", "hello\n", "etc/os-release", "ID=nydus\n"),
		layer("etc/hostname", "upper\n", "etc/.wh.motd", ""),
	} {
		// A layer built for Merge keeps its whiteouts as entries
		// (WhiteoutNone), as nydusify's per-layer builds do.
		var blob bytes.Buffer
		res, err := builder.Create(ctx, bytes.NewReader(l), &blob, builder.Options{Whiteout: builder.WhiteoutNone})
		if err != nil {
			log.Fatal(err)
		}
		rd, err := rafs.Open(ctx, bytes.NewReader(res.Bootstrap), int64(len(res.Bootstrap)))
		if err != nil {
			log.Fatal(err)
		}
		srcs = append(srcs, builder.MergeSource{Reader: rd})
	}

	m, err := builder.Merge(ctx, srcs, builder.MergeOptions{})
	if err != nil {
		log.Fatal(err)
	}
	rd, err := rafs.Open(ctx, bytes.NewReader(m.Bootstrap), int64(len(m.Bootstrap)))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("blobs:", len(m.Blobs))
	err = rd.Walk(ctx, func(path string, ino *rafs.DiskInode) error {
		fmt.Println(path, rafs.TypeName(ino.Mode))
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// blobs: 2
	// / directory
	// /etc directory
	// /etc/hostname regular file
	// /etc/os-release regular file
}
