package converter

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

func convertErr(t *testing.T, src, dst string, o Options) error {
	t.Helper()
	_, err := Convert(context.Background(), ref(t, src), ref(t, dst), o)
	if err == nil {
		t.Fatalf("converting %s succeeded", src)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("multi-line error: %q", err)
	}
	t.Logf("%s: %v", src, err)
	return err
}

func TestConvertErrors(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{})
	layer := treetest.Tar([]treetest.File{treetest.Reg("f", 0o644, treetest.Random(3, 200000))})
	registrytest.PushImage(t, r.Host+"/ok:1", [][]byte{layer})
	o := testOptions(t)
	o.Source.Retries, o.Target.Retries = 1, 1
	o.Source.RetryDelay, o.Target.RetryDelay = 1, 1

	if err := convertErr(t, r.Host+"/nope:1", r.Host+"/x:1", o); !strings.Contains(err.Error(), "nope") {
		t.Fatalf("unknown ref: %v", err)
	}
	// Unreachable registry: a closed port.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := l.Addr().String()
	l.Close()
	if err := convertErr(t, dead+"/app:1", r.Host+"/x:1", o); !strings.Contains(err.Error(), dead) {
		t.Fatalf("unreachable: %v", err)
	}
	// A blob missing from storage (404) and a tampered blob (digest).
	registrytest.PushImage(t, r.Host+"/gone:1", [][]byte{treetest.Tar([]treetest.File{treetest.Reg("g", 0o644, treetest.Random(4, 300000))})})
	img, _ := remote.Image(ref(t, r.Host+"/gone:1").Name, plainC.Options(context.Background())...)
	ls, _ := img.Layers()
	d, _ := ls[0].Digest()
	os.Remove(r.BlobPath(d.String()))
	convertErr(t, r.Host+"/gone:1", r.Host+"/x:2", o)

	registrytest.PushImage(t, r.Host+"/bad:1", [][]byte{treetest.Tar([]treetest.File{treetest.Reg("h", 0o644, treetest.Random(5, 300000))})})
	img, _ = remote.Image(ref(t, r.Host+"/bad:1").Name, plainC.Options(context.Background())...)
	ls, _ = img.Layers()
	d, _ = ls[0].Digest()
	p := r.BlobPath(d.String())
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 0xff
	os.WriteFile(p, b, 0o644)
	if err := convertErr(t, r.Host+"/bad:1", r.Host+"/x:3", o); !strings.Contains(err.Error(), d.Hex[:12]) && !strings.Contains(strings.ToLower(err.Error()), "digest") {
		t.Fatalf("tampered blob: %v", err)
	}

	// An index without the requested platform.
	registrytest.PushIndex(t, r.Host+"/multi:1", map[string][][]byte{"linux/arm64": {layer}, "linux/s390x": {layer}})
	if err := convertErr(t, r.Host+"/multi:1", r.Host+"/x:4", o); !strings.Contains(err.Error(), "linux/amd64") || !strings.Contains(err.Error(), "linux/arm64") {
		t.Fatalf("platform: %v", err)
	}

	// An unsupported media type (a Windows foreign layer), from an OCI
	// layout (the registry refuses foreign layers without URLs).
	dir := t.TempDir()
	writeLayoutImage(t, dir, "win", static.NewLayer(layer, types.DockerForeignLayer))
	if err := convertErr(t, "oci:"+dir+":win", r.Host+"/x:5", o); !strings.Contains(err.Error(), "foreign") {
		t.Fatalf("foreign layer: %v", err)
	}
}

// writeLayoutImage writes a one-layer image into an OCI layout, tagged.
func writeLayoutImage(t *testing.T, dir, tag string, l v1.Layer) {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	img, _ = mutate.ConfigFile(img, &v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: mustRootFS(t, img)})
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})); err != nil {
		t.Fatal(err)
	}
}

func mustRootFS(t *testing.T, img v1.Image) v1.RootFS {
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf.RootFS
}

// TestConvertWithAuth uses an htpasswd registry: 401 without credentials,
// success with Docker's config.json.
func TestConvertWithAuth(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{Htpasswd: map[string]string{"alice": "s3cret"}})
	layer := treetest.Tar([]treetest.File{treetest.Reg("f", 0o644, []byte("secret data"))})
	registrytest.PushImage(t, r.Host+"/private:1", [][]byte{layer}, registrytest.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"}))
	t.Setenv("HOME", t.TempDir())
	t.Setenv("DOCKER_CONFIG", t.TempDir())
	o := testOptions(t)
	o.Source.Retries, o.Target.Retries = 1, 1
	err := convertErr(t, r.Host+"/private:1", r.Host+"/private:nydus", o)
	if !strings.Contains(err.Error(), "401") && !strings.Contains(strings.ToLower(err.Error()), "unauthorized") {
		t.Fatalf("want 401, got %v", err)
	}
	t.Setenv("DOCKER_CONFIG", r.DockerConfig(t, "alice", "s3cret"))
	if _, err := Convert(context.Background(), ref(t, r.Host+"/private:1"), ref(t, r.Host+"/private:nydus"), testOptions(t)); err != nil {
		t.Fatal(err)
	}
}

// TestInterruptedPushResumes fails the push midway, then converts again.
func TestInterruptedPushResumes(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{})
	layer := treetest.Tar([]treetest.File{treetest.Reg("big", 0o644, treetest.Random(8, 6<<20))})
	registrytest.PushImage(t, r.Host+"/app:1", [][]byte{layer})
	// A proxy that breaks the connection of every blob upload after the
	// first 1 MiB while armed.
	var armed atomic.Bool
	armed.Store(true)
	u, _ := url.Parse("http://" + r.Host)
	rp := httputil.NewSingleHostReverseProxy(u)
	var frontHost string
	rp.ModifyResponse = func(resp *http.Response) error {
		if loc := resp.Header.Get("Location"); loc != "" {
			resp.Header.Set("Location", strings.Replace(loc, r.Host, frontHost, 1))
		}
		return nil
	}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if armed.Load() && (req.Method == http.MethodPatch || req.Method == http.MethodPut) && strings.Contains(req.URL.Path, "/blobs/uploads/") && req.ContentLength != 0 {
			hj, _ := w.(http.Hijacker)
			conn, _, _ := hj.Hijack()
			conn.Close()
			return
		}
		rp.ServeHTTP(w, req)
	}))
	defer front.Close()
	host := strings.TrimPrefix(front.URL, "http://")
	frontHost = host
	o := testOptions(t)
	o.Target.Retries, o.Target.RetryDelay = 1, 1
	_, err := Convert(context.Background(), ref(t, r.Host+"/app:1"), ref(t, host+"/app:nydus"), o)
	if err == nil {
		t.Fatal("push through the breaking proxy succeeded")
	}
	t.Logf("interrupted: %v", err)
	armed.Store(false)
	if _, err := Convert(context.Background(), ref(t, r.Host+"/app:1"), ref(t, host+"/app:nydus"), testOptions(t)); err != nil {
		t.Fatalf("re-run: %v", err)
	}
	p := pull(t, r, r.Host+"/app:nydus")
	if d := treetest.Diff(expected(t, layer), p.tree); d != "" {
		t.Fatalf("tree differs:\n%s", d)
	}
}

var _ name.Reference

func emptyIndex() v1.ImageIndex { return empty.Index }
