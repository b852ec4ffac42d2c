package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The documented commands are the ones run, with the variables left
// symbolic (as the section has always shown them).
func TestCmdlines(t *testing.T) {
	for _, c := range []struct {
		c    cmdline
		want string
	}{
		{cNydus, "bin/nydusify convert --source $SRC --target $REG/speed-nydus/r$R-a$A:nydus --plain-http --work-dir $W --output-json speed-nydus-r$R.json"},
		{cNydusI, "bin/nydusify convert --source $SRC --target $REG/speed-nydus-independent/r$R-a$A:nydus --plain-http --independent --work-dir $W --output-json speed-nydus-independent-r$R.json"},
		{cFetch, "$CTR content fetch --plain-http $SRC"},
		{cConvert, "$CR image convert --estargz --oci $SRC $REG/speed-estargz/r$R:esgz"},
		{cPush, "$CTR image push --plain-http $REG/speed-estargz/r$R-a$A:esgz $REG/speed-estargz/r$R:esgz"},
		{cZstd, "$CR image convert --zstdchunked --oci $SRC $REG/speed-zstdchunked/r$R:zstd"},
		{cFamily, "bin/nydusify convert --source $REG/bench/NAME:oci --target $REG/family-MODE:NAME --plain-http [--chunk-dict bootstrap:registry:$REG/family-dict:DICT | --dedup-scope none | --independent --dedup-scope none] --work-dir $W --output-json family-MODE-NAME.json"},
	} {
		if got := c.c.shown(); got != c.want {
			t.Errorf("shown:\n got %s\nwant %s", got, c.want)
		}
	}
	b := &bench{nydusify: "/r/bin/nydusify", reg: "127.0.0.1:5000", tmp: "/t", csock: "/t/c.sock"}
	v := b.vars(2, 3)
	if got := strings.Join(cNydus.argv(v), " "); got != "/r/bin/nydusify convert --source 127.0.0.1:5000/bench/bookworm-curl:oci --target 127.0.0.1:5000/speed-nydus/r2-a3:nydus --plain-http --work-dir /t/wd/n2-3 --output-json /t/json/speed-nydus-r2.json" {
		t.Errorf("nydus argv: %s", got)
	}
	if got := cPush.argv(v); !slices.Equal(got[:4], []string{"ctr", "-a", "/t/c.sock", "image"}) || got[len(got)-2] != "127.0.0.1:5000/speed-estargz/r2-a3:esgz" {
		t.Errorf("push argv: %q", got)
	}
	v["MODE"], v["NAME"], v["EXTRA"] = "dict", "trixie-curl", familyExtra("dict", "trixie-curl", b.reg)
	if got := strings.Join(cFamily.argv(v), " "); got != "/r/bin/nydusify convert --source 127.0.0.1:5000/bench/trixie-curl:oci --target 127.0.0.1:5000/family-dict:trixie-curl --plain-http --chunk-dict bootstrap:registry:127.0.0.1:5000/family-dict:trixie-min --work-dir /t/wd/f-dict-trixie-curl --output-json /t/json/family-dict-trixie-curl.json" {
		t.Errorf("family argv: %s", got)
	}
	v["MODE"], v["NAME"], v["EXTRA"] = "default", "bookworm-min", familyExtra("default", "bookworm-min", b.reg)
	if got := cFamily.argv(v); slices.Contains(got, "") || got[7] != "--work-dir" {
		t.Errorf("family argv without options: %q", got)
	}
	if familyExtra("dict", "bookworm-min", b.reg) != "" || familyExtra("independent", "x", b.reg) != "--independent --dedup-scope none" {
		t.Error("familyExtra")
	}
}

func TestParseConfig(t *testing.T) {
	env := map[string]string{"BENCH_RUNS": "5", "BENCH_ZSTDCHUNKED": "0", "BENCH_IDLE_WAIT": "2.5", "BENCH_REJECT_OTHERS": "0"}
	c, err := parseConfig([]string{"-dir", "/x"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.dir != "/x" || c.runs != 5 || c.zstdChunked || c.idleWait != 2500*time.Millisecond || c.rejectOthers != 0 ||
		c.waitBudget != time.Minute || c.deadline != 7*time.Minute || c.doc != "docs/benchmarks.md" {
		t.Fatalf("config %+v", c)
	}
	none := func(string) string { return "" }
	if c, err := parseConfig(nil, none); err != nil || c.runs != 3 || !c.zstdChunked || c.rejectOthers != 0.3 || c.dir != "/var/tmp/nydus-bench" {
		t.Fatalf("defaults %+v %v", c, err)
	}
	for _, bad := range []map[string]string{{"BENCH_RUNS": "0"}, {"BENCH_RUNS": "x"}, {"BENCH_IDLE_WAIT": "soon"}} {
		if _, err := parseConfig(nil, func(k string) string { return bad[k] }); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
	if _, err := parseConfig([]string{"extra"}, none); err == nil {
		t.Error("extra argument: no error")
	}
}

func TestContention(t *testing.T) {
	c := &contention{idleWait: 10 * time.Second, waitBudget: 25 * time.Second}
	if w := c.nextWait(); w != 10*time.Second {
		t.Fatalf("first wait %v", w)
	}
	c.waited = 16.5
	if w := c.nextWait(); w != 8500*time.Millisecond {
		t.Fatalf("wait near the budget %v", w)
	}
	c.waited = 30
	if w := c.nextWait(); w != 0 {
		t.Fatalf("wait past the budget %v", w)
	}
	for v, want := range map[float64]string{16: "16", 16.5: "16.5", 0.1 + 0.2: "0.3"} {
		c.waited = v
		if got := c.waitedText(); got != want {
			t.Errorf("waitedText(%v) = %s, want %s", v, got, want)
		}
	}
}

func TestHostParsing(t *testing.T) {
	if got := versionLine("Version: \tv0.1.0-dev\nGit Commit: \tabc\n"); got != "v0.1.0-dev" {
		t.Errorf("version %q", got)
	}
	stat := "1234 (a (b) c) S 1 1 1 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 1 0 100 0 0"
	if got := statCPU(stat); got != 310 {
		t.Errorf("statCPU = %v, want 310", got)
	}
	if got := statCPU("garbage"); got != 0 {
		t.Errorf("statCPU(garbage) = %v", got)
	}
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	if err := touch(a); err != nil {
		t.Fatal(err)
	}
	if !newer(a, b) || newer(b, a) {
		t.Fatal("newer with a missing file")
	}
	old := time.Now().Add(-time.Hour)
	if err := touch(b); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(a, old, old)
	if newer(a, b) || !newer(b, a) {
		t.Fatal("newer")
	}
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "x", "y"), 0o755)
	os.WriteFile(filepath.Join(tree, "x", "y", "f"), []byte("f"), 0o644)
	if err := removeTree(tree); err != nil || exists(tree) {
		t.Fatalf("removeTree: %v", err)
	}
	if err := removeTree(tree); err != nil {
		t.Fatalf("removeTree of a missing tree: %v", err)
	}
	root, err := repoRoot(filepath.Join(mustGetwd(t), "x", "y"))
	if err != nil || !exists(filepath.Join(root, "bench", "convert", "main.go")) {
		t.Fatalf("repoRoot = %s, %v", root, err)
	}
}

func mustGetwd(t *testing.T) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

func TestExtractBoot(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range map[string]string{"image": "", "image/image.boot": "RAFS"} {
		h := &tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}
		if body == "" {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		}
		tw.WriteHeader(h)
		tw.Write([]byte(body))
	}
	tw.Close()
	zw.Close()
	out := filepath.Join(t.TempDir(), "boot")
	if err := extractBoot(bytes.NewReader(buf.Bytes()), out); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != "RAFS" {
		t.Fatalf("extracted %q", b)
	}
	var empty bytes.Buffer
	zw = gzip.NewWriter(&empty)
	tar.NewWriter(zw).Close()
	zw.Close()
	if err := extractBoot(&empty, out); err == nil {
		t.Fatal("no bootstrap: no error")
	}
}

// render turns the in-memory plan and results into the section, with its
// tables, the family's dictionary-artifact row and the 0.35 verdict.
func TestRender(t *testing.T) {
	l := func(digest string, size int64, role string) layer {
		return layer{descriptor: descriptor{Digest: "sha256:" + digest, Size: size}, role: role}
	}
	img := func(ref string, ls ...layer) *image { return &image{ref: ref, layers: ls} }
	imgs := map[string]*image{
		"speed/oci":                img("127.0.0.1:1/bench/bookworm-curl:oci", l("o1", 50e6, "layer"), l("o2", 8e6, "layer")),
		"speed/estargz":            img("r/e", l("e1", 51e6, "estargz"), l("e2", 8e6, "estargz")),
		"speed/nydus":              img("r/n", l("n1", 48e6, "nydus-blob"), l("n2", 7e6, "nydus-blob"), l("nb", 5e5, "nydus-bootstrap")),
		"speed/nydus-independent":  img("r/i", l("i1", 48e6, "nydus-blob"), l("i2", 8e6, "nydus-blob"), l("ib", 5e5, "nydus-bootstrap")),
		"family/a/oci":             img("r/a", l("fa", 50e6, "layer")),
		"family/b/oci":             img("r/b", l("fb", 50e6, "layer")),
		"family-dictart/nydus-c-1": img("r/d", l("art", 7e5, "layer")),
	}
	for _, m := range []string{"dict", "default", "none", "independent"} {
		imgs["family/a/"+m] = img("r/fa", l("a1", 30e6, "nydus-blob"), l("ab", 1e6, "nydus-bootstrap"))
		second := l("b1-"+m, 2e6, "nydus-blob") // the rest of b deduplicated
		if m == "none" || m == "independent" {
			second.Size = 30e6
		}
		imgs["family/b/"+m] = img("r/fb"+m, second, l("bb-"+m, 1e6, "nydus-bootstrap"))
	}
	res := map[string][]record{}
	for _, l := range []string{lNydus, lNydusIndep, lFetch, lConvert, lPush} {
		for r := 1; r <= 3; r++ {
			res[l] = append(res[l], record{label: l, round: r, wall: float64(r), cpu: 1, svc: 0.5})
		}
	}
	res["family/default/a"] = []record{{label: "family/default/a", round: 1, wall: 1.5, cpu: 2}}
	p := &plan{
		family: []famEntry{{"a", "-", "first"}, {"b", "a", "second"}},
		cmds:   [][2]string{{"Nydus", cNydus.shown()}},
		notes:  []string{"a note"},
	}
	body, err := render(heading, res, p, imgs, nil, map[string]string{"runs": "3", "elapsed": "120"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		heading + "\n\nWritten by `bench/convert` (`make bench-convert`)",
		"| Step | Median s | Runs (s) |",
		"| Nydus: `nydusify convert` (registry → registry, default options) | 2.00 | 1.00 / 2.00 / 3.00 |",
		"| eStargz: fetch + convert + push (registry → registry) | 6.00 |",
		"### Dedup across an image family\n\n2 images",
		"| 2 | `b`: second | 1 | 50.00 MB | `a` | ? | ? | 50.00 MB | 3.00 MB | 3.00 MB | 31.00 MB | 31.00 MB |",
		"| | dictionary artifacts (the dedup scope's `nydus-chunk-dict-*` tags left in the repository: 1) | | | | | | | | 0.70 MB | | |",
		"| | **Total** | | **100.00 MB** | | | | **100.00 MB** | **34.00 MB** | **34.70 MB** | **62.00 MB** | **62.00 MB** |",
		"(data blobs 32.00 MB + bootstrap layers 2.00 MB + 1 dictionary artifacts 0.70 MB) = 0.347 of the OCI sum",
		"0.347 of the OCI sum; target ≤ 0.35: **met**",
		"- a note\n",
		"- Nydus: `bin/nydusify convert --source $SRC",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("section lacks %q:\n%s", want, body)
		}
	}
	delete(imgs, "speed/nydus")
	if _, err := render(heading, res, p, imgs, nil, nil); err == nil {
		t.Error("missing image: no error")
	}
}
