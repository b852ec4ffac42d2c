package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nydus-go/nydus/internal/version"
	"github.com/nydus-go/nydus/pkg/builder"
)

type mergeFlags struct {
	log            logFlags
	parent         string
	parentBlobDir  string
	bootstrap      string
	blobDir        string
	chunkDict      string
	prefetchPolicy string
	outputJSON     string
	blobDigests    string
	originalIDs    string
	blobSizes      string
	tocDigests     string
	tocSizes       string
	config         string
}

func newMergeCmd() *cobra.Command {
	f := &mergeFlags{}
	c := &cobra.Command{
		Use:   "merge [flags] -B OUTPUT SOURCE...",
		Short: "Merge per-layer bootstraps into one image bootstrap",
		Long: `Merge per-layer RAFS bootstraps, lowest layer first, into one flattened
bootstrap. OCI whiteouts (.wh.NAME, .wh..wh..opq) and overlayfs whiteouts
(char 0/0 devices, trusted.overlay.opaque=y) in upper layers hide lower
entries.

A layer's blob id is taken from its bootstrap's file name (the part before
the first "."), which replaces the placeholder id of inline-meta layers.
The JSON report (--output-json) lists the referenced blobs under "blobs".
Options may follow the positional arguments.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			done, err := f.log.setup()
			if err != nil {
				return err
			}
			defer done()
			return runMerge(cmd.Context(), f, args, cmd.InOrStdin())
		},
	}
	fl := c.Flags()
	f.log.register(c)
	fl.StringVar(&f.parent, "parent-bootstrap", "", "bootstrap of an image to put the layers on top of")
	fl.StringVarP(&f.bootstrap, "bootstrap", "B", "", "output bootstrap (required)")
	fl.StringVarP(&f.blobDir, "blob-dir", "D", "", "directory of blobs named by id; with --parent-bootstrap, where the parent's blobs are looked for")
	fl.StringVar(&f.parentBlobDir, "parent-blob-dir", "", "directory of the parent's blobs named by id (default --blob-dir): a layer's chunks any of them holds are taken from there")
	fl.StringVar(&f.chunkDict, "chunk-dict", "", "chunk dictionary the layers were built with: bootstrap=PATH or PATH")
	fl.StringVar(&f.prefetchPolicy, "prefetch-policy", "none", "prefetch policy: fs, blob, none (fs and blob read paths from stdin)")
	fl.StringVarP(&f.outputJSON, "output-json", "J", "", "write a JSON report to this file")
	fl.StringVar(&f.blobDigests, "blob-digests", "", "comma-separated blob digests, one per source")
	fl.StringVar(&f.originalIDs, "original-blob-ids", "", "comma-separated blob ids, one per source")
	fl.StringVar(&f.blobSizes, "blob-sizes", "", "comma-separated blob sizes, one per source")
	fl.StringVar(&f.tocDigests, "blob-toc-digests", "", "comma-separated blob ToC digests, one per source")
	fl.StringVar(&f.tocSizes, "blob-toc-sizes", "", "comma-separated blob ToC sizes, one per source")
	fl.StringVarP(&f.config, "config", "C", "", "configuration file (ignored)")
	c.MarkFlagRequired("bootstrap")
	return c
}

func splitList(flag, s string, n int) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) != n {
		return nil, fmt.Errorf("--%s has %d entries but there are %d sources", flag, len(parts), n)
	}
	return parts, nil
}

func runMerge(ctx context.Context, f *mergeFlags, sources []string, stdin io.Reader) error {
	if f.bootstrap == "" {
		return errors.New("--bootstrap is required")
	}
	n := len(sources)
	digests, err := splitList("blob-digests", f.blobDigests, n)
	if err != nil {
		return err
	}
	ids, err := splitList("original-blob-ids", f.originalIDs, n)
	if err != nil {
		return err
	}
	sizes, err := splitList("blob-sizes", f.blobSizes, n)
	if err != nil {
		return err
	}
	tocDigests, err := splitList("blob-toc-digests", f.tocDigests, n)
	if err != nil {
		return err
	}
	tocSizes, err := splitList("blob-toc-sizes", f.tocSizes, n)
	if err != nil {
		return err
	}
	var opts builder.MergeOptions
	opts.Warn = func(m string) { logger.Warn(m) }
	in, err := openLayerInputs(ctx, stdin, f.prefetchPolicy, f.parent, f.parentBlobDir, f.blobDir, f.chunkDict)
	if err != nil {
		return err
	}
	defer in.Close()
	opts.Prefetch, opts.Parent, opts.ParentBlobs, opts.ChunkDict = in.prefetch, in.parent, in.parentBlobs, in.dict
	var srcs []builder.MergeSource
	for i, p := range sources {
		rd, sf, err := openBootstrap(ctx, p)
		if err != nil {
			return err
		}
		defer sf.Close()
		s := builder.MergeSource{Reader: rd, Path: p}
		if digests != nil {
			s.BlobDigest = digests[i]
		}
		if ids != nil {
			s.OriginalBlobID = ids[i]
		}
		if sizes != nil {
			if s.BlobSize, err = strconv.ParseUint(sizes[i], 10, 64); err != nil {
				return fmt.Errorf("--blob-sizes entry %d %q: not a decimal size", i, sizes[i])
			}
		}
		if tocDigests != nil {
			s.TOCDigest = tocDigests[i]
		}
		if tocSizes != nil {
			v, err := strconv.ParseUint(tocSizes[i], 10, 32)
			if err != nil {
				return fmt.Errorf("--blob-toc-sizes entry %d %q: not a decimal size", i, tocSizes[i])
			}
			s.TOCSize = uint32(v)
		}
		srcs = append(srcs, s)
	}
	res, err := builder.Merge(ctx, srcs, opts)
	if err != nil {
		return err
	}
	if err := writeBootstrap(f.bootstrap, res.Bootstrap); err != nil {
		return err
	}
	blobs := res.Blobs
	if blobs == nil {
		blobs = []string{}
	}
	return writeJSON(f.outputJSON, map[string]any{
		"version":            version.Version,
		"bootstrap":          f.bootstrap,
		"blobs":              blobs,
		"external_bootstrap": "",
		"external_blobs":     []string{},
		"trace":              map[string]any{},
		"fs_version":         "6",
		"compressor":         res.Options.Compressor.String(),
	})
}
