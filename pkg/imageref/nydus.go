package imageref

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/errdefs"
)

// Media types and annotations of a Nydus image, as upstream writes them
// (nydus-snapshotter pkg/converter/constant.go, nydusify utils).
const (
	// MediaTypeNydusBlob is the media type of a Nydus data blob layer.
	MediaTypeNydusBlob = "application/vnd.oci.image.layer.nydus.blob.v1"
	// MediaTypeOCILayerGzip is the media type of the bootstrap layer.
	MediaTypeOCILayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
	// MediaTypeDockerLayerGzip is the bootstrap layer media type for
	// Docker sources converted without --oci.
	MediaTypeDockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	// ArtifactTypeNydus marks the Nydus manifest in a merged index.
	ArtifactTypeNydus = "application/vnd.nydus.image.manifest.v1+json"
	// ManifestConfigNydus is the config media type of a Nydus manifest in
	// a merged index, so that stock containerd skips it.
	ManifestConfigNydus = "application/vnd.nydus.image.config.v1+json"
	// OSFeatureNydus is the older index marker of Nydus manifests.
	OSFeatureNydus = "nydus.remoteimage.v1"

	AnnotationNydusBlob = "containerd.io/snapshot/nydus-blob"
	// AnnotationNydusRef marks the blob layer of a zran layer (nydusify
	// --oci-ref): its value is the digest of the original gzip layer the
	// bootstrap reads, which must be in the same repository.
	AnnotationNydusRef       = "containerd.io/snapshot/nydus-ref"
	AnnotationNydusBootstrap = "containerd.io/snapshot/nydus-bootstrap"
	AnnotationFSVersion      = "containerd.io/snapshot/nydus-fs-version"
	AnnotationSourceDigest   = "containerd.io/snapshot/nydus-source-digest"
	AnnotationSourceRef      = "containerd.io/snapshot/nydus-source-reference"
	AnnotationBuilderVersion = "containerd.io/snapshot/nydus-builder-version"
	AnnotationUncompressed   = "containerd.io/uncompressed"

	// BootstrapPath is the bootstrap's path inside the bootstrap layer.
	BootstrapPath = "image/image.boot"
)

// IsNydusDesc reports whether an index entry is marked as a Nydus
// manifest (artifactType, or the older os.features marker).
func IsNydusDesc(d v1.Descriptor) bool {
	if d.ArtifactType == ArtifactTypeNydus {
		return true
	}
	return d.Platform != nil && slices.Contains(d.Platform.OSFeatures, OSFeatureNydus)
}

// IsNydusManifest reports whether a manifest looks like a Nydus image:
// it has a Nydus blob or bootstrap layer, or the Nydus config type.
func IsNydusManifest(mf *v1.Manifest) bool {
	if mf.Config.MediaType == ManifestConfigNydus {
		return true
	}
	for _, l := range mf.Layers {
		if l.MediaType == MediaTypeNydusBlob || l.Annotations[AnnotationNydusBlob] == "true" ||
			l.Annotations[AnnotationNydusBootstrap] == "true" {
			return true
		}
	}
	return false
}

// ReadBootstrap returns the RAFS bootstrap of a Nydus image: the
// image/image.boot of its bootstrap layer (the layer annotated
// AnnotationNydusBootstrap), at most maxSize bytes.
func ReadBootstrap(ctx context.Context, img v1.Image, maxSize int64) ([]byte, error) {
	mf, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	var boot *v1.Descriptor
	for i, l := range mf.Layers {
		if l.Annotations[AnnotationNydusBootstrap] == "true" {
			boot = &mf.Layers[i]
		}
	}
	if boot == nil {
		return nil, fmt.Errorf("not a Nydus image: no layer annotated %s: %w", AnnotationNydusBootstrap, errdefs.ErrInvalid)
	}
	l, err := img.LayerByDigest(boot.Digest)
	if err != nil {
		return nil, fmt.Errorf("bootstrap layer %s: %w", boot.Digest, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, fmt.Errorf("bootstrap layer %s: %w", boot.Digest, err)
	}
	defer rc.Close()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return ExtractBootstrap(rc, maxSize)
}

// ExtractBootstrap returns image/image.boot (or the legacy image.boot)
// from a bootstrap layer (gzip-compressed or plain tar), as the
// snapshotter does.
func ExtractBootstrap(r io.Reader, maxSize int64) ([]byte, error) {
	src, _, closeFn, err := compress.NewStreamReader(r)
	if err != nil {
		return nil, fmt.Errorf("bootstrap layer: %w", err)
	}
	defer closeFn()
	tr := tar.NewReader(src)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil, fmt.Errorf("bootstrap layer has no %s", BootstrapPath)
		}
		if err != nil {
			return nil, fmt.Errorf("bootstrap layer: %w", err)
		}
		if h.Name == BootstrapPath || h.Name == "image.boot" || h.Name == "./"+BootstrapPath {
			if h.Size > maxSize {
				return nil, fmt.Errorf("bootstrap layer: %s is %d bytes, limit %d", h.Name, h.Size, maxSize)
			}
			// Grow with the data actually read, not the size claimed.
			b, err := io.ReadAll(io.LimitReader(tr, h.Size))
			if err != nil {
				return nil, fmt.Errorf("bootstrap layer: read %s: %w", h.Name, err)
			}
			if int64(len(b)) != h.Size {
				return nil, fmt.Errorf("bootstrap layer: %s is truncated", h.Name)
			}
			return b, nil
		}
	}
}
