package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/awslabs/soci-snapshotter/soci"
	"github.com/awslabs/soci-snapshotter/soci/store"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/plugins/content/local"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
)

// summary is what -json writes.
type summary struct {
	Image    string             `json:"image"`    // DST
	Digest   string             `json:"digest"`   // of DST's image index
	Manifest string             `json:"manifest"` // the annotated image manifest
	Index    ocispec.Descriptor `json:"index"`    // the SOCI index manifest
	Ztocs    []ztocInfo         `json:"ztocs"`
	Skipped  []string           `json:"skipped,omitempty"` // layers with no zTOC
	Fetch    time.Duration      `json:"fetch_ns"`
	Build    time.Duration      `json:"build_ns"`
	Push     time.Duration      `json:"push_ns"`
}

type ztocInfo struct {
	Layer     string `json:"layer"`
	LayerSize int64  `json:"layer_size"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// convert makes an image in a registry a SOCI-enabled image, as upstream's
// `soci convert` followed by a push does. It copies SRC into a temporary
// OCI layout, builds a zTOC for every gzip layer of at least
// -min-layer-size bytes and a SOCI index manifest (v2) with the soci
// package, and pushes DST: an image index holding SRC's manifest, annotated
// with the SOCI index's digest, and the SOCI index. The layers are not
// copied: DST must be a tag in SRC's repository, where they already are.
// -json writes a summary (the SOCI index, its zTOCs, the layers left out,
// the times); the soci package itself prints one line per zTOC on stdout.
func convert(args []string) error {
	fl := flag.NewFlagSet("convert", flag.ExitOnError)
	plainHTTP := fl.Bool("plain-http", false, "use plain HTTP for the registry")
	minLayer := fl.Int64("min-layer-size", 10<<20, "build no zTOC for layers smaller than this (compressed bytes; upstream's default is 10 MiB); the snapshotter pulls those whole")
	span := fl.Int64("span-size", 4<<20, "uncompressed bytes between two zTOC checkpoints (upstream's default)")
	work := fl.String("work-dir", "", "directory for the temporary OCI layout (default: a new one under $TMPDIR, removed afterwards)")
	jsonOut := fl.String("json", "", "write a JSON summary to this file")
	fl.Usage = func() {
		fmt.Fprintf(fl.Output(), "usage: soci convert [flags] SRC DST\n\nSRC and DST are tags in the same repository of a registry.\n\n")
		fl.PrintDefaults()
	}
	fl.Parse(args)
	if fl.NArg() != 2 {
		fl.Usage()
		os.Exit(2)
	}
	src, err := registry.ParseReference(fl.Arg(0))
	if err != nil {
		return err
	}
	dst, err := registry.ParseReference(fl.Arg(1))
	if err != nil {
		return err
	}
	if src.Registry != dst.Registry || src.Repository != dst.Repository {
		return fmt.Errorf("%s and %s: want two tags of one repository (the SOCI-enabled image shares the layers)", fl.Arg(0), fl.Arg(1))
	}
	if dst.ValidateReferenceAsDigest() == nil {
		return fmt.Errorf("%s: DST must be a tag", fl.Arg(1))
	}
	repo, err := remote.NewRepository(src.Registry + "/" + src.Repository)
	if err != nil {
		return err
	}
	repo.PlainHTTP = *plainHTTP

	dir := *work
	if dir == "" {
		if dir, err = os.MkdirTemp("", "soci-index-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	ctx := context.Background()
	sum := summary{Image: fl.Arg(1)}

	// The source image, whole, in an OCI layout that is also a containerd
	// content store (the same blobs/sha256 tree), as upstream's standalone
	// conversion does.
	t := time.Now()
	layout, err := oci.New(dir)
	if err != nil {
		return err
	}
	root, err := oras.Copy(ctx, repo, src.Reference, layout, src.Reference, oras.DefaultCopyOptions)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", fl.Arg(0), err)
	}
	sum.Fetch = time.Since(t)

	t = time.Now()
	cs, err := local.NewStore(dir)
	if err != nil {
		return err
	}
	db, err := soci.NewDB(soci.ArtifactsDbPath(dir))
	if err != nil {
		return err
	}
	blobs := &store.SociStore{Store: layout}
	b, err := soci.NewIndexBuilder(cs, blobs, soci.WithMinLayerSize(*minLayer), soci.WithSpanSize(*span), soci.WithArtifactsDb(db))
	if err != nil {
		return err
	}
	bctx, done, err := blobs.BatchOpen(ctx)
	if err != nil {
		return err
	}
	converted, err := b.Convert(bctx, images.Image{Name: fl.Arg(0), Target: root})
	done(ctx)
	if err != nil {
		return fmt.Errorf("building the SOCI index of %s: %w", fl.Arg(0), err)
	}
	sum.Build = time.Since(t)
	sum.Digest = converted.Digest.String()

	// Push: what the registry has (the layers and the config) is skipped.
	t = time.Now()
	if err := layout.Tag(ctx, *converted, dst.Reference); err != nil {
		return err
	}
	if _, err := oras.Copy(ctx, layout, dst.Reference, repo, dst.Reference, oras.DefaultCopyOptions); err != nil {
		return fmt.Errorf("pushing %s: %w", fl.Arg(1), err)
	}
	sum.Push = time.Since(t)

	if err := describe(ctx, layout, *converted, &sum); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "soci convert: %s: SOCI index %s, %d zTOCs, %d layers skipped; fetch %.2fs, build %.2fs, push %.2fs\n",
		sum.Image, sum.Index.Digest, len(sum.Ztocs), len(sum.Skipped), sum.Fetch.Seconds(), sum.Build.Seconds(), sum.Push.Seconds())
	if *jsonOut != "" {
		b, err := json.MarshalIndent(sum, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(*jsonOut, append(b, '\n'), 0o644)
	}
	return nil
}

// describe fills in the SOCI index, its zTOCs and the layers left out.
func describe(ctx context.Context, layout *oci.Store, converted ocispec.Descriptor, sum *summary) error {
	var idx ocispec.Index
	if err := readJSON(ctx, layout, converted, &idx); err != nil {
		return err
	}
	var img ocispec.Manifest
	for _, m := range idx.Manifests {
		switch m.ArtifactType {
		case soci.SociIndexArtifactTypeV2:
			sum.Index = m
		case "":
			sum.Manifest = m.Digest.String()
			if err := readJSON(ctx, layout, m, &img); err != nil {
				return err
			}
		}
	}
	if sum.Index.Digest == "" {
		return errors.New("the converted image holds no SOCI index")
	}
	var si ocispec.Manifest
	if err := readJSON(ctx, layout, sum.Index, &si); err != nil {
		return err
	}
	indexed := map[string]bool{}
	for _, z := range si.Layers {
		l := z.Annotations[soci.IndexAnnotationImageLayerDigest]
		indexed[l] = true
		zi := ztocInfo{Layer: l, Digest: z.Digest.String(), Size: z.Size}
		for _, il := range img.Layers {
			if il.Digest.String() == l {
				zi.LayerSize = il.Size
			}
		}
		sum.Ztocs = append(sum.Ztocs, zi)
	}
	for _, l := range img.Layers {
		if !indexed[l.Digest.String()] {
			sum.Skipped = append(sum.Skipped, l.Digest.String())
		}
	}
	return nil
}

func readJSON(ctx context.Context, layout *oci.Store, desc ocispec.Descriptor, v any) error {
	rc, err := layout.Fetch(ctx, desc)
	if err != nil {
		return err
	}
	defer rc.Close()
	b, err := content.ReadAll(rc, desc)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
