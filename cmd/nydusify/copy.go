package main

import (
	"errors"
	"fmt"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/spf13/cobra"

	"github.com/nydus-go/nydus/pkg/imageref"
)

func newCopyCmd(lo *logOptions) *cobra.Command {
	var source, target, platform string
	var srcInsecure, dstInsecure, plainHTTP, all bool
	var pushChunk int64
	var workDir, nydusImage string
	var nf netFlags
	c := &cobra.Command{
		Use:   "copy --source REF --target REF",
		Short: "Copy an image (manifest, bootstrap and blobs) between registries",
		Long: `Copy an image, typically a Nydus image, between registries: manifests,
config, bootstrap layer and every blob. Blobs already in the target are
skipped; blobs in another repository of the same registry are mounted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			log := lo.logger()
			if source == "" || target == "" {
				return errors.New("--source and --target are required")
			}
			if all && cmd.Flags().Changed("platform") {
				return errors.New("--all-platforms conflicts with --platform")
			}
			sro := imageref.RegistryOptions{PlainHTTP: plainHTTP, SkipTLSVerify: srcInsecure}
			dro := imageref.RegistryOptions{PlainHTTP: plainHTTP, SkipTLSVerify: dstInsecure}
			nf.apply(&sro, &dro)
			src, err := imageref.Parse(source, false, sro)
			if err != nil {
				return err
			}
			dst, err := imageref.Parse(target, false, dro)
			if err != nil {
				return err
			}
			if !src.IsRegistry() || !dst.IsRegistry() {
				return errors.New("copy works between registries; use convert for OCI layouts")
			}
			sc, err := imageref.NewClient(sro)
			if err != nil {
				return err
			}
			dc, err := imageref.NewClient(dro)
			if err != nil {
				return err
			}
			desc, err := remote.Get(src.Name, sc.Options(ctx)...)
			if err != nil {
				return imageref.Describe(fmt.Sprintf("source %q", source), src.Name.Context().RegistryStr(), err)
			}
			if desc.MediaType.IsIndex() {
				idx, err := desc.ImageIndex()
				if err != nil {
					return err
				}
				if all {
					if err := remote.WriteIndex(dst.Name, idx, dc.Options(ctx)...); err != nil {
						return fmt.Errorf("copy to %s: %w", target, err)
					}
					log.Info("copied index", "source", source, "target", target, "digest", desc.Digest)
					return nil
				}
				plats, err := imageref.ParsePlatforms(platform)
				if err != nil {
					return err
				}
				im, err := idx.IndexManifest()
				if err != nil {
					return err
				}
				for _, d := range im.Manifests {
					if d.Platform == nil || d.Platform.OS != plats[0].OS || d.Platform.Architecture != plats[0].Architecture {
						continue
					}
					// Prefer the Nydus manifest of a merged index.
					if d.ArtifactType != imageref.ArtifactTypeNydus && hasNydus(im.Manifests, d) {
						continue
					}
					img, err := idx.Image(d.Digest)
					if err != nil {
						return err
					}
					if err := remote.Write(dst.Name, img, dc.Options(ctx)...); err != nil {
						return fmt.Errorf("copy to %s: %w", target, err)
					}
					log.Info("copied image", "source", source, "target", target, "digest", d.Digest, "platform", imageref.PlatformString(d.Platform))
					return nil
				}
				return fmt.Errorf("%s: index has no manifest for %s", source, platform)
			}
			img, err := desc.Image()
			if err != nil {
				return err
			}
			if err := remote.Write(dst.Name, img, dc.Options(ctx)...); err != nil {
				return fmt.Errorf("copy to %s: %w", target, err)
			}
			fmt.Fprintf(os.Stderr, "copied %s -> %s (%s)\n", source, target, desc.Digest)
			return nil
		},
	}
	fl := c.Flags()
	nf.register(fl)
	fl.StringVar(&source, "source", "", "source image reference")
	fl.StringVar(&target, "target", "", "target image reference")
	fl.BoolVar(&srcInsecure, "source-insecure", false, "skip TLS verification for the source registry")
	fl.BoolVar(&dstInsecure, "target-insecure", false, "skip TLS verification for the target registry")
	fl.BoolVar(&plainHTTP, "plain-http", false, "use plain HTTP for every registry")
	fl.BoolVar(&all, "all-platforms", false, "copy every platform of an index")
	fl.StringVar(&platform, "platform", "linux/"+runtimeArch(), "platform to copy from an index")
	fl.Int64Var(&pushChunk, "push-chunk-size", 0, "accepted for compatibility (uploads are monolithic or streamed)")
	fl.StringVar(&workDir, "work-dir", "./tmp", "accepted for compatibility (copy needs no temporary files)")
	fl.StringVar(&nydusImage, "nydus-image", "", "ignored")
	return c
}

func hasNydus(ms []v1.Descriptor, d v1.Descriptor) bool {
	for _, m := range ms {
		if m.ArtifactType == imageref.ArtifactTypeNydus && m.Platform != nil && d.Platform != nil &&
			m.Platform.OS == d.Platform.OS && m.Platform.Architecture == d.Platform.Architecture {
			return true
		}
	}
	return false
}
