package main

import (
	"context"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/nydus-go/nydus/pkg/converter"
	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// convertInto converts src into the registry image dst (o's Source and
// Target are set to ro) and returns the converted image and its
// bootstrap, read back from the registry.
func convertInto(tb testing.TB, src, dst imageref.Ref, ro imageref.RegistryOptions, o converter.Options) (v1.Image, []byte) {
	tb.Helper()
	ctx := context.Background()
	o.Source, o.Target = ro, ro
	if o.WorkDir == "" {
		o.WorkDir = tb.TempDir()
	}
	if _, err := converter.Convert(ctx, src, dst, o); err != nil {
		tb.Fatalf("convert %s: %v", src, err)
	}
	c, err := imageref.NewClient(ro)
	if err != nil {
		tb.Fatal(err)
	}
	img, err := remote.Image(dst.Name, c.Options(ctx)...)
	if err != nil {
		tb.Fatal(err)
	}
	boot, err := imageref.ReadBootstrap(ctx, img, rafs.MaxMetadataSize)
	if err != nil {
		tb.Fatal(err)
	}
	return img, boot
}
