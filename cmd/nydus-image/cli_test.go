package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"golang.org/x/sys/unix"

	"github.com/nydus-go/nydus/internal/clitest"
	"github.com/nydus-go/nydus/internal/treetest"
)

var bin string

func TestMain(m *testing.M) { clitest.Main(m, "nydus-image", &bin) }

type result = clitest.Result

func run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	return clitest.Run(t, cmd)
}

func mustRun(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	r := run(t, stdin, args...)
	if r.Code != 0 {
		t.Fatalf("nydus-image %s: exit %d\n%s", strings.Join(args, " "), r.Code, r.Stderr)
	}
	return r
}

func writeFile(t *testing.T, p string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCreateHelpAdvertisesConverterFeatures(t *testing.T) {
	r := mustRun(t, "", "create", "-h")
	for _, s := range []string{"--type", "tar-rafs", "--batch-size", "--encrypt"} {
		if !strings.Contains(r.Stdout, s) {
			t.Errorf("create -h stdout lacks %q", s)
		}
	}
}

func TestVersion(t *testing.T) {
	r := mustRun(t, "", "--version")
	if m := regexp.MustCompile(`Version:\s*(v.*)`).FindStringSubmatch(r.Stdout); m == nil {
		t.Fatalf("no Version line: %q", r.Stdout)
	}
	if !regexp.MustCompile(`(?m)^Git Commit:\s*\S+`).MatchString(r.Stdout) {
		t.Fatalf("no Git Commit line: %q", r.Stdout)
	}
}

// oneLineError asserts a failed run printed exactly one line naming want.
func oneLineError(t *testing.T, r result, want string) {
	t.Helper()
	if r.Code == 0 {
		t.Fatalf("succeeded; want an error mentioning %q", want)
	}
	lines := strings.Split(strings.TrimSpace(r.Stderr), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], want) || strings.Contains(r.Stderr, "panic") {
		t.Fatalf("stderr %q: want one line containing %q", r.Stderr, want)
	}
}

func TestClearErrorsAndNoPartialOutput(t *testing.T) {
	dir := t.TempDir()
	good := treetest.Tar([]treetest.File{treetest.Reg("a/file", 0o644, treetest.Random(3, 100000))})
	trunc := writeFile(t, filepath.Join(dir, "trunc.tar"), good[:len(good)/2])
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(good)
	zw.Close()
	badgz := gz.Bytes()
	badgz[len(badgz)/2] ^= 0xff
	corruptGz := writeFile(t, filepath.Join(dir, "corrupt.tar.gz"), badgz)
	notGz := writeFile(t, filepath.Join(dir, "plain.tar"), good)
	link := writeFile(t, filepath.Join(dir, "link.tar"), treetest.Tar([]treetest.File{{Header: hdrLink("l", "nowhere")}}))
	escape := writeFile(t, filepath.Join(dir, "escape.tar"), treetest.Tar([]treetest.File{treetest.Reg("../../etc/passwd", 0o644, []byte("x"))}))
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"truncated tar", []string{"create", "-t", "tar-rafs", trunc}, `a/file`},
		{"corrupt gzip", []string{"create", "-t", "targz-rafs", corruptGz}, "gzip"},
		{"not gzip", []string{"create", "-t", "targz-rafs", notGz}, "not a gzip stream"},
		{"hardlink to missing target", []string{"create", "-t", "tar-rafs", link}, `hard link target "nowhere" does not exist`},
		{"escaping name", []string{"create", "-t", "tar-rafs", escape}, `"../../etc/passwd"`},
		{"encrypt", []string{"create", "-t", "tar-rafs", "--encrypt", notGz}, "--encrypt is not supported yet"},
		{"targz-ref", []string{"create", "--type", "targz-ref", notGz}, "not a gzip header"},
		{"targz-ref corrupt", []string{"create", "--type", "targz-ref", corruptGz}, "corrupt.tar.gz"},
		{"estargz", []string{"create", "--type", "estargz-rafs", notGz}, "not supported yet"},
		{"bad chunk size", []string{"create", "-t", "tar-rafs", "--chunk-size", "0x3000", notGz}, "chunk-size"},
		{"batch above chunk", []string{"create", "-t", "tar-rafs", "--chunk-size", "0x1000", "--batch-size", "0x2000", notGz}, "batch-size"},
		{"bootstrap and inline", []string{"create", "-t", "tar-rafs", "--blob-inline-meta", notGz}, "--bootstrap conflicts"},
		{"fs version 5", []string{"create", "-t", "tar-rafs", "--fs-version", "5", notGz}, "only RAFS v6"},
		{"missing source", []string{"create", "-t", "tar-rafs", filepath.Join(dir, "nope.tar")}, "nope.tar"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			args := append([]string{}, tc.args...)
			src := args[len(args)-1]
			args = append(args[:len(args)-1], "--blob", filepath.Join(out, "blob"))
			if tc.name != "bootstrap and inline" {
				args = append(args, "--bootstrap", filepath.Join(out, "boot"))
			} else {
				args = append(args, "--bootstrap", filepath.Join(out, "boot"))
			}
			if !strings.HasPrefix(tc.name, "targz-ref") { // a ref layer has no cache file
				args = append(args, "--blob-cache-dir", filepath.Join(out, "cache"))
			}
			args = append(args, src)
			oneLineError(t, run(t, "", args...), tc.want)
			// Nothing is left behind, not even temporary files.
			var left []string
			filepath.Walk(out, func(p string, info os.FileInfo, err error) error {
				if err == nil && !info.IsDir() {
					left = append(left, p)
				}
				return nil
			})
			if len(left) > 0 {
				t.Fatalf("partial output left behind: %v", left)
			}
		})
	}
}

func TestCorruptBootstrapsRejected(t *testing.T) {
	dir := t.TempDir()
	for name, b := range map[string][]byte{
		"empty":   nil,
		"garbage": bytes.Repeat([]byte{0x5a}, 8192),
	} {
		p := writeFile(t, filepath.Join(dir, name), b)
		for _, cmd := range [][]string{{"check", p}, {"inspect", p, "-R", "stats"}, {"unpack", p, "--blob-dir", dir, "--output", filepath.Join(dir, "out.tar")}} {
			r := run(t, "", cmd...)
			oneLineError(t, r, p)
		}
		if _, err := os.Stat(filepath.Join(dir, "out.tar")); err == nil {
			t.Fatal("unpack left an output file after failing")
		}
	}
}

func mkfifo(t *testing.T, p string) string {
	t.Helper()
	if err := unix.Mkfifo(p, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestFIFOs drives create the way nydus-snapshotter's converter does: the
// tar arrives on a FIFO, the blob leaves through a FIFO, prefetch paths
// come on stdin. Then unpack writes its tar to a FIFO.
func TestFIFOs(t *testing.T) {
	dir := t.TempDir()
	layer := treetest.Tar(treetest.Sample())
	src := mkfifo(t, filepath.Join(dir, "src.fifo"))
	blobFifo := mkfifo(t, filepath.Join(dir, "blob.fifo"))
	var wg sync.WaitGroup
	var blob []byte
	var readErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		f, err := os.OpenFile(src, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		f.Write(layer)
		f.Close()
	}()
	go func() {
		defer wg.Done()
		f, err := os.Open(blobFifo)
		if err != nil {
			readErr = err
			return
		}
		blob, readErr = io.ReadAll(f)
		f.Close()
	}()
	args := []string{"create", "--log-level", "warn", "--prefetch-policy", "fs", "--blob", blobFifo, "--whiteout-spec", "none",
		"--fs-version", "6", "--type", "tar-rafs", "--blob-inline-meta", "--features", "blob-toc", "--compressor", "zstd",
		"--chunk-size", "0x100000", "--batch-size", "0x10000", "--aligned-chunk", src}
	mustRun(t, "/etc\n/data/big.bin\n/missing\n", args...)
	wg.Wait()
	if readErr != nil {
		t.Fatal(readErr)
	}
	// The same build into regular files gives the same bytes.
	regular := writeFile(t, filepath.Join(dir, "layer.tar"), layer)
	args[6] = filepath.Join(dir, "blob.file")
	args[len(args)-1] = regular
	mustRun(t, "/etc\n/data/big.bin\n/missing\n", args...)
	want, _ := os.ReadFile(filepath.Join(dir, "blob.file"))
	if !bytes.Equal(blob, want) {
		t.Fatalf("FIFO blob (%d bytes) differs from file blob (%d bytes)", len(blob), len(want))
	}

	// Merge it (named by its digest, options after the positional) and
	// unpack into a FIFO.
	id := sha256hex(blob)
	blobs := filepath.Join(dir, "blobs")
	os.MkdirAll(blobs, 0o755)
	writeFile(t, filepath.Join(blobs, id), blob)
	layerBoot := filepath.Join(dir, id)
	extractBootstrap(t, blob, layerBoot)
	merged := filepath.Join(dir, "merged.boot")
	mustRun(t, "/data\n", "merge", "--log-level", "warn", "--prefetch-policy", "fs", "--output-json", filepath.Join(dir, "merge.json"), "--bootstrap", merged, layerBoot)
	var mj struct {
		Blobs []string `json:"blobs"`
	}
	mb, _ := os.ReadFile(filepath.Join(dir, "merge.json"))
	if err := json.Unmarshal(mb, &mj); err != nil || len(mj.Blobs) != 1 || mj.Blobs[0] != id {
		t.Fatalf("merge output %s (%v)", mb, err)
	}
	r := mustRun(t, "", "inspect", merged, "-R", "prefetch")
	if !strings.Contains(r.Stdout, `"/data"`) {
		t.Fatalf("prefetch table: %s", r.Stdout)
	}
	outFifo := mkfifo(t, filepath.Join(dir, "out.fifo"))
	var out []byte
	wg.Add(1)
	go func() {
		defer wg.Done()
		f, err := os.Open(outFifo)
		if err != nil {
			return
		}
		out, _ = io.ReadAll(f)
		f.Close()
	}()
	mustRun(t, "", "unpack", "--log-level", "warn", "--bootstrap", merged, "--output", outFifo, "--blob", filepath.Join(blobs, id))
	wg.Wait()
	want2, err := treetest.FromTar(bytes.NewReader(layer), treetest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for p := range want2 {
		if strings.Contains(p, "/.wh.") {
			delete(want2, p)
		}
	}
	want2.Remove("/wh/opaque")
	want2.Remove("/wh/gone")
	got, err := treetest.FromTar(bytes.NewReader(out), treetest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want2["/wh/opaque"] = got["/wh/opaque"]
	if d := treetest.Diff(want2, got); d != "" {
		t.Fatalf("unpacked merged image differs:\n%s", d)
	}
}

func TestCheckVerifiesChunks(t *testing.T) {
	dir := t.TempDir()
	layer := writeFile(t, filepath.Join(dir, "l.tar"), treetest.Tar([]treetest.File{
		treetest.Reg("ok", 0o644, []byte("fine")),
		treetest.Reg("victim", 0o644, treetest.Random(4, 300000)),
	}))
	blobs := filepath.Join(dir, "blobs")
	boot := filepath.Join(dir, "boot")
	mustRun(t, "", "create", "-t", "tar-rafs", "--compressor", "none", "-B", boot, "-D", blobs, layer)
	mustRun(t, "", "check", boot, "-D", blobs)
	r := mustRun(t, "", "inspect", boot, "-R", "blobs")
	var bl []map[string]any
	if err := json.Unmarshal([]byte(r.Stdout), &bl); err != nil || len(bl) != 1 {
		t.Fatalf("inspect -R blobs: %s %v", r.Stdout, err)
	}
	id := bl[0]["blob_id"].(string)
	p := filepath.Join(blobs, id)
	b, _ := os.ReadFile(p)
	b[100] ^= 0x01 // inside "victim"'s first chunk ("ok" is stored after it? no: in tar order)
	os.WriteFile(p, b, 0o644)
	r = run(t, "", "check", boot, "-D", blobs)
	if r.Code == 0 || !strings.Contains(r.Stderr, "chunk 0") || !strings.Contains(r.Stderr, "digest mismatch") {
		t.Fatalf("check did not report the corrupt chunk: %d %q", r.Code, r.Stderr)
	}
	t.Log(strings.TrimSpace(r.Stderr))
}

// TestUnpackFromRegistry unpacks an image whose blob lives in a registry
// (go-containerregistry's in-process registry; the real docker-registry
// is exercised by the nydusify and nydusd tests).
func TestUnpackFromRegistry(t *testing.T) {
	dir := t.TempDir()
	layer := treetest.Tar(treetest.Sample()[:14])
	src := writeFile(t, filepath.Join(dir, "l.tar"), layer)
	blobs := filepath.Join(dir, "blobs")
	boot := filepath.Join(dir, "boot")
	mustRun(t, "", "create", "-t", "tar-rafs", "--whiteout-spec", "none", "-B", boot, "-D", blobs, src)
	ents, _ := os.ReadDir(blobs)
	b, _ := os.ReadFile(filepath.Join(blobs, ents[0].Name()))
	srv := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	pushBlob(t, srv.URL, "demo/app", b)
	host := strings.TrimPrefix(srv.URL, "http://")
	out := filepath.Join(dir, "out.tar")
	cfg := fmt.Sprintf(`{"host":%q,"repo":"demo/app","scheme":"http","readahead":false,"proxy":{"fallback":false}}`, host)
	mustRun(t, "", "unpack", "--bootstrap", boot, "--output", out, "--backend-type", "registry", "--backend-config", cfg)
	got, _ := os.ReadFile(out)
	w, _ := treetest.FromTar(bytes.NewReader(layer), treetest.Options{})
	g, _ := treetest.FromTar(bytes.NewReader(got), treetest.Options{})
	if d := treetest.Diff(w, g); d != "" {
		t.Fatalf("unpacked from registry differs:\n%s", d)
	}
	empty := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0))))
	defer empty.Close()
	r := run(t, "", "unpack", "--bootstrap", boot, "--output", out+"2", "--backend-type", "registry", "--backend-config",
		fmt.Sprintf(`{"host":%q,"repo":"demo/missing","scheme":"http"}`, strings.TrimPrefix(empty.URL, "http://")))
	oneLineError(t, r, "demo/missing")
	if _, err := os.Stat(out + "2"); err == nil {
		t.Fatal("failed unpack left its output")
	}
}

func pushBlob(t *testing.T, base, repo string, b []byte) {
	t.Helper()
	resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = base + loc
	}
	req, _ := http.NewRequest(http.MethodPut, loc+"?digest=sha256:"+sha256hex(b), bytes.NewReader(b))
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %v %v", err, resp)
	}
	resp.Body.Close()
}

// TestBatchAndLevel builds with batches and a non-default zstd level and
// checks every chunk and the unpacked tree.
func TestBatchAndLevel(t *testing.T) {
	dir := t.TempDir()
	layer := treetest.Tar(treetest.Sample())
	src := writeFile(t, filepath.Join(dir, "l.tar"), layer)
	blobs := filepath.Join(dir, "blobs")
	boot := filepath.Join(dir, "boot")
	json := filepath.Join(dir, "out.json")
	mustRun(t, "", "create", "-t", "tar-rafs", "--whiteout-spec", "none", "--batch-size", "0x40000", "--compression-level", "1", "-B", boot, "-D", blobs, "-J", json, src)
	b, _ := os.ReadFile(json)
	if !strings.Contains(string(b), `"batched_chunks": 1`) && !regexp.MustCompile(`"batched_chunks": [1-9]`).Match(b) {
		t.Fatalf("nothing batched: %s", b)
	}
	mustRun(t, "", "check", boot, "-D", blobs)
	out := filepath.Join(dir, "out.tar")
	mustRun(t, "", "unpack", boot, "-D", blobs, "--output", out)
	got, _ := os.ReadFile(out)
	w, _ := treetest.FromTar(bytes.NewReader(layer), treetest.Options{})
	g, _ := treetest.FromTar(bytes.NewReader(got), treetest.Options{})
	if d := treetest.Diff(w, g); d != "" {
		t.Fatalf("batched image differs:\n%s", d)
	}
	oneLineError(t, run(t, "", "create", "-t", "tar-rafs", "--compression-level", "30", "-B", boot+"2", "-D", blobs, src), "compression level")
	oneLineError(t, run(t, "", "create", "-t", "tar-rafs", "--batch-limit", "0x4000", "-B", boot+"2", "-D", blobs, src), "--batch-limit")
	oneLineError(t, run(t, "", "create", "-t", "tar-rafs", "--batch-size", "0x4000", "--batch-limit", "4k", "-B", boot+"2", "-D", blobs, src), "--batch-limit")

	// A limit splits batches: more of them, and the image still checks
	// and unpacks to the same tree.
	mustRun(t, "", "create", "-t", "tar-rafs", "--whiteout-spec", "none", "--batch-size", "0x40000", "--batch-limit", "0x1000", "-B", boot+"3", "-D", blobs, src)
	mustRun(t, "", "check", boot+"3", "-D", blobs)
	mustRun(t, "", "unpack", boot+"3", "-D", blobs, "--output", out+"3")
	got, _ = os.ReadFile(out + "3")
	g, _ = treetest.FromTar(bytes.NewReader(got), treetest.Options{})
	if d := treetest.Diff(w, g); d != "" {
		t.Fatalf("image with a batch limit differs:\n%s", d)
	}
}
