package registrytest

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"sort"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Created is the creation time written into the configs and history entries
// of images built by PushImage and PushIndex, so that the same layers always
// give the same digests.
var Created = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// DefaultEnv is the Env of the configs of images built by PushImage.
var DefaultEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

// DefaultCmd is the Cmd of the configs of images built by PushImage.
var DefaultCmd = []string{"/bin/sh"}

// PushOption modifies how PushImage and PushIndex push.
type PushOption func(*pushOptions)

type pushOptions struct {
	auth   authn.Authenticator
	docker bool
}

// WithAuth pushes with the given credentials, e.g.
// authn.FromConfig(authn.AuthConfig{Username: u, Password: p}). The default
// is anonymous.
func WithAuth(a authn.Authenticator) PushOption {
	return func(o *pushOptions) { o.auth = a }
}

// WithDockerMediaTypes builds Docker schema 2 manifests, configs, layers and
// manifest lists instead of the default OCI media types.
func WithDockerMediaTypes() PushOption {
	return func(o *pushOptions) { o.docker = true }
}

func newPushOptions(opts []PushOption) *pushOptions {
	o := &pushOptions{auth: authn.Anonymous}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

// PushImage builds an image for linux/amd64 whose layers are the given
// uncompressed tar streams, gzip-compressed in order (base layer first),
// with OCI media types unless WithDockerMediaTypes is given, and pushes it
// to ref (e.g. r.Host+"/test/image:v1") over plain HTTP. The config has
// DefaultCmd, DefaultEnv, WorkingDir "/" and one history entry per layer.
// It returns the manifest digest and fails the test on any error.
func PushImage(t testing.TB, ref string, layers [][]byte, opts ...PushOption) v1.Hash {
	t.Helper()
	o := newPushOptions(opts)
	r := parseRef(t, ref)
	img := buildImage(t, layers, v1.Platform{OS: "linux", Architecture: "amd64"}, o.docker)
	if err := remote.Write(r, img, remote.WithAuth(o.auth), remote.WithContext(t.Context())); err != nil {
		t.Fatalf("registrytest: pushing %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	return d
}

// PushIndex pushes a multi-platform image index to ref. platforms maps a
// platform string "os/arch[/variant]" (e.g. "linux/amd64", "linux/arm64")
// to the uncompressed tar layers of that platform's image, built as by
// PushImage but with that platform in its config. Entries are added in
// sorted key order, each with its platform in the index descriptor. It
// returns the index digest and fails the test on any error.
func PushIndex(t testing.TB, ref string, platforms map[string][][]byte, opts ...PushOption) v1.Hash {
	t.Helper()
	o := newPushOptions(opts)
	r := parseRef(t, ref)
	keys := make([]string, 0, len(platforms))
	for k := range platforms {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	var idx v1.ImageIndex = empty.Index
	if o.docker {
		idx = mutate.IndexMediaType(idx, types.DockerManifestList)
	} else {
		idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	}
	for _, k := range keys {
		p, err := v1.ParsePlatform(k)
		if err != nil || p.OS == "" || p.Architecture == "" {
			t.Fatalf("registrytest: bad platform %q (want os/arch[/variant]): %v", k, err)
		}
		img := buildImage(t, platforms[k], *p, o.docker)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: p},
		})
	}
	if err := remote.WriteIndex(r, idx, remote.WithAuth(o.auth), remote.WithContext(t.Context())); err != nil {
		t.Fatalf("registrytest: pushing index %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	return d
}

func parseRef(t testing.TB, ref string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("registrytest: parsing reference %q: %v", ref, err)
	}
	return r
}

// buildImage assembles an image from uncompressed tar layers.
func buildImage(t testing.TB, layers [][]byte, p v1.Platform, docker bool) v1.Image {
	t.Helper()
	layerType := types.OCILayer
	img := empty.Image
	if docker {
		layerType = types.DockerLayer
	} else {
		img = mutate.MediaType(img, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	}
	cfg := &v1.ConfigFile{
		Architecture: p.Architecture,
		OS:           p.OS,
		Variant:      p.Variant,
		OSVersion:    p.OSVersion,
		Created:      v1.Time{Time: Created},
		Config: v1.Config{
			Cmd:        append([]string(nil), DefaultCmd...),
			Env:        append([]string(nil), DefaultEnv...),
			WorkingDir: "/",
		},
		RootFS: v1.RootFS{Type: "layers"},
	}
	img, err := mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	adds := make([]mutate.Addendum, 0, len(layers))
	for i, tarBytes := range layers {
		gz, err := gzipBytes(tarBytes)
		if err != nil {
			t.Fatalf("registrytest: compressing layer %d: %v", i, err)
		}
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(gz)), nil
		}, tarball.WithMediaType(layerType))
		if err != nil {
			t.Fatalf("registrytest: layer %d: %v", i, err)
		}
		adds = append(adds, mutate.Addendum{
			Layer: l,
			History: v1.History{
				Created:   v1.Time{Time: Created},
				CreatedBy: fmt.Sprintf("registrytest: layer %d of %d (%d bytes of tar)", i+1, len(layers), len(tarBytes)),
			},
		})
	}
	img, err = mutate.Append(img, adds...)
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	return img
}

func gzipBytes(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
