//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/nydus-go/nydus/internal/treetest"
)

// TestZranUnderContainerd: the Debian curl image converted with
// `nydusify convert --oci-ref` (zran: only ref blobs and the bootstrap
// are new; the original gzip layers are copied into the repository
// because the source is a local layout) runs under containerd with
// upstream nydus-snapshotter and our nydusd, in the default
// configuration. `curl --version` fetches at most 1.5 times the bytes
// the converted image's run fetches, the zran image adds under 5% of
// its layers to the registry, and its mounted tree equals the source
// image's applied layers.
func TestZranUnderContainerd(t *testing.T) {
	e := newEnv(t, &snOptions{})
	zref, refBytes := e.convert("curl", "zran", "--oci-ref")
	cref, _ := e.convert("curl", "conv")

	r, err := name.ParseReference(zref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	src := layoutImage(t, e.b.layout, "curl")
	srcLayers, err := src.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var layerBytes, added int64
	for i, l := range srcLayers {
		d, _ := l.Digest()
		s, _ := l.Size()
		layerBytes += s
		if got := m.Layers[i].Annotations["containerd.io/snapshot/nydus-ref"]; got != d.String() {
			t.Fatalf("blob layer %d names %q, want the original layer %s", i, got, d)
		}
		resp, err := http.Head(fmt.Sprintf("http://%s/v2/debian/blobs/%s", e.reg.Host, d))
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("the original layer %s is not in the repository: %v %v", d, err, resp)
		}
		resp.Body.Close()
	}
	for _, l := range m.Layers {
		added += l.Size
	}
	t.Logf("zran image: %d bytes of ref blobs, %d added in all for %d bytes of gzip layers (%.2f%%)", refBytes, added, layerBytes, 100*float64(added)/float64(layerBytes))
	if added*20 > layerBytes {
		t.Errorf("the zran image adds %d bytes for %d bytes of layers: more than 5%%", added, layerBytes)
	}

	fetch := func(ref, id string) int64 {
		e.rpull(ref)
		e.reg.ResetStats()
		out, _, err := e.runContainer(id, ref, "/bin/sh", "-c", "curl --version")
		if err != nil {
			t.Fatalf("%s: %v\nsnapshotter log:\n%s", ref, err, e.sn.Tail())
		}
		checkOutput(t, out, curlVersion)
		return e.reg.Stats().BlobBytesServed
	}
	zb := fetch(zref, "zran")
	cb := fetch(cref, "conv")
	t.Logf("curl --version fetched %d bytes from the zran image, %d from the converted one: %.2fx", zb, cb, float64(zb)/float64(cb))
	if zb == 0 || cb == 0 || float64(zb) > 1.5*float64(cb) {
		t.Errorf("the zran image fetched %d bytes, the converted one %d: more than 1.5x", zb, cb)
	}

	// The zran image's tree, read through its nydusd mount (the
	// converted image removed first, so the mount is the only one).
	e.mustCtr("images", "rm", "--sync", cref)
	var mounts []string
	waitFor(t, 20*time.Second, "the converted image to be unmounted", func() bool {
		mounts = fuseMountsUnder(e.snRoot)
		return len(mounts) == 1
	})
	got, err := treetest.FromDir(mounts[0], treetest.Options{IgnoreRootAttrs: true})
	if err != nil {
		t.Fatalf("walk %s: %v", mounts[0], err)
	}
	// mtimes to the second: the bootstrap keeps what the tar headers
	// give, the source tree here is read with PAX nanoseconds.
	if d := treetest.Diff(roundMtimes(appliedTree(t, src)), roundMtimes(got)); d != "" {
		t.Fatalf("the zran image's tree differs from the source image's:\n%s", d)
	}
}
