package interop

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/nydus-snapshotter/pkg/converter"
	"github.com/containerd/nydus-snapshotter/pkg/layout"
	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/nydus-go/nydus/internal/treetest"
	ours "github.com/nydus-go/nydus/pkg/converter"
	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestNydusifyOutputAcceptedUpstream converts an image with our
// converter and checks it with upstream's rules: nydusify's manifest
// rules, nydus-snapshotter's layer detection, containerd's unpack of the
// bootstrap layer followed by the snapshotter's bootstrap detection, and
// the snapshotter converter's ToC parsing of every blob.
func TestNydusifyOutputAcceptedUpstream(t *testing.T) {
	ctx := context.Background()
	srv := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img := empty.Image
	for _, files := range layers() {
		b := treetest.Tar(files)
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	cf, _ := img.ConfigFile()
	cf.OS, cf.Architecture = "linux", "amd64"
	img, _ = mutate.ConfigFile(img, cf)
	src, _ := name.ParseReference(host+"/app:1", name.Insecure)
	if err := remote.Write(src, img); err != nil {
		t.Fatal(err)
	}
	ro := imageref.RegistryOptions{PlainHTTP: true}
	s, _ := imageref.Parse(host+"/app:1", false, ro)
	d, _ := imageref.Parse(host+"/app:nydus", false, ro)
	if _, err := ours.Convert(ctx, s, d, ours.Options{Source: ro, Target: ro, WorkDir: t.TempDir(), BatchSize: 0x100000}); err != nil {
		t.Fatal(err)
	}
	nimg, err := remote.Image(d.Name)
	if err != nil {
		t.Fatal(err)
	}
	mf, _ := nimg.Manifest()
	ncf, _ := nimg.ConfigFile()

	// nydusify check's manifest rules (contrib/nydusify/pkg/checker/rule/manifest.go).
	if len(ncf.RootFS.DiffIDs) != len(mf.Layers) {
		t.Fatalf("diff_ids %d != layers %d", len(ncf.RootFS.DiffIDs), len(mf.Layers))
	}
	last := mf.Layers[len(mf.Layers)-1]
	for i, l := range mf.Layers {
		desc := ocispec.Descriptor{MediaType: string(l.MediaType), Digest: digest.Digest(l.Digest.String()), Size: l.Size, Annotations: l.Annotations}
		if i == len(mf.Layers)-1 {
			if !converter.IsNydusBootstrap(desc) || l.Annotations["containerd.io/snapshot/nydus-fs-version"] != "6" {
				t.Fatalf("bootstrap layer not recognised: %+v", l)
			}
			continue
		}
		if !converter.IsNydusBlob(desc) {
			t.Fatalf("blob layer %d not recognised: %+v", i, l)
		}
		// The snapshotter converter finds the layer's own bootstrap and
		// chunk info through our ToC.
		rl, _ := remote.Layer(d.Name.Context().Digest(l.Digest.String()))
		rc, _ := rl.Compressed()
		raw, _ := io.ReadAll(rc)
		rc.Close()
		var boot bytes.Buffer
		if _, err := converter.UnpackEntry(newReaderAt(raw), converter.EntryBootstrap, &boot); err != nil {
			t.Fatalf("blob %d: UnpackEntry(image.boot): %v", i, err)
		}
		if v, err := layout.DetectFsVersion(boot.Bytes()); err != nil || v != layout.RafsV6 {
			t.Fatalf("blob %d: inline bootstrap version %q %v", i, v, err)
		}
	}

	// containerd unpacks the bootstrap layer; the snapshotter then finds
	// image/image.boot and detects RAFS v6.
	rl, _ := remote.Layer(d.Name.Context().Digest(last.Digest.String()))
	rc, _ := rl.Uncompressed()
	dir := t.TempDir()
	if _, err := archive.Apply(ctx, dir, rc); err != nil {
		t.Fatalf("containerd archive.Apply: %v", err)
	}
	rc.Close()
	bootPath := filepath.Join(dir, layout.BootstrapFile)
	head, err := os.ReadFile(bootPath)
	if err != nil {
		t.Fatalf("%s: %v", layout.BootstrapFile, err)
	}
	if v, err := layout.DetectFsVersion(head[:layout.MaxSuperBlockSize]); err != nil || v != layout.RafsV6 {
		t.Fatalf("bootstrap version %q %v", v, err)
	}
	metas, _ := filepath.Glob(filepath.Join(dir, "image", "*.blob.meta"))
	if len(metas) != len(mf.Layers)-1 {
		t.Fatalf("bootstrap layer has %d blob.meta files for %d blobs", len(metas), len(mf.Layers)-1)
	}
}
