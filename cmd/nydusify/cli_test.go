package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/nydus-go/nydus/internal/clitest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

var bin string

func TestMain(m *testing.M) { clitest.Main(m, "nydusify", &bin) }

type result = clitest.Result

func run(t *testing.T, dir string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "DOCKER_CONFIG="+dir)
	return clitest.Run(t, cmd)
}

func TestConvertCLI(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{})
	dir := t.TempDir()
	l1 := treetest.Tar(treetest.Sample())
	l2 := treetest.Tar([]treetest.File{treetest.Reg("data/big-again", 0o644, treetest.Random(1, 3<<20+12345))})
	registrytest.PushImage(t, r.Host+"/app:1", [][]byte{l1, l2})
	out := filepath.Join(dir, "report.json")
	res := run(t, dir, "convert", "--source", r.Host+"/app:1", "--target", r.Host+"/app:1-nydus", "--plain-http",
		"--platform", "linux/amd64", "--output-json", out)
	if res.Code != 0 {
		t.Fatalf("convert: %d\n%s", res.Code, res.Stderr)
	}
	// Not a terminal: plain log lines and a summary table.
	for _, want := range []string{"layer converted", "PLATFORM", "DEDUPLICATED", "converted " + r.Host + "/app:1"} {
		if !strings.Contains(res.Stderr, want) {
			t.Fatalf("stderr lacks %q:\n%s", want, res.Stderr)
		}
	}
	var rep struct {
		Images []struct {
			Layers []struct {
				Stats struct {
					DedupBytes int64 `json:"dedup_bytes"`
				} `json:"stats"`
			} `json:"layers"`
			NydusSize int64 `json:"nydus_size"`
		} `json:"images"`
	}
	b, _ := os.ReadFile(out)
	if err := json.Unmarshal(b, &rep); err != nil || len(rep.Images) != 1 || rep.Images[0].Layers[1].Stats.DedupBytes < 3<<20 {
		t.Fatalf("report %s (%v)", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tmp")); err == nil {
		t.Fatal("the default work dir was left behind")
	}
	// copy to another repository: blobs are mounted, nothing re-uploaded.
	r.ResetStats()
	res = run(t, dir, "copy", "--source", r.Host+"/app:1-nydus", "--target", r.Host+"/copy:1", "--plain-http")
	if res.Code != 0 {
		t.Fatalf("copy: %s", res.Stderr)
	}
	if st := r.Stats(); st.Mounts == 0 || st.UploadBytes > 64<<10 {
		t.Fatalf("copy uploaded %d bytes with %d mounts", st.UploadBytes, st.Mounts)
	}
}

func TestConvertCLIErrors(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{})
	dir := t.TempDir()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"convert", "--target", "x"}, "--source"},
		{[]string{"convert", "--source", r.Host + "/nope:1", "--target", r.Host + "/x:1", "--plain-http", "--push-retry-count", "1"}, "nope"},
		{[]string{"convert", "--source", "a", "--target", "b", "--all-platforms", "--platform", "linux/arm64"}, "--all-platforms conflicts"},
		{[]string{"convert", "--source", "a", "--target", "b", "--prefetch-patterns", "--prefetch-dir", "/x"}, "conflicts"},
		{[]string{"convert", "--source", "a", "--target", "b", "--oci-ref", "--batch-size", "0x1000"}, "--batch-size does not apply to --oci-ref"},
		{[]string{"convert", "--source", "a", "--target", "b", "--fs-version", "5"}, "only RAFS v6"},
		{[]string{"convert", "--source", "a", "--target", "b", "--chunk-dict", "registry:x"}, "bootstrap:registry:REF"},
		{[]string{"convert", "--source", "a", "--target", "b", "--build-cache", "c", "--build-cache-max-records", "500"}, "1–200"},
		{[]string{"convert", "--source", "a", "--target", "b", "--compressor", "gzip"}, "--compressor"},
		{[]string{"convert", "--source", "a", "--target", "b", "--platform", "linux"}, "invalid platform"},
	}
	for _, c := range cases {
		res := run(t, dir, c.args...)
		lines := strings.Split(strings.TrimSpace(res.Stderr), "\n")
		last := lines[len(lines)-1]
		if res.Code == 0 || !strings.Contains(last, c.want) || strings.Contains(res.Stderr, "panic") {
			t.Errorf("%v: exit %d, stderr %q; want an error containing %q", c.args, res.Code, res.Stderr, c.want)
		}
	}
}

// TestCheckCLI: check passes on a converted image and fails, naming the
// file, when a blob is tampered in the registry's storage.
func TestCheckCLI(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{})
	dir := t.TempDir()
	l1 := treetest.Tar(treetest.Sample())
	l2 := treetest.Tar([]treetest.File{treetest.Reg("victim/file", 0o644, treetest.Random(2, 2<<20))})
	registrytest.PushImage(t, r.Host+"/app:1", [][]byte{l1, l2})
	if res := run(t, dir, "convert", "--source", r.Host+"/app:1", "--target", r.Host+"/app:nydus", "--plain-http", "--platform", "linux/amd64"); res.Code != 0 {
		t.Fatalf("convert: %s", res.Stderr)
	}
	res := run(t, dir, "check", "--source", r.Host+"/app:1", "--target", r.Host+"/app:nydus", "--plain-http", "--platform", "linux/amd64")
	if res.Code != 0 || !strings.Contains(res.Stderr, "OK") || !strings.Contains(res.Stderr, "identical") {
		t.Fatalf("check: %d %s", res.Code, res.Stderr)
	}
	// Tamper with the blob holding /victim/file.
	out := run(t, dir, "check", "--target", r.Host+"/app:nydus", "--plain-http", "--platform", "linux/amd64", "--log-level", "error")
	_ = out
	var blobPath string
	for _, p := range blobLayerPaths(t, r, r.Host+"/app:nydus") {
		if st, err := os.Stat(p); err == nil && st.Size() > 1<<20 && st.Size() < 3<<20 {
			blobPath = p
		}
	}
	if blobPath == "" {
		t.Fatal("blob of layer 2 not found in storage")
	}
	b, _ := os.ReadFile(blobPath)
	b[1000] ^= 0xff
	os.WriteFile(blobPath, b, 0o644)
	res = run(t, dir, "check", "--source", r.Host+"/app:1", "--target", r.Host+"/app:nydus", "--plain-http", "--platform", "linux/amd64")
	if res.Code == 0 || !strings.Contains(res.Stderr, "/victim/file") {
		t.Fatalf("tampered blob not reported with its file: %d\n%s", res.Code, res.Stderr)
	}
}

func blobLayerPaths(t *testing.T, r *registrytest.Registry, s string) []string {
	t.Helper()
	n, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(n)
	if err != nil {
		t.Fatal(err)
	}
	mf, _ := img.Manifest()
	var out []string
	for _, l := range mf.Layers {
		out = append(out, r.BlobPath(l.Digest.String()))
	}
	return out
}

// TestDedupScopeCLI: nydusify convert's default dedup scope makes a
// second image reuse the first's blob; after the first image is deleted
// and the registry collects garbage, `nydusify check` of the second
// (against its source: every file compared) still passes.
func TestDedupScopeCLI(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{})
	dir := t.TempDir()
	big := treetest.Random(71, 4<<20)
	registrytest.PushImage(t, r.Host+"/src:a", [][]byte{treetest.Tar([]treetest.File{treetest.Reg("big.bin", 0o644, big), treetest.Reg("a", 0o644, []byte("a"))})})
	registrytest.PushImage(t, r.Host+"/src:b", [][]byte{treetest.Tar([]treetest.File{treetest.Reg("opt/big.bin", 0o644, big), treetest.Reg("b", 0o644, []byte("b"))})})
	for _, s := range []string{"a", "b"} {
		before := r.Stats().UploadBytes
		if res := run(t, dir, "convert", "--source", r.Host+"/src:"+s, "--target", r.Host+"/app:"+s, "--plain-http", "--platform", "linux/amd64"); res.Code != 0 {
			t.Fatalf("convert %s: %s", s, res.Stderr)
		}
		if up := r.Stats().UploadBytes - before; s == "b" && up > 1<<20 {
			t.Fatalf("b uploaded %d bytes with the default dedup scope", up)
		}
	}
	n, _ := name.ParseReference(r.Host+"/app:a", name.Insecure)
	img, err := remote.Image(n)
	if err != nil {
		t.Fatal(err)
	}
	dg, _ := img.Digest()
	if err := remote.Delete(n.Context().Digest(dg.String())); err != nil {
		t.Fatal(err)
	}
	r.GarbageCollect(t)
	res := run(t, dir, "check", "--source", r.Host+"/src:b", "--target", r.Host+"/app:b", "--plain-http", "--platform", "linux/amd64")
	if res.Code != 0 || !strings.Contains(res.Stderr, "identical") {
		t.Fatalf("check of b after a was deleted and collected: %d\n%s", res.Code, res.Stderr)
	}
	if res := run(t, dir, "convert", "--source", r.Host+"/src:b", "--target-archive", filepath.Join(dir, "b.tar"), "--dedup-scope", "app"); res.Code == 0 || !strings.Contains(res.Stderr, "--dedup-scope needs a registry") {
		t.Fatalf("--dedup-scope with an archive target: %d %s", res.Code, res.Stderr)
	}
}
