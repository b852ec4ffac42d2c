package converter_test

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

	"github.com/nydus-go/nydus/pkg/converter"
	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// writeSourceLayout writes an OCI image of two gzip layers for the
// running platform into the OCI layout directory dir, tagged tag.
func writeSourceLayout(dir, tag string) {
	layers := [][]byte{
		tarOf("etc/hostname", "nydus\n", "bin/app", string(bytes.Repeat([]byte("app!"), 300<<10))),
		tarOf("etc/motd", "converted\n", "etc/.wh.hostname", ""),
	}
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
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		log.Fatal(err)
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

// Convert reads an OCI image and writes its Nydus form: one data blob
// per source layer and a bootstrap layer, last, that holds the merged
// RAFS v6 filesystem tree. Here both images are OCI layout directories
// (`oci:DIR:TAG`); registry references (`registry.example.com/app:1`)
// work the same way.
func ExampleConvert() {
	work, err := os.MkdirTemp("", "convert-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(work)
	writeSourceLayout(filepath.Join(work, "src"), "v1")

	ro := imageref.RegistryOptions{}
	src, err := imageref.Parse("oci:"+filepath.Join(work, "src")+":v1", false, ro)
	if err != nil {
		log.Fatal(err)
	}
	dst, err := imageref.Parse("oci:"+filepath.Join(work, "dst")+":v1-nydus", false, ro)
	if err != nil {
		log.Fatal(err)
	}
	// A layout has no registry to keep a chunk dictionary in: turn the
	// dedup scope off.
	res, err := converter.Convert(context.Background(), src, dst, converter.Options{NoDedupScope: true, WorkDir: work})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("layers converted:", len(res.Images[0].Layers))

	// The target's manifest: the blob layers, then the bootstrap layer.
	c, err := imageref.NewClient(ro)
	if err != nil {
		log.Fatal(err)
	}
	im, err := imageref.Open(context.Background(), dst, c, imageref.OpenOptions{Role: "target"})
	if err != nil {
		log.Fatal(err)
	}
	m, err := im.Image.Manifest()
	if err != nil {
		log.Fatal(err)
	}
	for _, l := range m.Layers {
		switch {
		case l.MediaType == imageref.MediaTypeNydusBlob:
			fmt.Println("nydus blob layer")
		case l.Annotations[imageref.AnnotationNydusBootstrap] == "true":
			fmt.Println("nydus bootstrap layer, RAFS v" + l.Annotations[imageref.AnnotationFSVersion])
		}
	}

	// The bootstrap holds the image's filesystem, whiteouts applied.
	layers, err := im.Image.Layers()
	if err != nil {
		log.Fatal(err)
	}
	rc, err := layers[len(layers)-1].Compressed()
	if err != nil {
		log.Fatal(err)
	}
	defer rc.Close()
	boot, err := imageref.ExtractBootstrap(rc, 64<<20)
	if err != nil {
		log.Fatal(err)
	}
	rd, err := rafs.Open(context.Background(), bytes.NewReader(boot), int64(len(boot)))
	if err != nil {
		log.Fatal(err)
	}
	err = rd.Walk(context.Background(), func(path string, ino *rafs.DiskInode) error {
		if ino.IsRegular() {
			fmt.Println(path, ino.Size)
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// layers converted: 2
	// nydus blob layer
	// nydus blob layer
	// nydus bootstrap layer, RAFS v6
	// /bin/app 1228800
	// /etc/motd 10
}
