package converter

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/registry"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

var plain = imageref.RegistryOptions{PlainHTTP: true}

// plainC is a registry client for plain, shared by the tests.
var plainC = func() *imageref.Client {
	c, err := imageref.NewClient(plain)
	if err != nil {
		panic(err)
	}
	return c
}()

func ref(t testing.TB, s string) imageref.Ref {
	t.Helper()
	r, err := imageref.Parse(s, false, plain)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func testOptions(t testing.TB) Options {
	return Options{Source: plain, Target: plain, WorkDir: t.TempDir(), BatchSize: 0x40000,
		Platforms: []v1.Platform{{OS: "linux", Architecture: "amd64"}}}
}

// pulled is a converted image read back from the registry.
type pulled struct {
	manifest *v1.Manifest
	config   *v1.ConfigFile
	boot     []byte
	rd       *rafs.Reader
	tree     treetest.Tree
}

// pull reads a converted image back and unpacks it through ranged reads.
func pull(t *testing.T, r *registrytest.Registry, s string) *pulled {
	t.Helper()
	ctx := context.Background()
	rf := ref(t, s)
	img, err := remote.Image(rf.Name, plainC.Options(ctx)...)
	if err != nil {
		t.Fatal(err)
	}
	p := &pulled{}
	if p.manifest, err = img.Manifest(); err != nil {
		t.Fatal(err)
	}
	if p.config, err = img.ConfigFile(); err != nil {
		t.Fatal(err)
	}
	last := p.manifest.Layers[len(p.manifest.Layers)-1]
	l, err := remote.Layer(rf.Name.Context().Digest(last.Digest.String()), plainC.Options(ctx)...)
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := l.Compressed()
	p.boot, err = imageref.ExtractBootstrap(rc, 1<<30)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if p.rd, err = rafs.Open(ctx, bytes.NewReader(p.boot), int64(len(p.boot))); err != nil {
		t.Fatal(err)
	}
	rr, err := registry.NewForRepository(ctx, rf.Name.Context(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(builder.Unpack(ctx, p.rd, rr, pw, builder.UnpackOptions{})) }()
	if p.tree, err = treetest.FromTar(pr, treetest.Options{}); err != nil {
		t.Fatal(err)
	}
	return p
}

// expected applies OCI layers with whiteouts.
func expected(t *testing.T, layers ...[]byte) treetest.Tree {
	t.Helper()
	var want treetest.Tree
	for i, l := range layers {
		tr, err := treetest.FromTar(bytes.NewReader(l), treetest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			want = tr
			for p := range want {
				if strings.Contains(p, "/.wh.") {
					delete(want, p)
				}
			}
			continue
		}
		want = treetest.ApplyOCI(want, tr)
	}
	return want
}

func TestConvertLayout(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{})
	l1 := treetest.Tar(treetest.Sample())
	l2 := treetest.Tar([]treetest.File{
		treetest.Reg("etc/.wh.hostname", 0o644, nil),
		treetest.Reg("data/copy", 0o644, treetest.Random(1, 3<<20+12345)),
		treetest.Reg("new", 0o644, []byte("layer 2")),
	})
	registrytest.PushImage(t, r.Host+"/app:1", [][]byte{l1, l2})
	res, err := Convert(context.Background(), ref(t, r.Host+"/app:1"), ref(t, r.Host+"/app:1-nydus"), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	im := res.Images[0]
	if len(im.Layers) != 2 || im.DedupBytes < 3<<20 {
		t.Fatalf("result %+v", im)
	}
	p := pull(t, r, r.Host+"/app:1-nydus")
	m := p.manifest
	if len(m.Layers) != 3 {
		t.Fatalf("manifest has %d layers", len(m.Layers))
	}
	for i, l := range m.Layers[:2] {
		if l.MediaType != imageref.MediaTypeNydusBlob || l.Annotations[imageref.AnnotationNydusBlob] != "true" {
			t.Fatalf("blob layer %d: %+v", i, l)
		}
		if p.config.RootFS.DiffIDs[i] != l.Digest {
			t.Fatalf("diff_id %d = %s, want %s", i, p.config.RootFS.DiffIDs[i], l.Digest)
		}
	}
	bl := m.Layers[2]
	if bl.MediaType != imageref.MediaTypeOCILayerGzip || bl.Annotations[imageref.AnnotationNydusBootstrap] != "true" || bl.Annotations[imageref.AnnotationFSVersion] != "6" {
		t.Fatalf("bootstrap layer %+v", bl)
	}
	for _, k := range []string{imageref.AnnotationSourceDigest, imageref.AnnotationSourceRef, imageref.AnnotationFSVersion, imageref.AnnotationBuilderVersion} {
		if m.Annotations[k] == "" {
			t.Fatalf("manifest lacks %s: %v", k, m.Annotations)
		}
	}
	if len(p.config.RootFS.DiffIDs) != 3 || p.config.History[len(p.config.History)-1].Comment != "Nydus Bootstrap Layer" {
		t.Fatalf("config %+v", p.config.RootFS)
	}
	if d := treetest.Diff(expected(t, l1, l2), p.tree); d != "" {
		t.Fatalf("converted tree differs:\n%s", d)
	}
}

var _ = filepath.Join
var _ = os.Getenv
var _ name.Reference
