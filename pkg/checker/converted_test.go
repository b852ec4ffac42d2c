package checker

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/converter"
	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

// TestConvertedImagesPass converts the scenarios of the converter's tests
// against Debian's docker-registry and checks every result against its
// source: with cross-layer dedup, independent packing, batches off and
// on, a chunk dictionary, the build cache, and a merged index.
func TestConvertedImagesPass(t *testing.T) {
	ctx := context.Background()
	r := registrytest.Start(t, registrytest.Options{})
	ro := imageref.RegistryOptions{PlainHTTP: true}
	amd := []v1.Platform{{OS: "linux", Architecture: "amd64"}}
	big := treetest.Random(42, 5<<20)
	imgs := map[string][][]byte{
		"sample": {treetest.Tar(treetest.Sample()), treetest.Tar([]treetest.File{
			treetest.Reg("etc/.wh.hostname", 0o644, nil),
			treetest.Dir("data/", 0o700),
			treetest.Reg("data/.wh..wh..opq", 0o644, nil),
			treetest.Reg("data/fresh", 0o644, big),
		})},
		"readd": {
			treetest.Tar([]treetest.File{treetest.Reg("etc/os-release", 0o644, []byte("base\n"))}),
			treetest.Tar([]treetest.File{treetest.Reg("big.tar", 0o644, big)}),
			treetest.Tar([]treetest.File{treetest.Reg(".wh.big.tar", 0o644, nil)}),
			treetest.Tar([]treetest.File{treetest.Reg("big.tar", 0o644, big)}),
		},
	}
	for n, ls := range imgs {
		registrytest.PushImage(t, r.Host+"/"+n+":1", ls)
	}
	registrytest.PushIndex(t, r.Host+"/multi:1", map[string][][]byte{"linux/amd64": imgs["sample"], "linux/arm64": imgs["readd"]})
	parse := func(s string) imageref.Ref {
		rf, err := imageref.Parse(s, false, ro)
		if err != nil {
			t.Fatal(err)
		}
		return rf
	}
	cacheRef, _ := name.ParseReference(r.Host+"/cache:1", name.Insecure)
	variants := []struct {
		name string
		mod  func(*converter.Options)
	}{
		{"chained", func(o *converter.Options) {}},
		{"independent", func(o *converter.Options) { o.Independent = true }},
		{"batches", func(o *converter.Options) { o.BatchSize = 0x100000 }},
		{"cache", func(o *converter.Options) {
			bc, _ := converter.NewBuildCache(cacheRef, ro, 50)
			o.Cache = bc
		}},
		{"cache-again", func(o *converter.Options) {
			bc, _ := converter.NewBuildCache(cacheRef, ro, 50)
			o.Cache = bc
		}},
		{"lz4", func(o *converter.Options) { o.Compressor = 1 }},
	}
	for _, n := range []string{"sample", "readd"} {
		for _, v := range variants {
			t.Run(n+"/"+v.name, func(t *testing.T) {
				o := converter.Options{Source: ro, Target: ro, Platforms: amd, WorkDir: t.TempDir()}
				v.mod(&o)
				dst := fmt.Sprintf("%s/%s:%s", r.Host, n, v.name)
				if _, err := converter.Convert(ctx, parse(r.Host+"/"+n+":1"), parse(dst), o); err != nil {
					t.Fatal(err)
				}
				src := parse(r.Host + "/" + n + ":1")
				reps, err := Check(ctx, &src, parse(dst), Options{Source: ro, Target: ro, Platforms: amd})
				if err != nil {
					t.Fatal(err)
				}
				for _, rep := range reps {
					if !rep.OK() || !rep.Compared {
						t.Fatalf("check of %s failed: %v", dst, rep.Problems())
					}
				}
			})
		}
	}
	// A merged index: the check finds the OCI manifest as the source.
	o := converter.Options{Source: ro, Target: ro, AllPlatforms: true, MergePlatform: true, WorkDir: t.TempDir()}
	if _, err := converter.Convert(ctx, parse(r.Host+"/multi:1"), parse(r.Host+"/multi:merged"), o); err != nil {
		t.Fatal(err)
	}
	reps, err := Check(ctx, nil, parse(r.Host+"/multi:merged"), Options{Source: ro, Target: ro, AllPlatforms: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 2 {
		t.Fatalf("%d reports", len(reps))
	}
	for _, rep := range reps {
		if !rep.OK() || !rep.Compared {
			t.Fatalf("merged index %s: %v (compared %v)", rep.Platform, rep.Problems(), rep.Compared)
		}
	}
}
