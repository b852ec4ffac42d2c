package converter

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

func TestMultiPlatform(t *testing.T) {
	ctx := context.Background()
	r := registrytest.Start(t, registrytest.Options{})
	amd := treetest.Tar([]treetest.File{treetest.Reg("arch", 0o644, []byte("amd64\n"))})
	arm := treetest.Tar([]treetest.File{treetest.Reg("arch", 0o644, []byte("arm64\n"))})
	registrytest.PushIndex(t, r.Host+"/multi:1", map[string][][]byte{"linux/amd64": {amd}, "linux/arm64": {arm}})

	// --all-platforms: an index of two Nydus manifests.
	o := testOptions(t)
	o.AllPlatforms = true
	res, err := Convert(ctx, ref(t, r.Host+"/multi:1"), ref(t, r.Host+"/multi:nydus"), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Images) != 2 {
		t.Fatalf("converted %d images", len(res.Images))
	}
	idx, err := remote.Index(ref(t, r.Host+"/multi:nydus").Name, plainC.Options(ctx)...)
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	if len(im.Manifests) != 2 {
		t.Fatalf("index has %d manifests", len(im.Manifests))
	}
	for _, d := range im.Manifests {
		if d.ArtifactType != imageref.ArtifactTypeNydus || len(d.Platform.OSFeatures) != 1 || d.Platform.OSFeatures[0] != imageref.OSFeatureNydus {
			t.Fatalf("nydus entry not marked: %+v", d)
		}
	}

	// --merge-platform: OCI manifests first, then the Nydus ones.
	o = testOptions(t)
	o.MergePlatform = true
	o.Platforms = []v1.Platform{{OS: "linux", Architecture: "arm64"}}
	if _, err := Convert(ctx, ref(t, r.Host+"/multi:1"), ref(t, r.Host+"/multi:merged"), o); err != nil {
		t.Fatal(err)
	}
	idx, _ = remote.Index(ref(t, r.Host+"/multi:merged").Name, plainC.Options(ctx)...)
	im, _ = idx.IndexManifest()
	if len(im.Manifests) != 2 || im.Manifests[0].ArtifactType == imageref.ArtifactTypeNydus || im.Manifests[1].ArtifactType != imageref.ArtifactTypeNydus {
		t.Fatalf("merged index %+v", im.Manifests)
	}
	// The OCI manifest is usable in the target repository, and the
	// Nydus config has the Nydus config media type.
	if _, err := idx.Image(im.Manifests[0].Digest); err != nil {
		t.Fatal(err)
	}
	nimg, _ := idx.Image(im.Manifests[1].Digest)
	mf, _ := nimg.Manifest()
	if mf.Config.MediaType != imageref.ManifestConfigNydus {
		t.Fatalf("config media type %s", mf.Config.MediaType)
	}
}

// TestOCILayoutAndArchive converts from a registry into an OCI layout
// directory, from there into an archive, and back.
func TestOCILayoutAndArchive(t *testing.T) {
	ctx := context.Background()
	r := registrytest.Start(t, registrytest.Options{})
	l := treetest.Tar(treetest.Sample())
	registrytest.PushImage(t, r.Host+"/app:1", [][]byte{l})
	dir := t.TempDir()
	// Source image into an OCI layout (our oci: extension).
	img, _ := remote.Image(ref(t, r.Host+"/app:1").Name, plainC.Options(ctx)...)
	p, _ := layout.Write(filepath.Join(dir, "src"), emptyIndex())
	p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "v1"}))
	if _, err := Convert(ctx, ref(t, "oci:"+filepath.Join(dir, "src")+":v1"), ref(t, "oci:"+filepath.Join(dir, "out")+":nydus"), testOptions(t)); err != nil {
		t.Fatal(err)
	}
	// Archive target from the layout, then push the archive to the registry.
	arch := filepath.Join(dir, "nydus.tar")
	dst, _ := imageref.Parse(arch, true, plain)
	if _, err := Convert(ctx, ref(t, "oci:"+filepath.Join(dir, "src")+":v1"), dst, testOptions(t)); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(arch); err != nil || st.Size() == 0 {
		t.Fatalf("archive: %v", err)
	}
	// A Nydus image as a source is refused with a clear error.
	if _, err := Convert(ctx, ref(t, "oci:"+filepath.Join(dir, "out")+":nydus"), ref(t, r.Host+"/x:1"), testOptions(t)); err == nil {
		t.Fatal("converting a Nydus image succeeded")
	} else {
		t.Log(err)
	}
}

// TestZstdAndUncompressedLayers converts layers compressed with zstd and
// stored uncompressed.
func TestZstdAndUncompressedLayers(t *testing.T) {
	ctx := context.Background()
	r := registrytest.Start(t, registrytest.Options{})
	l1 := treetest.Tar(treetest.Sample())
	l2 := treetest.Tar([]treetest.File{treetest.Reg("plain", 0o644, treetest.Random(9, 100000))})
	zl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(l1)), nil },
		tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd))
	if err != nil {
		t.Fatal(err)
	}
	ul := static.NewLayer(l2, types.OCIUncompressedLayer)
	img, err := mutate.AppendLayers(empty.Image, zl, ul)
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
	if _, err := Convert(ctx, ref(t, r.Host+"/zstd:1"), ref(t, r.Host+"/zstd:nydus"), testOptions(t)); err != nil {
		t.Fatal(err)
	}
	p := pull(t, r, r.Host+"/zstd:nydus")
	if d := treetest.Diff(expected(t, l1, l2), p.tree); d != "" {
		t.Fatalf("tree differs:\n%s", d)
	}
}
