package converter

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

// TestConvertOCIRef: a zran conversion into another repository pushes
// only a ref blob per layer and the bootstrap, names each original layer
// in its blob layer's nydus-ref annotation, mounts the original layers
// into the target repository, and the image reads back (through ranged
// reads of the original gzip layers) as the OCI-applied tree.
func TestConvertOCIRef(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{})
	l1 := treetest.Tar(treetest.Sample())
	l2 := treetest.Tar([]treetest.File{
		treetest.Reg("etc/.wh.hostname", 0o644, nil),
		treetest.Reg("data/copy", 0o644, treetest.Random(1, 3<<20+12345)),
		treetest.Reg("new", 0o644, []byte("layer 2")),
	})
	registrytest.PushImage(t, r.Host+"/app:1", [][]byte{l1, l2})
	o := testOptions(t)
	o.OCIRef, o.BatchSize, o.ZranSpan = true, 0, 256<<10
	res, err := Convert(context.Background(), ref(t, r.Host+"/app:1"), ref(t, r.Host+"/zran/app:1"), o)
	if err != nil {
		t.Fatal(err)
	}
	src, err := remote.Image(ref(t, r.Host+"/app:1").Name, plainC.Options(context.Background())...)
	if err != nil {
		t.Fatal(err)
	}
	srcLayers, _ := src.Layers()
	var srcSize int64
	for _, l := range srcLayers {
		s, _ := l.Size()
		srcSize += s
	}
	p := pull(t, r, r.Host+"/zran/app:1")
	m := p.manifest
	if len(m.Layers) != 3 {
		t.Fatalf("manifest has %d layers", len(m.Layers))
	}
	var added int64
	for i, l := range m.Layers[:2] {
		orig, _ := srcLayers[i].Digest()
		if l.MediaType != imageref.MediaTypeNydusBlob || l.Annotations[imageref.AnnotationNydusRef] != orig.String() {
			t.Fatalf("blob layer %d: %+v, want nydus-ref %s", i, l, orig)
		}
		// The bootstrap's blob is the original layer; the ref blob
		// holds its chunk-info table.
		bi := p.rd.Blobs[i]
		if bi.BlobID != orig.Hex || !bi.Features.Has(blob.FeatureZran|blob.FeatureSeparate) || bi.Features.Has(blob.FeatureInlinedFSMeta) ||
			strings.TrimPrefix(l.Digest.String(), "sha256:") != hexOf(bi.MetaDigest) || bi.MetaSize != uint64(l.Size) {
			t.Fatalf("blob %d: %+v for layer %+v", i, bi, l)
		}
		// The original layer is in the target repository.
		resp, err := http.Head("http://" + r.Host + "/v2/zran/app/blobs/" + orig.String())
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("original layer %s is not in the target repository: %v %v", orig, err, resp)
		}
		resp.Body.Close()
		added += l.Size
	}
	added += m.Layers[2].Size
	if added*10 > srcSize {
		t.Fatalf("the zran image adds %d bytes for %d bytes of layers", added, srcSize)
	}
	if d := treetest.Diff(expected(t, l1, l2), p.tree); d != "" {
		t.Fatalf("converted tree differs:\n%s", d)
	}
	if res.Images[0].NydusSize != added {
		t.Fatalf("result reports %d bytes added, the manifest %d", res.Images[0].NydusSize, added)
	}

}

// TestConvertOCIRefRefusesZstd: a zstd layer cannot be read at random:
// --oci-ref refuses it, naming the layer.
func TestConvertOCIRefRefusesZstd(t *testing.T) {
	ctx := context.Background()
	r := registrytest.Start(t, registrytest.Options{})
	l1 := treetest.Tar(treetest.Sample())
	zl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(l1)), nil },
		tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, zl)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, _ := img.ConfigFile()
	cf.OS, cf.Architecture = "linux", "amd64"
	img, _ = mutate.ConfigFile(img, cf)
	if err := remote.Write(ref(t, r.Host+"/zstd:1").Name, img, plainC.Options(ctx)...); err != nil {
		t.Fatal(err)
	}
	o := testOptions(t)
	o.OCIRef, o.BatchSize = true, 0
	_, err = Convert(ctx, ref(t, r.Host+"/zstd:1"), ref(t, r.Host+"/zstd:1-ref"), o)
	if err == nil || !strings.Contains(err.Error(), "layer 0") || !strings.Contains(err.Error(), "gzip") {
		t.Fatalf("zstd layer with --oci-ref: %v", err)
	}
}

func hexOf(b [32]byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 64)
	for i, c := range b {
		out[2*i], out[2*i+1] = digits[c>>4], digits[c&15]
	}
	return string(out)
}
