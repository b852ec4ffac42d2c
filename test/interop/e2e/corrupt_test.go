//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// rawManifest is a manifest pushed byte for byte.
type rawManifest struct {
	b  []byte
	mt types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.b, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mt, nil }

// corruptBootstrap copies the Nydus image src to dst with bytes [from,
// to) of its bootstrap overwritten. The bootstrap layer,
// the config's diff_ids and the manifest are all rewritten consistently,
// so the registry and containerd accept the image and only the bootstrap
// itself is bad.
func corruptBootstrap(t *testing.T, src, dst string, from, to int) string {
	t.Helper()
	sref, err := name.ParseReference(src, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	dref, err := name.ParseReference(dst, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(sref)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	raw, _ := img.RawManifest()
	json.Unmarshal(raw, &m)
	layers := m["layers"].([]any)
	last := layers[len(layers)-1].(map[string]any)
	if last["annotations"].(map[string]any)["containerd.io/snapshot/nydus-bootstrap"] != "true" {
		t.Fatalf("the last layer of %s is not the bootstrap layer", src)
	}
	ls, _ := img.Layers()
	rc, err := ls[len(ls)-1].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()

	// Rewrite the bootstrap layer's tar with image/image.boot damaged.
	var tarBuf bytes.Buffer
	tr, tw := tar.NewReader(rc), tar.NewWriter(&tarBuf)
	damaged := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		if h.Name == "image/image.boot" && len(data) > to {
			for i := from; i < to; i++ {
				data[i] = 0xa5
			}
			damaged = true
		}
		tw.WriteHeader(h)
		tw.Write(data)
	}
	tw.Close()
	if !damaged {
		t.Fatal("no image/image.boot in the bootstrap layer")
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tarBuf.Bytes())
	zw.Close()
	layer := static.NewLayer(gz.Bytes(), types.OCILayer)
	repo := dref.Context()
	if err := remote.WriteLayer(repo, layer); err != nil {
		t.Fatal(err)
	}
	ld, _ := layer.Digest()
	last["digest"], last["size"] = ld.String(), gz.Len()

	// The config's last diff_id is the uncompressed bootstrap layer's.
	cfgRaw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	json.Unmarshal(cfgRaw, &cfg)
	diffIDs := cfg["rootfs"].(map[string]any)["diff_ids"].([]any)
	diffIDs[len(diffIDs)-1] = fmt.Sprintf("sha256:%x", sha256.Sum256(tarBuf.Bytes()))
	cfgRaw, _ = json.Marshal(cfg)
	cfgBlob := static.NewLayer(cfgRaw, types.OCIConfigJSON)
	if err := remote.WriteLayer(repo, cfgBlob); err != nil {
		t.Fatal(err)
	}
	cd, _ := cfgBlob.Digest()
	c := m["config"].(map[string]any)
	c["digest"], c["size"] = cd.String(), len(cfgRaw)

	raw, _ = json.Marshal(m)
	if err := remote.Put(dref, rawManifest{raw, types.OCIManifestSchema1}); err != nil {
		t.Fatal(err)
	}
	return dst
}
