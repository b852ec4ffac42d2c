package interop

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/nydus-snapshotter/pkg/converter"
	"github.com/containerd/nydus-snapshotter/pkg/converter/tool"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/opencontainers/go-digest"
)

var builderPath string

func TestMain(m *testing.M) {
	builderPath = os.Getenv("NYDUS_IMAGE")
	if builderPath == "" {
		dir, err := os.MkdirTemp("", "nydus-image-")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		builderPath = filepath.Join(dir, "nydus-image")
		cmd := exec.Command("go", "build", "-o", builderPath, "github.com/nydus-go/nydus/cmd/nydus-image")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build nydus-image:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// readerAt adapts bytes to containerd's content.ReaderAt.
type readerAt struct{ *bytes.Reader }

func (r readerAt) Close() error { return nil }

func newReaderAt(b []byte) readerAt { return readerAt{bytes.NewReader(b)} }

// layers is a three-layer image with OCI whiteouts, an opaque directory,
// hard links and data shared between layers.
func layers() [][]treetest.File {
	shared := treetest.Random(21, 1<<20+777)
	return [][]treetest.File{
		append(treetest.Sample()[:0:0], treetest.Sample()...),
		{
			treetest.Dir("etc/", 0o755),
			treetest.Reg("etc/.wh.hostname", 0o644, nil),
			treetest.Reg("etc/motd", 0o644, []byte("layer 2\n")),
			treetest.Dir("data/", 0o755),
			treetest.Reg("data/.wh..wh..opq", 0o644, nil),
			treetest.Reg("data/fresh", 0o644, shared),
			{Header: tar.Header{Typeflag: tar.TypeLink, Name: "data/fresh-link", Linkname: "data/fresh", ModTime: treetest.T, Format: tar.FormatPAX}},
			treetest.Reg("bin/.wh.setgid", 0o644, nil),
		},
		{
			treetest.Reg("etc/motd", 0o600, []byte("layer 3 wins\n")),
			treetest.Reg("copy-of-fresh", 0o644, shared),
			treetest.Reg(".wh.tmp", 0o644, nil),
			treetest.Reg("empty-layer-file", 0o644, nil),
		},
	}
}

type packed struct {
	src    []byte
	blob   []byte
	digest digest.Digest
}

func pack(t *testing.T, layer []byte, opt converter.PackOption) packed {
	t.Helper()
	var blob bytes.Buffer
	w, err := converter.Pack(context.Background(), &blob, opt)
	if err != nil {
		t.Fatalf("converter.Pack: %v", err)
	}
	if _, err := io.Copy(w, bytes.NewReader(layer)); err != nil {
		t.Fatalf("write layer to Pack: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close Pack: %v", err)
	}
	return packed{src: layer, blob: blob.Bytes(), digest: digest.FromBytes(blob.Bytes())}
}

func treeOf(t *testing.T, b []byte) treetest.Tree {
	t.Helper()
	tr, err := treetest.FromTar(bytes.NewReader(b), treetest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestFeatureDetection runs the converter's probe of `nydus-image create
// -h` in a child process: the probe caches its answer per process.
func TestFeatureDetection(t *testing.T) {
	if os.Getenv("NYDUS_INTEROP_PROBE") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestFeatureDetection$", "-test.v")
		cmd.Env = append(os.Environ(), "NYDUS_INTEROP_PROBE=1", "NYDUS_IMAGE="+builderPath)
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("PASS")) {
			t.Fatalf("feature probe child failed: %v\n%s", err, out)
		}
		return
	}
	want := tool.NewFeatures(tool.FeatureTar2Rafs, tool.FeatureBatchSize, tool.FeatureEncrypt)
	got, err := tool.DetectFeatures(builderPath, want, tool.GetHelp)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []tool.Feature{tool.FeatureTar2Rafs, tool.FeatureBatchSize, tool.FeatureEncrypt} {
		if !got.Contains(f) {
			t.Errorf("converter did not detect %q in `nydus-image create -h`", f)
		}
	}
}

func TestPackUnpackMergeThroughUpstreamConverter(t *testing.T) {
	ctx := context.Background()
	work := t.TempDir()
	var ps []packed
	for i, files := range layers() {
		layer := treetest.Tar(files)
		p := pack(t, layer, converter.PackOption{BuilderPath: builderPath, WorkDir: work, Compressor: "zstd", ChunkSize: "0x100000", BatchSize: "0x10000"})
		ps = append(ps, p)
		t.Logf("layer %d: %d byte tar -> %d byte blob %s", i, len(layer), len(p.blob), p.digest)

		// Unpack each layer blob, both from a file and streamed through
		// the http-proxy backend: the result equals the source layer,
		// whiteouts included. converter.Unpack hands the builder only the
		// blob's chunk data (image.blob), not the chunk-info table that
		// batch chunks need, so it is tested on a blob packed without
		// batches.
		plain := packPlain(t, work, layer)
		for _, stream := range []bool{false, true} {
			blob := plain.blob
			var out bytes.Buffer
			err := converter.Unpack(ctx, newReaderAt(blob), &out, converter.UnpackOption{
				BuilderPath: builderPath, WorkDir: work, Stream: stream})
			if err != nil {
				t.Fatalf("layer %d: converter.Unpack(stream=%v): %v", i, stream, err)
			}
			want := treeOf(t, layer)
			got := treeOf(t, out.Bytes())
			if i > 0 {
				// Layers without a root entry get the builder's default.
				want["/"] = got["/"]
			}
			if d := treetest.Diff(want, got); d != "" {
				t.Fatalf("layer %d (stream=%v): unpacked layer differs from the source:\n%s", i, stream, d)
			}
		}
	}

	// Merge all layers into a bootstrap layer.
	var mls []converter.Layer
	for _, p := range ps {
		mls = append(mls, converter.Layer{Digest: p.digest, ReaderAt: newReaderAt(p.blob)})
	}
	var bootLayer bytes.Buffer
	blobDigests, err := converter.Merge(ctx, mls, &bootLayer, converter.MergeOption{BuilderPath: builderPath, WorkDir: work, WithTar: true, FsVersion: "6"})
	if err != nil {
		t.Fatalf("converter.Merge: %v", err)
	}
	if len(blobDigests) != len(ps) {
		t.Fatalf("merge reported blobs %v, want the %d layer digests", blobDigests, len(ps))
	}
	for i, d := range blobDigests {
		if d != ps[i].digest {
			t.Fatalf("merge blob %d = %s, want %s", i, d, ps[i].digest)
		}
	}
	// The bootstrap layer holds image/image.boot and each layer's
	// blob.meta.
	files := map[string][]byte{}
	tr := tar.NewReader(&bootLayer)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
	boot, ok := files["image/image.boot"]
	if !ok {
		t.Fatalf("bootstrap layer entries: %v", keys(files))
	}
	for _, p := range ps {
		if _, ok := files["image/"+p.digest.Hex()+".blob.meta"]; !ok {
			t.Errorf("bootstrap layer lacks image/%s.blob.meta (entries %v)", p.digest.Hex(), keys(files))
		}
	}

	// Our own unpack of the merged bootstrap equals the expected merged
	// tree.
	blobDir := filepath.Join(work, "blobs")
	os.MkdirAll(blobDir, 0o755)
	for _, p := range ps {
		os.WriteFile(filepath.Join(blobDir, p.digest.Hex()), p.blob, 0o644)
	}
	bootPath := filepath.Join(work, "merged.boot")
	os.WriteFile(bootPath, boot, 0o644)
	outPath := filepath.Join(work, "merged.tar")
	cmd := exec.Command(builderPath, "unpack", bootPath, "--blob-dir", blobDir, "--output", outPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nydus-image unpack: %v\n%s", err, out)
	}
	merged, _ := os.ReadFile(outPath)
	want := treeOf(t, ps[0].src)
	for _, p := range ps[1:] {
		up := treeOf(t, p.src)
		delete(up, "/")
		want = treetest.ApplyOCI(want, up)
	}
	// Layer 0 keeps its whiteout-named files: they are whiteouts too.
	for p := range want {
		if strings.Contains(p, "/.wh.") {
			delete(want, p)
		}
	}
	want.Remove("/wh/gone")
	got := treeOf(t, merged)
	if d := treetest.Diff(want, got); d != "" {
		t.Fatalf("merged image differs from the expected tree:\n%s", d)
	}

	// nydusify check's calls work on the merged bootstrap.
	if out, err := exec.Command(builderPath, "check", "--log-level", "warn", "--output-json", filepath.Join(work, "check.json"), "--bootstrap", bootPath).CombinedOutput(); err != nil {
		t.Fatalf("nydus-image check: %v\n%s", err, out)
	}
	out, err := exec.Command(builderPath, "inspect", bootPath, "--request", "blobs").Output()
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	for _, p := range ps {
		if !bytes.Contains(out, []byte(p.digest.Hex())) {
			t.Fatalf("inspect -R blobs lacks %s: %s", p.digest.Hex(), out)
		}
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// packPlain packs a layer without batches, with the converter's command
// line (the converter's feature probe is per process, so a second
// converter.Pack with other options is refused).
func packPlain(t *testing.T, work string, layer []byte) packed {
	t.Helper()
	src := filepath.Join(work, "plain.tar")
	out := filepath.Join(work, "plain.blob")
	if err := os.WriteFile(src, layer, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(builderPath, "create", "--log-level", "warn", "--prefetch-policy", "fs", "--blob", out,
		"--whiteout-spec", "none", "--fs-version", "6", "--type", "tar-rafs", "--blob-inline-meta", "--features", "blob-toc", src)
	cmd.Stdin = strings.NewReader("/")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nydus-image create: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return packed{src: layer, blob: b, digest: digest.FromBytes(b)}
}
