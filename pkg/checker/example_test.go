package checker_test

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"runtime"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nydus-go/nydus/pkg/checker"
	"github.com/nydus-go/nydus/pkg/converter"
	"github.com/nydus-go/nydus/pkg/imageref"
)

// addImage adds an OCI image for the running platform, tagged tag, to
// the OCI layout directory dir (created if needed); each layer is an
// uncompressed tar.
func addImage(dir, tag string, layers ...[]byte) {
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for _, b := range layers {
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
			tarball.WithMediaType(types.OCILayer))
		if err != nil {
			log.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			log.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		log.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		log.Fatal(err)
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		if p, err = layout.Write(dir, empty.Index); err != nil {
			log.Fatal(err)
		}
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{imageref.RefNameAnnotation: tag})); err != nil {
		log.Fatal(err)
	}
}

// tarOf returns an uncompressed tar of regular files, given as name and
// content pairs.
func tarOf(files ...string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := 0; i < len(files); i += 2 {
		tw.WriteHeader(&tar.Header{Name: files[i], Mode: 0o644, Size: int64(len(files[i+1]))})
		io.WriteString(tw, files[i+1])
	}
	tw.Close()
	return buf.Bytes()
}

// parse parses an image reference.
func parse(s string) imageref.Ref {
	r, err := imageref.Parse(s, false, imageref.RegistryOptions{})
	if err != nil {
		log.Fatal(err)
	}
	return r
}

// Check verifies a converted image: its manifest and bootstrap, every
// chunk of every file, and, given the source image, that its filesystem
// is the source's. Here the image is converted first, then checked
// against its source and against another image.
func ExampleCheck() {
	ctx := context.Background()
	work, err := os.MkdirTemp("", "check-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(work)
	layouts := filepath.Join(work, "images")
	addImage(layouts, "v1", tarOf("etc/hostname", "nydus\n", "bin/app", "#!/bin/sh\necho v1\n"))
	addImage(layouts, "v2", tarOf("etc/hostname", "nydus\n", "bin/app", "#!/bin/sh\necho v2\n"))
	src, dst := parse("oci:"+layouts+":v1"), parse("oci:"+filepath.Join(work, "nydus")+":v1")
	if _, err := converter.Convert(ctx, src, dst, converter.Options{NoDedupScope: true, WorkDir: work}); err != nil {
		log.Fatal(err)
	}

	reports, err := checker.Check(ctx, &src, dst, checker.Options{})
	if err != nil {
		log.Fatal(err) // the check could not be made
	}
	r := reports[0]
	fmt.Printf("against v1: ok=%v compared=%v files=%d chunks read=%d\n", r.OK(), r.Compared, r.Files, r.ChunksRead)

	other := parse("oci:" + layouts + ":v2")
	reports, err = checker.Check(ctx, &other, dst, checker.Options{})
	if err != nil {
		log.Fatal(err)
	}
	r = reports[0]
	fmt.Printf("against v2: ok=%v\n", r.OK())
	for _, d := range r.Differences {
		fmt.Println(d.Path, d.Field)
	}
	// Output:
	// against v1: ok=true compared=true files=2 chunks read=2
	// against v2: ok=false
	// /bin/app content
}
