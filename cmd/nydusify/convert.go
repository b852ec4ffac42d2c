package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/cobra"

	"github.com/nydus-go/nydus/internal/atomicfile"
	"github.com/nydus-go/nydus/internal/cliutil"
	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/converter"
	"github.com/nydus-go/nydus/pkg/imageref"
)

type convertFlags struct {
	source, target                 string
	sourceInsecure, targetInsecure bool
	plainHTTP                      bool
	platform                       string
	allPlatforms                   bool
	mergePlatform                  bool
	oci                            bool
	compressor                     string
	level                          int
	chunkSize                      string
	batchSize                      string
	batchLimit                     string
	fsVersion                      string
	prefetchPatterns               bool
	prefetchDir                    string
	chunkDict                      string
	chunkDictInsecure              bool
	buildCache                     string
	buildCacheTag                  string
	buildCacheMax                  int
	buildCacheInsecure             bool
	buildCacheVersion              string
	workDir                        string
	outputJSON                     string
	sourceArchive, targetArchive   string
	pushRetryCount                 int
	net                            netFlags
	pushRetryDelay                 string
	independent                    bool
	dedupScope                     string
	targetSuffix                   string
	nydusImage                     string
	fsAlignChunk                   bool
	ociRef, withReferrer, reverse  bool
	zranSpan                       string
	concurrency                    int
}

func newConvertCmd(lo *logOptions) *cobra.Command {
	f := &convertFlags{}
	c := &cobra.Command{
		Use:   "convert --source REF --target REF",
		Short: "Convert an OCI or Docker image into a Nydus image",
		Long: `Convert an OCI or Docker image (or every selected platform of an index)
into a Nydus image, in the layout nydus-snapshotter's converter writes:
Nydus blob layers, then a bootstrap layer holding image/image.boot.

REF is a registry reference, or oci:DIR[:TAG] for an OCI layout directory;
--source-archive/--target-archive name OCI layout tar archives instead. A
plain-HTTP registry, including one on 127.0.0.1, needs --plain-http.

Layers are packed against the chunks of the layers below them (dedup),
files under half of --batch-size are compressed in batches of at most
--batch-limit compressed bytes (a lazy read of one file fetches its whole
batch), and --build-cache reuses layers converted earlier, on any machine.`,
		Example: `  nydusify convert --source 127.0.0.1:5000/app:1 --target 127.0.0.1:5000/app:1-nydus --plain-http
  nydusify convert --source app:1 --target app:1-nydus --build-cache registry.example/cache:nydus
  echo /usr/bin | nydusify convert --source oci:./layout:app --target oci:./out:app --prefetch-patterns`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runConvert(cmd, f, lo)
		},
	}
	fl := c.Flags()
	f.net.register(fl)
	fl.StringVar(&f.source, "source", "", "source image reference")
	fl.StringVar(&f.target, "target", "", "target image reference")
	fl.BoolVar(&f.sourceInsecure, "source-insecure", false, "skip TLS verification for the source registry")
	fl.BoolVar(&f.targetInsecure, "target-insecure", false, "skip TLS verification for the target registry")
	fl.BoolVar(&f.plainHTTP, "plain-http", false, "use plain HTTP for every registry (needed for 127.0.0.1 too)")
	fl.StringVar(&f.platform, "platform", "linux/"+runtimeArch(), "platforms to convert, comma separated (os/arch[/variant])")
	fl.BoolVar(&f.allPlatforms, "all-platforms", false, "convert every platform of an index")
	fl.BoolVar(&f.mergePlatform, "merge-platform", false, "write an index holding the source and the Nydus manifests")
	fl.BoolVar(&f.mergePlatform, "multi-platform", false, "alias of --merge-platform")
	fl.BoolVar(&f.oci, "oci", false, "write OCI media types for Docker sources")
	fl.StringVar(&f.compressor, "compressor", "zstd", "chunk compressor: none, lz4_block, zstd")
	fl.IntVar(&f.level, "compression-level", 0, "zstd level 1–22 (default 3, as upstream; 7 makes images about 1% smaller for about 45% more CPU)")
	fl.StringVar(&f.chunkSize, "fs-chunk-size", "0x100000", "chunk size, a power of two from 0x1000 to 0x1000000")
	fl.StringVar(&f.chunkSize, "chunk-size", "0x100000", "alias of --fs-chunk-size")
	fl.StringVar(&f.batchSize, "batch-size", "0x100000", "compress files smaller than half of this in batches (a lazy read fetches a whole batch); 0 disables (upstream's default); capped at the chunk size")
	fl.StringVar(&f.batchLimit, "batch-limit", "0x10000", "split a batch that stores more than this many compressed bytes into smaller ones (a lazy read fetches a whole batch); 0: no limit")
	fl.StringVar(&f.fsVersion, "fs-version", "6", "RAFS version; only 6")
	fl.BoolVar(&f.prefetchPatterns, "prefetch-patterns", false, "read absolute paths to prefetch from stdin")
	fl.StringVar(&f.prefetchDir, "prefetch-dir", "", "prefetch this directory (conflicts with --prefetch-patterns)")
	fl.StringVar(&f.chunkDict, "chunk-dict", "", "reuse chunks of another Nydus image: bootstrap:registry:REF or bootstrap:local:PATH")
	fl.StringVar(&f.dedupScope, "dedup-scope", "", "repositories whose chunk dictionaries the conversion dedups against, comma-separated (default: the target repository), or none; the target's dictionary gets the image's chunks")
	fl.BoolVar(&f.chunkDictInsecure, "chunk-dict-insecure", false, "skip TLS verification for the chunk dict registry")
	fl.StringVar(&f.buildCache, "build-cache", "", "build cache image reference (reused across machines)")
	fl.StringVar(&f.buildCacheTag, "build-cache-tag", "", "tag of the build cache image (overrides the one in --build-cache)")
	fl.IntVar(&f.buildCacheMax, "build-cache-max-records", converter.MaxCacheRecords, "maximum build cache entries (1–200)")
	fl.BoolVar(&f.buildCacheInsecure, "build-cache-insecure", false, "skip TLS verification for the build cache registry")
	fl.StringVar(&f.buildCacheVersion, "build-cache-version", "", "accepted for compatibility; the cache format is versioned internally")
	fl.StringVar(&f.workDir, "work-dir", "./tmp", "directory for temporary files (removed afterwards if created)")
	fl.StringVar(&f.outputJSON, "output-json", "", "write a JSON report to this file")
	fl.StringVar(&f.sourceArchive, "source-archive", "", "source OCI layout tar archive (instead of --source)")
	fl.StringVar(&f.targetArchive, "target-archive", "", "target OCI layout tar archive (instead of --target)")
	fl.IntVar(&f.pushRetryCount, "push-retry-count", 3, "retries of failed registry requests")
	fl.StringVar(&f.pushRetryDelay, "push-retry-delay", "1s", "first delay between retries (doubles each time)")
	fl.BoolVar(&f.independent, "independent", false, "pack every layer independently, as upstream (no cross-layer dedup; layer blobs then do not depend on lower layers)")
	fl.StringVar(&f.targetSuffix, "target-suffix", "", "derive --target by appending this to the source tag")
	fl.StringVar(&f.nydusImage, "nydus-image", "", "ignored: nydusify builds in-process")
	fl.BoolVar(&f.fsAlignChunk, "fs-align-chunk", false, "ignored: RAFS v6 always aligns chunks")
	fl.BoolVar(&f.ociRef, "oci-ref", false, "reference the source's gzip layers instead of converting them (zran): only small ref blobs and the bootstrap are pushed, and the original layers are mounted into the target repository if they are not there; implies --oci")
	fl.StringVar(&f.zranSpan, "zran-span", "0x40000", "with --oci-ref: compressed bytes between zran checkpoints (a context holds about half): a lazy read fetches from its context's start, and each context adds the bytes of its window that its data reads to the ref blob (upstream uses 0x100000)")
	fl.BoolVar(&f.withReferrer, "with-referrer", false, "link to the source manifest with an OCI subject (not supported yet)")
	fl.BoolVar(&f.reverse, "reverse", false, "convert a Nydus image back to OCI (not supported yet)")
	fl.IntVar(&f.concurrency, "concurrency", 3, "layers downloaded at the same time")
	return c
}

func runtimeArch() string { return runtime.GOARCH }

func runConvert(cmd *cobra.Command, f *convertFlags, lo *logOptions) error {
	ctx := cmd.Context()
	log := lo.logger()
	for flag, on := range map[string]bool{"--with-referrer": f.withReferrer, "--reverse": f.reverse} {
		if on {
			return fmt.Errorf("%s is not supported yet", flag)
		}
	}
	if f.fsVersion != "6" {
		return fmt.Errorf("invalid --fs-version %q: only RAFS v6 is supported", f.fsVersion)
	}
	if f.nydusImage != "" {
		log.Warn("--nydus-image is ignored: nydusify builds in-process")
	}
	if (f.source == "") == (f.sourceArchive == "") {
		return errors.New("give exactly one of --source and --source-archive")
	}
	if f.target == "" && f.targetSuffix != "" && f.source != "" {
		f.target = f.source + f.targetSuffix
	}
	if (f.target == "") == (f.targetArchive == "") {
		return errors.New("give exactly one of --target (or --target-suffix) and --target-archive")
	}
	if f.allPlatforms && cmd.Flags().Changed("platform") {
		return errors.New("--all-platforms conflicts with --platform")
	}
	if f.prefetchPatterns && f.prefetchDir != "" {
		return errors.New("--prefetch-patterns conflicts with --prefetch-dir")
	}
	delay, err := time.ParseDuration(f.pushRetryDelay)
	if err != nil {
		return fmt.Errorf("invalid --push-retry-delay %q: %w", f.pushRetryDelay, err)
	}
	srcRO := imageref.RegistryOptions{PlainHTTP: f.plainHTTP, SkipTLSVerify: f.sourceInsecure, Retries: f.pushRetryCount, RetryDelay: delay}
	dstRO := imageref.RegistryOptions{PlainHTTP: f.plainHTTP, SkipTLSVerify: f.targetInsecure, Retries: f.pushRetryCount, RetryDelay: delay}
	f.net.apply(&srcRO, &dstRO)
	o := converter.Options{
		AllPlatforms: f.allPlatforms, MergePlatform: f.mergePlatform, OCI: f.oci,
		CompressionLevel: f.level, Independent: f.independent, Source: srcRO, Target: dstRO,
		Concurrency: f.concurrency, Log: log,
	}
	if !f.allPlatforms {
		if o.Platforms, err = imageref.ParsePlatforms(f.platform); err != nil {
			return err
		}
	}
	if f.targetArchive != "" && f.dedupScope != "" && f.dedupScope != "none" {
		return errors.New("--dedup-scope needs a registry --target: an archive target has no dictionary")
	}
	switch f.dedupScope {
	case "":
	case "none":
		o.NoDedupScope = true
	default:
		for _, s := range strings.Split(f.dedupScope, ",") {
			var opts []name.Option
			if f.plainHTTP || f.targetInsecure {
				opts = append(opts, name.Insecure)
			}
			repo, err := name.NewRepository(strings.TrimSpace(s), opts...)
			if err != nil {
				return fmt.Errorf("invalid --dedup-scope repository %q: %w", s, err)
			}
			o.DedupScope = append(o.DedupScope, repo)
		}
	}
	if o.Compressor, err = compress.ParseAlgorithm(f.compressor); err != nil || o.Compressor == compress.GZip {
		return fmt.Errorf("invalid --compressor %q (want none, lz4_block or zstd)", f.compressor)
	}
	cs, err := cliutil.ParseNumber("chunk-size", f.chunkSize)
	if err != nil {
		return err
	}
	bs, err := cliutil.ParseNumber("batch-size", f.batchSize)
	if err != nil {
		return err
	}
	if bs > cs {
		if cmd.Flags().Changed("batch-size") {
			return fmt.Errorf("invalid --batch-size %#x: larger than the chunk size %#x", bs, cs)
		}
		bs = cs
	}
	bl, err := cliutil.ParseNumber("batch-limit", f.batchLimit)
	if err != nil {
		return err
	}
	if bl > math.MaxUint32 {
		return fmt.Errorf("invalid --batch-limit %#x: larger than 4 GiB", bl)
	}
	o.ChunkSize, o.BatchSize, o.BatchLimit = uint32(cs), uint32(bs), uint32(bl)
	if f.ociRef {
		for _, fl := range []string{"compressor", "compression-level", "batch-size", "batch-limit", "chunk-dict", "build-cache", "independent"} {
			if cmd.Flags().Changed(fl) {
				return fmt.Errorf("--%s does not apply to --oci-ref: the original gzip layers are read in place, nothing is recompressed", fl)
			}
		}
		if f.dedupScope != "" && f.dedupScope != "none" {
			return errors.New("--dedup-scope does not apply to --oci-ref: the original gzip layers are read in place")
		}
		span, err := cliutil.ParseNumber("zran-span", f.zranSpan)
		if err != nil {
			return err
		}
		if span < 64<<10 || span > 64<<20 {
			return fmt.Errorf("invalid --zran-span %#x: want 64 KiB to 64 MiB", span)
		}
		if !f.oci {
			log.Warn("--oci-ref writes OCI media types (--oci), as upstream does")
		}
		o.OCIRef, o.ZranSpan, o.OCI, o.BatchSize, o.BatchLimit = true, int64(span), true, 0, 0
	} else if cmd.Flags().Changed("zran-span") {
		return errors.New("--zran-span needs --oci-ref")
	}
	switch {
	case f.prefetchPatterns:
		sc := bufio.NewScanner(cmd.InOrStdin())
		for sc.Scan() {
			if p := strings.TrimSpace(sc.Text()); strings.HasPrefix(p, "/") {
				o.Prefetch = append(o.Prefetch, filepath.Clean(p))
			}
		}
		if len(o.Prefetch) == 0 {
			o.Prefetch = []string{"/"}
		}
	case f.prefetchDir != "":
		o.Prefetch = []string{filepath.Clean("/" + f.prefetchDir)}
	}
	src, err := imageref.Parse(firstNonEmpty(f.source, f.sourceArchive), f.sourceArchive != "", srcRO)
	if err != nil {
		return err
	}
	dst, err := imageref.Parse(firstNonEmpty(f.target, f.targetArchive), f.targetArchive != "", dstRO)
	if err != nil {
		return err
	}
	if f.chunkDict != "" {
		ro := imageref.RegistryOptions{PlainHTTP: f.plainHTTP, SkipTLSVerify: f.chunkDictInsecure, Retries: f.pushRetryCount, RetryDelay: delay}
		f.net.apply(&ro)
		if o.ChunkDict, err = converter.OpenChunkDict(ctx, f.chunkDict, ro); err != nil {
			return err
		}
	}
	if f.buildCache != "" {
		ro := imageref.RegistryOptions{PlainHTTP: f.plainHTTP, SkipTLSVerify: f.buildCacheInsecure, Retries: f.pushRetryCount, RetryDelay: delay}
		f.net.apply(&ro)
		var opts []name.Option
		if f.plainHTTP {
			opts = append(opts, name.Insecure)
		}
		ref, err := name.ParseReference(f.buildCache, opts...)
		if err != nil {
			return fmt.Errorf("invalid --build-cache %q: %w", f.buildCache, err)
		}
		if f.buildCacheTag != "" {
			ref = ref.Context().Tag(f.buildCacheTag)
		}
		if o.Cache, err = converter.NewBuildCache(ref, ro, f.buildCacheMax); err != nil {
			return err
		}
	}
	created := false
	if f.workDir != "" {
		if _, err := os.Stat(f.workDir); os.IsNotExist(err) {
			created = true
		}
		if err := os.MkdirAll(f.workDir, 0o755); err != nil {
			return fmt.Errorf("--work-dir: %w", err)
		}
		if created {
			defer os.RemoveAll(f.workDir)
		}
		o.WorkDir = f.workDir
	}
	prog := newProgress(isTerminal(), log)
	o.Events = prog.event
	res, err := converter.Convert(ctx, src, dst, o)
	prog.stop()
	if err != nil {
		return err
	}
	printSummary(os.Stderr, res)
	if f.outputJSON != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := atomicfile.WriteFile(f.outputJSON, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// printSummary writes the per-image summary table.
func printSummary(w io.Writer, r *converter.Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "PLATFORM\tLAYERS\tCACHED\tSOURCE\tNYDUS\tDEDUPLICATED\tTIME\n")
	for _, im := range r.Images {
		cached := 0
		for _, l := range im.Layers {
			if l.Cached {
				cached++
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%.1fs\n", im.Platform, len(im.Layers), cached,
			human(im.SourceSize), human(im.NydusSize), human(int64(im.DedupBytes)), im.ConvertSeconds)
	}
	tw.Flush()
	fmt.Fprintf(w, "converted %s -> %s (%s) in %.1fs\n", r.Source, r.Target, r.TargetDigest, r.Seconds)
}
