package converter

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sort"

	"github.com/klauspost/compress/gzip"

	"github.com/nydus-go/nydus/pkg/compress"
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

	AnnotationNydusBlob      = "containerd.io/snapshot/nydus-blob"
	AnnotationNydusBootstrap = "containerd.io/snapshot/nydus-bootstrap"
	AnnotationFSVersion      = "containerd.io/snapshot/nydus-fs-version"
	AnnotationSourceDigest   = "containerd.io/snapshot/nydus-source-digest"
	AnnotationSourceRef      = "containerd.io/snapshot/nydus-source-reference"
	AnnotationBuilderVersion = "containerd.io/snapshot/nydus-builder-version"
	AnnotationUncompressed   = "containerd.io/uncompressed"

	// BootstrapPath is the bootstrap's path inside the bootstrap layer.
	BootstrapPath = "image/image.boot"
)

// bootstrapLayer is the gzip-compressed tar of the bootstrap layer and
// the sha256 of its uncompressed tar (its diff_id).
type bootstrapLayer struct {
	gz     []byte
	diffID string
}

// makeBootstrapLayer packs the bootstrap and each blob's `.blob.meta`
// (uncompressed CI + header, the snapshotter copies them to its cache)
// the way nydus-snapshotter does: dir image (0755), image/image.boot
// (0444), image/<blob-hex>.blob.meta. The result is deterministic.
func makeBootstrapLayer(boot []byte, metas map[string][]byte) (*bootstrapLayer, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	hdr := func(name string, mode int64, size int, typ byte) error {
		return tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(size), Typeflag: typ, Format: tar.FormatUSTAR})
	}
	if err := hdr("image", 0o755, 0, tar.TypeDir); err != nil {
		return nil, err
	}
	if err := hdr(BootstrapPath, 0o444, len(boot), tar.TypeReg); err != nil {
		return nil, err
	}
	if _, err := tw.Write(boot); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(metas))
	for id := range metas {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := metas[id]
		if err := hdr("image/"+id+".blob.meta", 0o444, len(m), tar.TypeReg); err != nil {
			return nil, err
		}
		if _, err := tw.Write(m); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw.Bytes())
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return &bootstrapLayer{gz: gz.Bytes(), diffID: "sha256:" + hex.EncodeToString(sum[:])}, nil
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
