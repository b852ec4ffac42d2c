package converter

import (
	"bytes"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// blobLayer is a layer whose bytes are already final (a Nydus blob or the
// bootstrap layer): in a file or in memory.
type blobLayer struct {
	path   string
	data   []byte
	digest v1.Hash
	diffID v1.Hash
	size   int64
	mt     types.MediaType
}

func (l *blobLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *blobLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *blobLayer) Size() (int64, error)                { return l.size, nil }
func (l *blobLayer) MediaType() (types.MediaType, error) { return l.mt, nil }
func (l *blobLayer) Compressed() (io.ReadCloser, error) {
	if l.path == "" {
		return io.NopCloser(bytes.NewReader(l.data)), nil
	}
	return os.Open(l.path)
}
func (l *blobLayer) Uncompressed() (io.ReadCloser, error) { return l.Compressed() }

// nydusImage is the converted image: a manifest whose layers are blob
// layers (possibly remote layers that can be mounted across
// repositories) and the bootstrap layer.
type nydusImage struct {
	manifest []byte
	config   []byte
	mt       types.MediaType
	layers   []v1.Layer
	boot     []byte // the merged bootstrap
	// refs are the original layers a zran image reads: they are not in
	// its manifest, but must be in its repository.
	refs []v1.Layer
}

var _ v1.Image = (*nydusImage)(nil)

func (i *nydusImage) Layers() ([]v1.Layer, error)               { return i.layers, nil }
func (i *nydusImage) MediaType() (types.MediaType, error)       { return i.mt, nil }
func (i *nydusImage) Size() (int64, error)                      { return int64(len(i.manifest)), nil }
func (i *nydusImage) ConfigName() (v1.Hash, error)              { return partial.ConfigName(i) }
func (i *nydusImage) ConfigFile() (*v1.ConfigFile, error)       { return partial.ConfigFile(i) }
func (i *nydusImage) RawConfigFile() ([]byte, error)            { return i.config, nil }
func (i *nydusImage) Digest() (v1.Hash, error)                  { return partial.Digest(i) }
func (i *nydusImage) Manifest() (*v1.Manifest, error)           { return partial.Manifest(i) }
func (i *nydusImage) RawManifest() ([]byte, error)              { return i.manifest, nil }
func (i *nydusImage) LayerByDiffID(h v1.Hash) (v1.Layer, error) { return i.LayerByDigest(h) }
func (i *nydusImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	for _, l := range i.layers {
		if d, err := l.Digest(); err == nil && d == h {
			return l, nil
		}
		if d, err := l.DiffID(); err == nil && d == h {
			return l, nil
		}
	}
	if cn, err := i.ConfigName(); err == nil && cn == h {
		return &blobLayer{data: i.config, digest: cn, diffID: cn, size: int64(len(i.config)), mt: types.OCIConfigJSON}, nil
	}
	return nil, fmt.Errorf("layer %s not in image", h)
}
