package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nydus-go/nydus/internal/version"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/storage"
)

func bootstrapArg(args []string, flag string) (string, error) {
	switch {
	case len(args) == 1 && flag != "" && args[0] != flag:
		return "", fmt.Errorf("bootstrap given twice: %s and --bootstrap %s", args[0], flag)
	case len(args) == 1:
		return args[0], nil
	case flag != "":
		return flag, nil
	}
	return "", errors.New("a BOOTSTRAP argument (or --bootstrap) is required")
}

func newCheckCmd() *cobra.Command {
	var log logFlags
	var boot, blobDir, outJSON, config string
	var verbose bool
	c := &cobra.Command{
		Use:   "check [flags] BOOTSTRAP",
		Short: "Validate a bootstrap; with --blob-dir also verify every chunk's digest",
		Long: `Validate the structure of a RAFS v6 bootstrap: superblocks, tables, every
inode, directory and chunk index.

With --blob-dir (our extension to upstream), every chunk is also read from
<blob-dir>/<blob_id>, decompressed and checked against its digest. A
mismatch exits non-zero and names the file and the chunk.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			done, err := log.setup()
			if err != nil {
				return err
			}
			defer done()
			if blobDir != "" && config != "" {
				return errors.New("--blob-dir conflicts with --config")
			}
			path, err := bootstrapArg(args, boot)
			if err != nil {
				return err
			}
			return runCheck(cmd.Context(), path, blobDir, outJSON, verbose)
		},
	}
	log.register(c)
	c.Flags().StringVarP(&boot, "bootstrap", "B", "", "bootstrap to check (deprecated: pass it as an argument)")
	c.Flags().StringVarP(&blobDir, "blob-dir", "D", "", "directory of blobs named by id; enables chunk digest verification")
	c.Flags().BoolVarP(&verbose, "verbose", "v", false, "list every file")
	c.Flags().StringVarP(&outJSON, "output-json", "J", "", "write a JSON report to this file")
	c.Flags().StringVarP(&config, "config", "C", "", "configuration file (ignored)")
	return c
}

func runCheck(ctx context.Context, path, blobDir, outJSON string, verbose bool) error {
	rd, f, err := openBootstrap(ctx, path)
	if err != nil {
		return err
	}
	defer f.Close()
	var src storage.RangeReader
	if blobDir != "" {
		fs := &storage.FileSource{Dir: blobDir}
		defer fs.Close()
		src = fs
	}
	sum, err := builder.Check(ctx, rd, src)
	if err != nil {
		return fmt.Errorf("check %s: %w", path, err)
	}
	if verbose {
		rd.Walk(ctx, func(p string, ino *rafs.DiskInode) error {
			fmt.Printf("%s\tnid=%d mode=%o size=%d\n", p, ino.Nid, ino.Mode, ino.Size)
			return nil
		})
	}
	blobs := make([]string, len(rd.Blobs))
	for i, b := range rd.Blobs {
		blobs[i] = b.BlobID
	}
	fmt.Fprintf(os.Stderr, "%s: RAFS v6 OK: %d inodes, %d files, %d chunks (%d unique), %d blobs", path, sum.Inodes, sum.Files, sum.Chunks, sum.UniqueChunks, sum.Blobs)
	if blobDir != "" {
		fmt.Fprintf(os.Stderr, ", all chunk digests verified")
	}
	fmt.Fprintln(os.Stderr)
	return writeJSON(outJSON, map[string]any{
		"version":    version.Version,
		"bootstrap":  path,
		"blobs":      blobs,
		"fs_version": "6",
		"compressor": rd.Ext.Flags.Compressor().String(),
		"trace":      map[string]any{"stats": sum},
	})
}

func newInspectCmd() *cobra.Command {
	var log logFlags
	var boot, blobDir, config, request string
	c := &cobra.Command{
		Use:   "inspect [flags] BOOTSTRAP",
		Short: "Print information about a bootstrap",
		Long: `Print information about a RAFS v6 bootstrap.

With -R/--request, print the answer to one request, as upstream:
  stats          JSON: inode count plus file, chunk, blob and dedup statistics
  blobs          JSON array of {blob_id, readahead_offset, readahead_size,
                 decompressed_size, compressed_size}
  prefetch       JSON array of {inode, path}
  ls             the entries of the root directory
  stat FILE      attributes and chunks of FILE (an absolute path)
  summary        a human-readable summary (the default without -R)`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			done, err := log.setup()
			if err != nil {
				return err
			}
			defer done()
			path, err := bootstrapArg(args, boot)
			if err != nil {
				return err
			}
			return runInspect(cmd.Context(), path, request)
		},
	}
	log.register(c)
	c.Flags().StringVarP(&boot, "bootstrap", "B", "", "bootstrap to inspect (deprecated: pass it as an argument)")
	c.Flags().StringVarP(&blobDir, "blob-dir", "D", "", "directory of blobs (unused)")
	c.Flags().StringVarP(&config, "config", "C", "", "configuration file (ignored)")
	c.Flags().StringVarP(&request, "request", "R", "", "request: stats, blobs, prefetch, ls, stat FILE, summary")
	return c
}

func printJSON(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}

func runInspect(ctx context.Context, path, request string) error {
	rd, f, err := openBootstrap(ctx, path)
	if err != nil {
		return err
	}
	defer f.Close()
	fields := strings.Fields(request)
	cmd := "summary"
	if len(fields) > 0 {
		cmd = fields[0]
	}
	switch cmd {
	case "stats":
		sum, err := builder.Check(ctx, rd, nil)
		if err != nil {
			return err
		}
		return printJSON(sum)
	case "blobs":
		out := []map[string]any{}
		for _, b := range rd.Blobs {
			out = append(out, map[string]any{
				"blob_id":           b.BlobID,
				"readahead_offset":  0,
				"readahead_size":    0,
				"decompressed_size": b.UncompressedSize,
				"compressed_size":   b.CompressedSize,
			})
		}
		return printJSON(out)
	case "prefetch":
		paths := map[uint64]string{}
		rd.Walk(ctx, func(p string, ino *rafs.DiskInode) error {
			if _, ok := paths[ino.Nid]; !ok {
				paths[ino.Nid] = p
			}
			return nil
		})
		out := []map[string]any{}
		for _, nid := range rd.Prefetch {
			out = append(out, map[string]any{"inode": nid, "path": paths[nid]})
		}
		return printJSON(out)
	case "ls":
		root, err := rd.Inode(ctx, rd.RootNid())
		if err != nil {
			return err
		}
		ents, err := rd.ReadDir(ctx, root)
		if err != nil {
			return err
		}
		for _, e := range ents {
			sign := " "
			switch e.Type {
			case 1:
				sign = "-"
			case 2:
				sign = "d"
			case 7:
				sign = "l"
			}
			fmt.Printf("%s    %-8d %q\n", sign, e.Nid, e.Name)
		}
		return nil
	case "stat":
		if len(fields) != 2 {
			return errors.New("usage: -R 'stat FILE'")
		}
		return statFile(ctx, rd, fields[1])
	case "summary":
		return printSummary(ctx, path, rd)
	case "cd", "chunk", "icheck":
		return notSupported("inspect request " + cmd)
	}
	return fmt.Errorf("unknown inspect request %q (want stats, blobs, prefetch, ls, stat FILE or summary)", request)
}

func statFile(ctx context.Context, rd *rafs.Reader, p string) error {
	ino, err := rd.Lookup(ctx, p)
	if err != nil {
		return err
	}
	fmt.Printf("Inode Number:       %d\nFile Type:          %s\nMode:               %#o\nSize:               %d\nNlink:              %d\nUID:                %d\nGID:                %d\nMtime:              %d.%09d\n",
		ino.Nid, rafs.TypeName(ino.Mode), ino.Mode, ino.Size, ino.Nlink, ino.UID, ino.GID, ino.Mtime, ino.MtimeNsec)
	for _, x := range ino.Xattrs {
		fmt.Printf("Xattr:              %s=%q\n", x.Name, x.Value)
	}
	if ino.IsSymlink() {
		t, err := rd.Readlink(ctx, ino)
		if err != nil {
			return err
		}
		fmt.Printf("Symlink:            %s\n", t)
	}
	if !ino.IsRegular() {
		return nil
	}
	addrs, err := rd.ChunkAddrs(ctx, ino)
	if err != nil {
		return err
	}
	table, _ := rd.ChunkTable(ctx)
	type key struct{ b, i uint32 }
	byIdx := map[key]rafs.ChunkInfo{}
	for _, c := range table {
		byIdx[key{c.BlobIndex, c.Index}] = c
	}
	fmt.Println("Chunk list:")
	for i, a := range addrs {
		c := byIdx[key{a.BlobIndex, a.CIIndex}]
		fmt.Printf("  %d -> file offset: %d, chunk index: %d, blob: %s\n     compressed offset: %d size: %d, uncompressed offset: %d size: %d, digest: %s\n",
			i, uint64(i)*uint64(rd.ChunkSize()), a.CIIndex, rd.Blobs[a.BlobIndex].BlobID,
			c.CompressedOffset, c.CompressedSize, c.UncompressedOffset, c.UncompressedSize, c.Digest)
	}
	return nil
}

func printSummary(ctx context.Context, path string, rd *rafs.Reader) error {
	sum, err := builder.Check(ctx, rd, nil)
	if err != nil {
		return err
	}
	fmt.Printf("Bootstrap:          %s (%d bytes, RAFS v6)\n", filepath.Base(path), rd.Size())
	fmt.Printf("Compressor:         %s\nDigester:           %s\nChunk size:         %d KiB\n", rd.Ext.Flags.Compressor(), rd.Ext.Flags.Digester(), rd.ChunkSize()/1024)
	fmt.Printf("Inodes:             %d (%d files, %d directories, %d symlinks, %d other, %d extra hard links)\n", sum.Inodes, sum.Files, sum.Dirs, sum.Symlinks, sum.Others, sum.Hardlinks)
	fmt.Printf("Chunks:             %d (%d unique)\n", sum.Chunks, sum.UniqueChunks)
	fmt.Printf("File bytes:         %d (unique chunk bytes %d, dedup ratio %.2f)\n", sum.Bytes, sum.UniqueBytes, sum.DedupRatio)
	fmt.Printf("Prefetch entries:   %d\nBlobs:              %d\n", len(rd.Prefetch), len(rd.Blobs))
	ids := make([]int, len(rd.Blobs))
	for i := range ids {
		ids[i] = i
	}
	sort.Ints(ids)
	for _, i := range ids {
		b := rd.Blobs[i]
		fmt.Printf("  [%d] %s  chunks %d, compressed %d, uncompressed %d, %s/%s, features %#x\n", i, b.BlobID, b.ChunkCount, b.CompressedSize, b.UncompressedSize, b.Compressor, b.Digester, uint32(b.Features))
	}
	return nil
}
