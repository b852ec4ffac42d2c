package checker

import (
	"context"
	"log/slog"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/registry"
	"github.com/nydus-go/nydus/pkg/storage"
)

// opened is a resolved reference and the registry client it was
// opened with.
type opened struct {
	im     *imageref.Image
	client *imageref.Client
	// Index or Image, Digest, Name and Dir are im's.
	Index  v1.ImageIndex
	Image  v1.Image
	Digest v1.Hash
	Name   name.Reference
	Dir    string
}

func (o *opened) close() {
	if o != nil {
		o.im.Close()
	}
}

// what names the image in messages: `target "REF"`.
func (o *opened) what() string { return o.im.What }

// host is the registry host ("" for a layout).
func (o *opened) host() string { return o.im.Host() }

// openRef resolves ref (role "target" or "source").
func openRef(ctx context.Context, role string, ref imageref.Ref, ro imageref.RegistryOptions, log *slog.Logger) (*opened, error) {
	c, err := imageref.NewClient(ro)
	if err != nil {
		return nil, err
	}
	im, err := imageref.Open(ctx, ref, c, imageref.OpenOptions{Role: role, Log: log})
	if err != nil {
		return nil, err
	}
	return &opened{im: im, client: c, Index: im.Index, Image: im.Image, Digest: im.Digest, Name: im.Name, Dir: im.Dir}, nil
}

// rangeReader returns a reader of the image's blobs by id.
func (o *opened) rangeReader(ctx context.Context) (storage.RangeReader, func(), error) {
	if o.Name == nil {
		fs := &storage.FileSource{Dir: filepath.Join(o.Dir, "blobs", "sha256")}
		return fs, func() { fs.Close() }, nil
	}
	c, err := registry.NewForRepository(ctx, o.Name.Context(), o.client.RegistryOptions().Keychain, o.client.Transport())
	if err != nil {
		return nil, nil, imageref.Describe(o.what(), o.host(), err)
	}
	return c, func() {}, nil
}

func platformOfImage(img v1.Image) *v1.Platform {
	cf, err := img.ConfigFile()
	if err != nil || cf == nil {
		return nil
	}
	return cf.Platform()
}

// samePlatform compares os/arch/variant.
func samePlatform(a, b *v1.Platform) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.OS == b.OS && a.Architecture == b.Architecture && a.Variant == b.Variant
}

// isLayerMediaType reports the media types of ordinary OCI/Docker layers.
func isLayerMediaType(mt types.MediaType) bool {
	switch mt {
	case types.DockerLayer, types.DockerUncompressedLayer, types.OCILayer, types.OCILayerZStd,
		types.OCIUncompressedLayer, types.OCIRestrictedLayer, types.OCIUncompressedRestrictedLayer:
		return true
	}
	return false
}
