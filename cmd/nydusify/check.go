package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nydus-go/nydus/internal/cliutil"
	"github.com/nydus-go/nydus/pkg/checker"
	"github.com/nydus-go/nydus/pkg/imageref"
)

func newCheckCmd(lo *logOptions) *cobra.Command {
	var source, target, platform, workDir, nydusImage, nydusd string
	var srcInsecure, dstInsecure, plainHTTP, multi, all bool
	var nf netFlags
	c := &cobra.Command{
		Use:   "check --target REF [--source REF]",
		Short: "Check a Nydus image: manifest rules, bootstrap, chunk digests, and its files against the source",
		Long: `Check a Nydus image:
  - the manifest rules upstream's check applies (layer media types and
    annotations, bootstrap layer last, diff_ids);
  - the bootstrap's structure and blob table;
  - every chunk of every blob, read with ranged requests and verified
    against its digest;
  - with --source (or the OCI manifest of a merged index), the file tree:
    paths, types, modes, owners, sizes, symlink targets, xattrs, devices,
    hard links and content digests of the source image with its layers
    applied, against the Nydus image.
It exits non-zero and lists the differences when anything is wrong.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			log := lo.logger()
			if target == "" {
				return errors.New("--target is required")
			}
			sro := imageref.RegistryOptions{PlainHTTP: plainHTTP, SkipTLSVerify: srcInsecure}
			dro := imageref.RegistryOptions{PlainHTTP: plainHTTP, SkipTLSVerify: dstInsecure}
			nf.apply(&sro, &dro)
			o := checker.Options{MultiPlatform: multi, AllPlatforms: all, Source: sro, Target: dro, Nydusd: nydusd, Log: log}
			if !all {
				p, err := imageref.ParsePlatforms(platform)
				if err != nil {
					return err
				}
				o.Platforms = p
			}
			if nydusImage != "" {
				log.Warn("--nydus-image is ignored: check reads bootstraps in-process")
			}
			dst, err := imageref.Parse(target, false, dro)
			if err != nil {
				return err
			}
			var src *imageref.Ref
			if source != "" {
				s, err := imageref.Parse(source, false, sro)
				if err != nil {
					return err
				}
				src = &s
			}
			reports, err := checker.Check(ctx, src, dst, o)
			if err != nil {
				return err
			}
			failed := 0
			for _, r := range reports {
				if r.OK() {
					cmp := "no source to compare with"
					if r.Compared {
						cmp = "files identical to " + r.Source
					}
					fmt.Fprintf(os.Stderr, "%s (%s): OK: %d files, %d dirs, %d bytes, %d chunks in %d blobs verified; %s\n",
						r.Target, r.Platform, r.Files, r.Dirs, r.Bytes, r.ChunksRead, r.Blobs, cmp)
					continue
				}
				failed++
				fmt.Fprintf(os.Stderr, "%s (%s): FAILED\n", r.Target, r.Platform)
				for _, p := range r.Problems() {
					fmt.Fprintf(os.Stderr, "  %s\n", p)
				}
			}
			if failed > 0 {
				return cliutil.Exit(1, fmt.Errorf("check failed for %d of %d images: %s", failed, len(reports), strings.TrimSpace(firstProblem(reports))))
			}
			return nil
		},
	}
	fl := c.Flags()
	nf.register(fl)
	fl.StringVar(&source, "source", "", "source image to compare the file tree with")
	fl.StringVar(&target, "target", "", "Nydus image to check")
	fl.BoolVar(&srcInsecure, "source-insecure", false, "skip TLS verification for the source registry")
	fl.BoolVar(&dstInsecure, "target-insecure", false, "skip TLS verification for the target registry")
	fl.BoolVar(&plainHTTP, "plain-http", false, "use plain HTTP for every registry")
	fl.BoolVar(&multi, "multi-platform", false, "require an OCI and a Nydus manifest for each checked platform")
	fl.BoolVar(&all, "all-platforms", false, "check every Nydus manifest of an index")
	fl.StringVar(&platform, "platform", "linux/"+runtimeArch(), "platforms to check, comma separated")
	fl.StringVar(&workDir, "work-dir", "./output", "accepted for compatibility (check needs no temporary files)")
	fl.StringVar(&nydusImage, "nydus-image", "", "ignored: check reads bootstraps in-process")
	fl.StringVar(&nydusd, "nydusd", "", "also compare through a nydusd mount (not supported yet)")
	return c
}

func firstProblem(rs []checker.Report) string {
	for _, r := range rs {
		if p := r.Problems(); len(p) > 0 {
			return p[0]
		}
	}
	return ""
}
