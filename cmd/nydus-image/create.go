package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/spf13/cobra"

	"github.com/nydus-go/nydus/internal/atomicfile"
	"github.com/nydus-go/nydus/internal/cliutil"
	"github.com/nydus-go/nydus/internal/version"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/rafs"
)

type createFlags struct {
	log            logFlags
	typ            string
	sourceType     string
	bootstrap      string
	blob           string
	blobDir        string
	inlineMeta     bool
	inlineBoot     bool
	features       string
	compressor     string
	level          int
	digester       string
	chunkSize      string
	batchSize      string
	batchLimit     string
	alignedChunk   bool
	fsVersion      string
	whiteout       string
	parent         string
	parentBlobDir  string
	chunkDict      string
	prefetchPolicy string
	repeatable     bool
	outputJSON     string
	encrypt        bool
	blobID         string
	blobCacheDir   string
	config         string
	disableCheck   bool
	blobOffset     string
	blobDataSize   string
	externalBlob   string
	attributes     string
	chunkSizeSet   bool // --chunk-size was given (estargztoc-ref's default differs)
	zranSpan       string
}

func newCreateCmd() *cobra.Command {
	f := &createFlags{}
	c := &cobra.Command{
		Use:   "create [flags] SOURCE",
		Short: "Create a RAFS v6 bootstrap and data blob from a tar stream or a directory",
		Long: `Create a Nydus layer from SOURCE.

SOURCE is a directory (--type dir-rafs, the default), an uncompressed tar
stream (--type tar-rafs) or a gzip-compressed tar (--type targz-rafs). It
may be a FIFO. The blob is written strictly sequentially, so --blob may be
a FIFO too.

--type estargztoc-ref (alias stargz_index) builds only a bootstrap (-B, or
-D DIR for DIR/<its sha256>) that references an eStargz or zstd:chunked
layer as its data blob, unchanged: SOURCE is the layer file (its id and
size are read from it), or its TOC JSON with --blob-id and --blob-data-size
(hex), as upstream takes it. Chunks are the layer's own (gzip, sha256, 4 MiB
unless --chunk-size gives the layer's eStargz chunk size). Plain gzip and
plain zstd layers have no TOC and are refused.

--type targz-ref reads a gzip-compressed tar in place (zran): its data is
not recompressed or copied. The bootstrap's only blob is SOURCE itself
(named by its sha256); --blob receives a small "ref" blob holding the
chunk-info table with zran contexts, one every --zran-span compressed bytes
or so, each a deflate block boundary and the bytes of the 32 KiB window
before it that the data reads; chunks are sha256-digested. nydusd fetches
a chunk by reading its context's part of the gzip file and inflating it.
With --bootstrap, the bootstrap names the ref blob by digest; with
--blob-inline-meta, merge does (--blob-digests).

Supported --type values: dir-rafs (alias directory), tar-rafs, targz-rafs,
targz-ref, estargztoc-ref (alias stargz_index). Not supported yet:
estargz-rafs, estargz-ref, tar-tarfs.

Chunks are deduplicated against this layer, --parent-bootstrap and
--chunk-dict. With --parent-bootstrap, every chunk of the parent's blobs
found in --parent-blob-dir (default --blob-dir) is reused too, including
chunks of files the parent deleted or overwrote. With --prefetch-policy fs or blob, absolute paths to prefetch
are read from stdin until EOF: they fill the bootstrap's prefetch table,
and their files' data goes first in the blob, in list order (the hot set
that nydusd streams at mount; the data is spooled to a temporary file
while the tar is read).`,
		Example: `  # what nydus-snapshotter's converter runs for each layer
  nydus-image create --type tar-rafs --blob-inline-meta --features blob-toc \
      --fs-version 6 --whiteout-spec none --prefetch-policy fs \
      --blob layer.blob layer.tar < /dev/null

  # a separate bootstrap plus a kernel-mountable cache file
  nydus-image create -t tar-rafs -B image.boot -b image.blob \
      --blob-cache-dir cache/ layer.tar`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			done, err := f.log.setup()
			if err != nil {
				return err
			}
			defer done()
			f.chunkSizeSet = cmd.Flags().Changed("chunk-size")
			return runCreate(cmd.Context(), f, args[0], cmd.InOrStdin())
		},
	}
	fl := c.Flags()
	f.log.register(c)
	fl.StringVarP(&f.typ, "type", "t", "", "conversion type: dir-rafs (default), directory, tar-rafs, targz-rafs, targz-ref, estargztoc-ref, stargz_index")
	fl.StringVar(&f.zranSpan, "zran-span", "0x40000", "with --type targz-ref: compressed bytes between zran checkpoints (a lazy read fetches from its context's start; upstream uses 0x100000)")
	fl.StringVar(&f.sourceType, "source-type", "", "alias of --type")
	fl.StringVarP(&f.bootstrap, "bootstrap", "B", "", "file to write the RAFS bootstrap to (conflicts with --blob-inline-meta)")
	fl.StringVarP(&f.blob, "blob", "b", "", "file (or FIFO) to write the data blob to")
	fl.StringVarP(&f.blobDir, "blob-dir", "D", "", "directory to store the data blob in, named by its sha256")
	fl.BoolVar(&f.inlineMeta, "blob-inline-meta", false, "embed the bootstrap (and chunk info) in the data blob")
	fl.BoolVar(&f.inlineBoot, "inline-bootstrap", false, "alias of --blob-inline-meta")
	fl.StringVar(&f.features, "features", "", "comma-separated blob features; only blob-toc is defined")
	fl.StringVar(&f.compressor, "compressor", "zstd", "chunk compressor: none, lz4_block, zstd")
	fl.IntVar(&f.level, "compression-level", 0, "zstd level 1–22 (default 3, as upstream; 1 is ~30% faster for ~6% larger output)")
	fl.StringVar(&f.digester, "digester", "blake3", "chunk digest algorithm: blake3, sha256")
	fl.StringVar(&f.chunkSize, "chunk-size", "0x100000", "chunk size, a power of two from 0x1000 to 0x1000000 (decimal or hex)")
	fl.StringVar(&f.batchSize, "batch-size", "0", "pack files smaller than half of this into batches compressed together; a power of two from 0x1000 to the chunk size, 0 to disable")
	fl.StringVar(&f.batchLimit, "batch-limit", "0", "split a batch that stores more than this many compressed bytes into smaller ones (a lazy read fetches a whole batch); needs --batch-size; 0: no limit")
	fl.BoolVar(&f.alignedChunk, "aligned-chunk", false, "align uncompressed chunk offsets to 4 KiB (always on for RAFS v6)")
	fl.StringVarP(&f.fsVersion, "fs-version", "v", "6", "RAFS version; only 6 is supported")
	fl.StringVar(&f.whiteout, "whiteout-spec", "oci", "whiteout specification: oci, overlayfs, none")
	fl.StringVar(&f.parent, "parent-bootstrap", "", "bootstrap of the lower layers to build on top of")
	fl.StringVar(&f.parentBlobDir, "parent-blob-dir", "", "directory of the parent's blobs named by id (default --blob-dir): every chunk they hold is reused, even of files the parent deleted")
	fl.StringVar(&f.chunkDict, "chunk-dict", "", "chunk dictionary: bootstrap=PATH or PATH")
	fl.StringVar(&f.prefetchPolicy, "prefetch-policy", "none", "prefetch policy: fs, blob, none (fs and blob read paths from stdin)")
	fl.BoolVar(&f.repeatable, "repeatable", false, "produce reproducible output (always on)")
	fl.StringVarP(&f.outputJSON, "output-json", "J", "", "write a JSON build report to this file")
	// Listed although it only errors: nydus-snapshotter's converter
	// detects the features it may use from this help text.
	fl.BoolVarP(&f.encrypt, "encrypt", "E", false, "NOT SUPPORTED YET, fails with an error (listed for nydus-snapshotter's feature detection)")
	fl.StringVar(&f.blobID, "blob-id", "", "blob id: the layer's sha256, with --type estargztoc-ref and a TOC JSON SOURCE (otherwise not supported yet)")
	fl.StringVar(&f.blobCacheDir, "blob-cache-dir", "", "also write <blob_id>.blob.data (uncompressed, 4K-aligned: kernel/nydusd cache layout) and <blob_id>.blob.meta here")
	fl.StringVarP(&f.config, "config", "C", "", "configuration file (ignored by create)")
	fl.BoolVar(&f.disableCheck, "disable-check", false, "skip validating the output")
	fl.StringVar(&f.blobOffset, "blob-offset", "0", "offset of the blob in the output (only 0 is supported)")
	fl.StringVar(&f.blobDataSize, "blob-data-size", "", "size of the layer in hex, with --type estargztoc-ref and a TOC JSON SOURCE (otherwise not supported yet)")
	fl.StringVar(&f.externalBlob, "external-blob", "", "external blob (not supported yet)")
	fl.StringVar(&f.attributes, "attributes", "", "attributes file (not supported yet)")
	for _, h := range []string{"inline-bootstrap", "source-type", "disable-check", "blob-offset"} {
		fl.MarkHidden(h)
	}
	return c
}

func notSupported(what string) error {
	return cliutil.Exit(1, fmt.Errorf("%s is not supported yet", what))
}

func runCreate(ctx context.Context, f *createFlags, source string, stdin io.Reader) (retErr error) {
	typ := f.typ
	if f.sourceType != "" {
		if typ != "" && typ != f.sourceType {
			return fmt.Errorf("--type %q and --source-type %q disagree", typ, f.sourceType)
		}
		typ = f.sourceType
	}
	if typ == "" {
		typ = "dir-rafs"
	}
	switch typ {
	case "dir-rafs", "directory", "tar-rafs", "targz-rafs":
	case "estargztoc-ref", "stargz_index":
		return runCreateTOCRef(ctx, f, source, stdin)
	case "targz-ref":
	case "estargz-rafs", "estargz-ref", "tar-tarfs":
		return notSupported("--type " + typ)
	default:
		return fmt.Errorf("invalid --type %q (want dir-rafs, directory, tar-rafs or targz-rafs)", typ)
	}
	if f.encrypt {
		return notSupported("--encrypt")
	}
	for name, v := range map[string]string{"--blob-id": f.blobID, "--blob-data-size": f.blobDataSize, "--external-blob": f.externalBlob, "--attributes": f.attributes} {
		if v != "" {
			return notSupported(name)
		}
	}
	if f.blobOffset != "0" && f.blobOffset != "" {
		return notSupported("a non-zero --blob-offset")
	}
	if f.fsVersion != "6" {
		return fmt.Errorf("invalid --fs-version %q: only RAFS v6 is supported", f.fsVersion)
	}
	inline := f.inlineMeta || f.inlineBoot
	toc := false
	for _, ft := range strings.Split(f.features, ",") {
		switch strings.TrimSpace(ft) {
		case "":
		case "blob-toc":
			toc = true
		default:
			return fmt.Errorf("invalid --features value %q (only blob-toc is defined)", ft)
		}
	}
	if inline && f.bootstrap != "" {
		return errors.New("--bootstrap conflicts with --blob-inline-meta: the bootstrap is embedded in the blob")
	}
	if !inline && f.bootstrap == "" {
		return errors.New("--bootstrap is required unless --blob-inline-meta is given")
	}
	if f.blob == "" && f.blobDir == "" {
		return errors.New("one of --blob or --blob-dir is required")
	}
	opts := builder.Options{InlineMeta: inline, TOC: toc, CompressionLevel: f.level, Warn: func(m string) { logger.Warn(m) }}
	var err error
	zranRef := typ == "targz-ref"
	var span uint64
	if zranRef {
		// Upstream takes gzip in place of any --compressor for ref
		// types; the data is the gzip file itself.
		if f.compressor != "zstd" && f.compressor != "gzip" {
			logger.Warn("--compressor is ignored with --type targz-ref: the layer's gzip data is read in place", "compressor", f.compressor)
		}
		if f.digester != "" && f.digester != "sha256" && f.digester != "blake3" {
			return fmt.Errorf("invalid --digester %q", f.digester)
		}
		if f.batchSize != "0" && f.batchSize != "" || f.parent != "" || f.chunkDict != "" || f.blobCacheDir != "" {
			return errors.New("--batch-size, --parent-bootstrap, --chunk-dict and --blob-cache-dir do not apply to --type targz-ref: the layer's gzip data is read in place")
		}
		if span, err = cliutil.ParseNumber("zran-span", f.zranSpan); err != nil {
			return err
		}
		if span < 64<<10 || span > 64<<20 {
			return fmt.Errorf("invalid --zran-span %#x: want 64 KiB to 64 MiB", span)
		}
		f.compressor, f.digester = "zstd", "sha256"
	}
	if opts.Compressor, err = compress.ParseAlgorithm(f.compressor); err != nil {
		return fmt.Errorf("invalid --compressor: %w", err)
	}
	if opts.Compressor == compress.GZip {
		return errors.New("invalid --compressor gzip: use none, lz4_block or zstd")
	}
	if opts.Digester, err = digester.ParseAlgorithm(f.digester); err != nil {
		return fmt.Errorf("invalid --digester: %w", err)
	}
	cs, err := cliutil.ParseNumber("chunk-size", f.chunkSize)
	if err != nil {
		return err
	}
	if err := builder.ValidateSize("--chunk-size", cs); err != nil {
		return err
	}
	opts.ChunkSize = uint32(cs)
	bs, err := cliutil.ParseNumber("batch-size", f.batchSize)
	if err != nil {
		return err
	}
	if bs != 0 {
		if err := builder.ValidateSize("--batch-size", bs); err != nil {
			return err
		}
		if bs > cs {
			return fmt.Errorf("invalid --batch-size %#x: larger than --chunk-size %#x", bs, cs)
		}
		opts.BatchSize = uint32(bs)
	}
	bl, err := cliutil.ParseNumber("batch-limit", f.batchLimit)
	if err != nil {
		return err
	}
	if bl != 0 && bs == 0 {
		return fmt.Errorf("invalid --batch-limit %#x: it needs --batch-size", bl)
	}
	if bl > math.MaxUint32 {
		return fmt.Errorf("invalid --batch-limit %#x: larger than 4 GiB", bl)
	}
	opts.BatchLimit = uint32(bl)
	if opts.Whiteout, err = builder.ParseWhiteoutSpec(f.whiteout); err != nil {
		return err
	}
	in, err := openLayerInputs(ctx, stdin, f.prefetchPolicy, f.parent, f.parentBlobDir, f.blobDir, f.chunkDict)
	if err != nil {
		return err
	}
	defer in.Close()
	opts.Prefetch, opts.Parent, opts.ParentBlobs, opts.ChunkDict = in.prefetch, in.parent, in.parentBlobs, in.dict

	// Source.
	src, closeSrc, err := openSource(ctx, typ, source)
	if err != nil {
		return err
	}
	defer closeSrc()

	// Blob output.
	blobPath := f.blob
	if blobPath == "" {
		if err := os.MkdirAll(f.blobDir, 0o755); err != nil {
			return fmt.Errorf("create --blob-dir: %w", err)
		}
		blobPath = filepath.Join(f.blobDir, "blob")
	}
	out, err := createOutput(blobPath)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			out.abort()
		}
	}()
	var cache *atomicfile.File
	if f.blobCacheDir != "" {
		if err := os.MkdirAll(f.blobCacheDir, 0o755); err != nil {
			return fmt.Errorf("create --blob-cache-dir: %w", err)
		}
		if cache, err = atomicfile.Create(filepath.Join(f.blobCacheDir, "blob.data"), 0o644); err != nil {
			return err
		}
		defer cache.Abort()
		opts.BlobCache = cache
	}

	var res *builder.Result
	if zranRef {
		zr, err := builder.CreateZranRef(ctx, src, out, int64(span), opts)
		if err != nil {
			return fmt.Errorf("source %s: %w", source, err)
		}
		logger.Info("zran index", "layer", "sha256:"+zr.DataBlobID, "layer_bytes", zr.DataSize, "contexts", zr.Contexts,
			"ref_blob_bytes", zr.BlobSize, "ref_blob_percent", fmt.Sprintf("%.2f", 100*float64(zr.BlobSize)/float64(max(zr.DataSize, 1))))
		res = &zr.Result
	} else if res, err = builder.Create(ctx, src, out, opts); err != nil {
		return err
	}
	// Publish outputs.
	final := ""
	if f.blob == "" {
		final = filepath.Join(f.blobDir, res.BlobID)
	}
	if err := out.commit(final); err != nil {
		return err
	}
	committed = true
	if cache != nil {
		id := res.BlobID
		if err := cache.Truncate(int64(res.UncompressedSize)); err != nil {
			return fmt.Errorf("size blob cache file: %w", err)
		}
		if err := cache.CommitAs(filepath.Join(f.blobCacheDir, id+".blob.data")); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(f.blobCacheDir, id+".blob.meta"), res.BlobMeta, 0o644); err != nil {
			return err
		}
	}
	if f.bootstrap != "" {
		if err := writeBootstrap(f.bootstrap, res.Bootstrap); err != nil {
			return err
		}
	}
	blobs := res.Blobs
	if inline {
		// The embedded bootstrap names its blob with a placeholder; report
		// the real id.
		for i, b := range blobs {
			if b == rafs.PlaceholderBlobID {
				blobs[i] = res.BlobID
			}
		}
	}
	if blobs == nil {
		blobs = []string{}
	}
	return writeJSON(f.outputJSON, map[string]any{
		"version":    version.Version,
		"bootstrap":  f.bootstrap,
		"blobs":      blobs,
		"blob_id":    res.BlobID,
		"blob_size":  res.BlobSize,
		"fs_version": "6",
		"compressor": opts.Compressor.String(),
		"trace":      map[string]any{"stats": res.Stats},
	})
}

func writeBootstrap(path string, b []byte) error {
	if isStream(path) {
		return os.WriteFile(path, b, 0)
	}
	return atomicfile.WriteFile(path, b, 0o644)
}

// openSource opens SOURCE as an uncompressed tar stream.
func openSource(ctx context.Context, typ, source string) (io.Reader, func(), error) {
	switch typ {
	case "dir-rafs", "directory":
		st, err := os.Stat(source)
		if err != nil {
			return nil, nil, fmt.Errorf("source: %w", err)
		}
		if !st.IsDir() {
			return nil, nil, fmt.Errorf("source %s is not a directory (use --type tar-rafs for tar files)", source)
		}
		r := builder.DirTar(ctx, source)
		return r, func() { r.Close() }, nil
	}
	f, err := os.Open(source)
	if err != nil {
		return nil, nil, fmt.Errorf("source: %w", err)
	}
	br := bufio.NewReaderSize(f, 1<<20)
	if typ == "targz-rafs" {
		zr, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("source %s: not a gzip stream: %w", source, err)
		}
		return zr, func() { zr.Close(); f.Close() }, nil
	}
	return br, func() { f.Close() }, nil
}
