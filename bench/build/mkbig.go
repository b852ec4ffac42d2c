package main

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// cmdMkbig is the mkbig subcommand: mkbig with flags.
func cmdMkbig(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mkbig", flag.ContinueOnError)
	in := fs.String("in", "", "input tar (required)")
	out := fs.String("out", "", "output tar (required; written atomically)")
	copies := fs.Int("copies", 8, "how many times the input is repeated")
	randomMiB := fs.Int("random-mib", 128, "MiB of random data, in 8 MiB files")
	seed := fs.Uint64("seed", 1, "seed of the random data")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *in == "" || *out == "" {
		return errors.New("-in and -out are required")
	}
	return mkbig(ctx, *in, *out, *copies, *randomMiB, *seed)
}

// mkbig writes a large, reproducible layer: the input tar repeated
// under copy0/ .. copyN-1/ (hard-link targets renamed along), followed by
// random/ holding incompressible files. The copies deduplicate chunk by
// chunk, the random files do not compress: together they stress the
// builder's memory (8x the inodes, a large chunk table) and both ends of
// its data path.
func mkbig(ctx context.Context, in, out string, copies, randomMiB int, seed uint64) error {
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	tw := tar.NewWriter(bw)
	mtime := time.Unix(1700000000, 0)
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX})
	}
	for c := range copies {
		prefix := fmt.Sprintf("copy%d/", c)
		if err := dir(prefix); err != nil {
			return err
		}
		if err := copyTar(ctx, tw, in, prefix); err != nil {
			return err
		}
	}
	if randomMiB > 0 {
		if err := dir("random/"); err != nil {
			return err
		}
		var key [32]byte
		for i := range 4 {
			for b := range 8 {
				key[i*8+b] = byte(seed >> (8 * b))
			}
		}
		rng := rand.NewChaCha8(key)
		const fileSize = 8 << 20
		buf := make([]byte, 1<<20)
		left := int64(randomMiB) << 20
		for i := 0; left > 0; i++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			size := min(left, int64(fileSize))
			hdr := &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("random/data-%03d.bin", i), Mode: 0o644, Size: size, ModTime: mtime, Format: tar.FormatPAX}
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			for w := int64(0); w < size; {
				n := min(int64(len(buf)), size-w)
				rng.Read(buf[:n])
				if _, err := tw.Write(buf[:n]); err != nil {
					return err
				}
				w += n
			}
			left -= size
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return err
	}
	ok = true
	return nil
}

// copyTar appends every entry of the tar at path to tw under prefix.
func copyTar(ctx context.Context, tw *tar.Writer, path, prefix string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(bufio.NewReaderSize(f, 1<<20))
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		hdr.Name = prefix + strings.TrimPrefix(hdr.Name, "./")
		if hdr.Typeflag == tar.TypeLink {
			hdr.Linkname = prefix + strings.TrimPrefix(hdr.Linkname, "./")
		}
		// Let the writer pick a format that fits the longer names; PAX
		// records (xattrs, ACLs) force PAX.
		hdr.Format = tar.FormatUnknown
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write %s: %w", hdr.Name, err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return fmt.Errorf("copy %s: %w", hdr.Name, err)
		}
	}
}
