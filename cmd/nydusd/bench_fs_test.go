package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/roottest"

	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/converter"
	"github.com/nydus-go/nydus/pkg/daemon/api"
	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

// BenchmarkFS takes the nydusd figures of `make bench-fs` in one run on
// this machine, each against a reference measured in the same run:
//
//	warm   sequential read of a 1 GiB file, native ext4 vs our mount
//	       (whole-file cache + FUSE passthrough), page cache dropped and
//	       hot;
//	walk        `tar -cf /dev/null` over a Debian minbase rootfs, native
//	            vs ours;
//	walk-150k   the same over a generated tree of 150,000 entries;
//	cold        read of a 100 MB file from docker-registry on loopback;
//	rss         daemon RSS with the 150k tree mounted 10 times in one
//	            shared daemon, each mount walked;
//	rss-debian  the same with the Debian rootfs mounted 100 times.
//
// Run it with -benchtime 1x (each sub-benchmark repeats its own
// measurement BENCH_FS_RUNS times and reports the median). It needs root
// and /dev/fuse. BENCH_FS_DIR is an ext4 scratch directory (default
// /var/tmp/nydus-bench/fs); the Debian rootfs is BENCH_ROOTFS if set,
// else the minbase image of BENCH_IMAGE_DIR (default
// /var/tmp/nydus-images/debian, made by `make image`).
func BenchmarkFS(b *testing.B) {
	roottest.RequireFUSE(b)
	dir := os.Getenv("BENCH_FS_DIR")
	if dir == "" {
		dir = "/var/tmp/nydus-bench/fs"
	}
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	b.Run("warm", func(b *testing.B) { benchWarm(b, dir) })
	var debian, gen *benchTree
	trees := func(b *testing.B) {
		if debian == nil {
			debian, gen = debianTree(b, dir), generatedTree(b, dir)
		}
	}
	b.Run("walk", func(b *testing.B) { trees(b); benchWalk(b, debian) })
	b.Run("walk-150k", func(b *testing.B) { trees(b); benchWalk(b, gen) })
	b.Run("cold", func(b *testing.B) { benchCold(b) })
	b.Run("rss", func(b *testing.B) { trees(b); benchRSS(b, dir, gen, 10) })
	b.Run("rss-debian", func(b *testing.B) { trees(b); benchRSS(b, dir, debian, 100) })
}

// benchTree is a tree the benchmark walks: extracted natively, and built
// into an image.
type benchTree struct {
	name    string
	native  string // the tree on the local file system
	entries int
	boot    string // its bootstrap
	blobs   string // and blob directory
}

// treeFromTar extracts a layer natively (tar as root keeps owners and
// modes) and builds it into an image.
func treeFromTar(b *testing.B, dir, name, layer string) *benchTree {
	t := &benchTree{name: name, native: filepath.Join(dir, name+"-native")}
	os.MkdirAll(t.native, 0o755)
	if out, err := exec.Command("tar", "-xf", layer, "-C", t.native, "--numeric-owner").CombinedOutput(); err != nil {
		b.Fatalf("extract %s: %v\n%s", layer, err, out)
	}
	filepath.WalkDir(t.native, func(string, os.DirEntry, error) error { t.entries++; return nil })
	ctx := context.Background()
	out := filepath.Join(dir, name+"-img")
	t.blobs = filepath.Join(out, "blobs")
	os.MkdirAll(t.blobs, 0o755)
	f, err := os.Open(layer)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	tmp, err := os.CreateTemp(t.blobs, ".blob-")
	if err != nil {
		b.Fatal(err)
	}
	res, err := builder.Create(ctx, f, tmp, builder.Options{})
	tmp.Close()
	if err != nil {
		b.Fatalf("build %s: %v", name, err)
	}
	os.Rename(tmp.Name(), filepath.Join(t.blobs, res.BlobID))
	t.boot = filepath.Join(out, "image.boot")
	os.WriteFile(t.boot, res.Bootstrap, 0o644)
	return t
}

// generatedTree is treetest.Generate's 150,000-entry tree.
func generatedTree(b *testing.B, dir string) *benchTree {
	layer := filepath.Join(dir, "gen.tar")
	f, err := os.Create(layer)
	if err != nil {
		b.Fatal(err)
	}
	if err := treetest.Write(f, treetest.Generate(1, 150000)); err != nil {
		b.Fatal(err)
	}
	f.Close()
	return treeFromTar(b, dir, "150k", layer)
}

// debianTree is the Debian minbase rootfs: BENCH_ROOTFS, or the layer of
// the minbase image in BENCH_IMAGE_DIR.
func debianTree(b *testing.B, dir string) *benchTree {
	if r := os.Getenv("BENCH_ROOTFS"); r != "" {
		boot, blobs := buildDirImage(b, r, filepath.Join(dir, "debian-img"), builder.Options{Whiteout: builder.WhiteoutNone})
		t := &benchTree{name: "debian", native: r, boot: boot, blobs: blobs}
		filepath.WalkDir(r, func(string, os.DirEntry, error) error { t.entries++; return nil })
		return t
	}
	src := os.Getenv("BENCH_IMAGE_DIR")
	if src == "" {
		src = "/var/tmp/nydus-images/debian"
	}
	lp, err := layout.FromPath(src)
	if err != nil {
		b.Fatalf("the Debian image (make image, or BENCH_IMAGE_DIR / BENCH_ROOTFS): %v", err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		b.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		b.Fatal(err)
	}
	for _, m := range im.Manifests {
		if m.Annotations["org.opencontainers.image.ref.name"] != "minbase" {
			continue
		}
		img, err := idx.Image(m.Digest)
		if err != nil {
			b.Fatal(err)
		}
		ls, err := img.Layers()
		if err != nil || len(ls) != 1 {
			b.Fatalf("minbase image: %d layers, %v", len(ls), err)
		}
		rc, err := ls[0].Uncompressed()
		if err != nil {
			b.Fatal(err)
		}
		layer := filepath.Join(dir, "debian.tar")
		f, _ := os.Create(layer)
		_, err = io.Copy(f, rc)
		rc.Close()
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		return treeFromTar(b, dir, "debian", layer)
	}
	b.Fatalf("%s has no minbase image", src)
	return nil
}

func benchRuns() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_FS_RUNS")); err == nil && n > 0 {
		return n
	}
	return 3
}

func median(xs []float64) float64 {
	sort.Float64s(xs)
	return xs[len(xs)/2]
}

func dropCaches(b *testing.B) {
	exec.Command("sync").Run()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0o200); err != nil {
		b.Fatalf("drop caches: %v", err)
	}
}

// readSeq reads a file sequentially with 1 MiB reads and returns MB/s.
func readSeq(b *testing.B, p string) float64 {
	f, err := os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	t0 := time.Now()
	var n int64
	for {
		k, err := f.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatalf("read %s: %v", p, err)
		}
	}
	return float64(n) / 1e6 / time.Since(t0).Seconds()
}

// buildDirImage builds a directory into a bootstrap and a blob directory.
func buildDirImage(b *testing.B, src, out string, o builder.Options) (boot, blobs string) {
	ctx := context.Background()
	blobs = filepath.Join(out, "blobs")
	os.MkdirAll(blobs, 0o755)
	tmp, err := os.CreateTemp(blobs, ".blob-")
	if err != nil {
		b.Fatal(err)
	}
	rc := builder.DirTar(ctx, src)
	res, err := builder.Create(ctx, rc, tmp, o)
	rc.Close()
	tmp.Close()
	if err != nil {
		b.Fatal(err)
	}
	os.Rename(tmp.Name(), filepath.Join(blobs, res.BlobID))
	boot = filepath.Join(out, "image.boot")
	os.WriteFile(boot, res.Bootstrap, 0o644)
	return boot, blobs
}

func writeConfig(b *testing.B, blobs, workDir string, prefetchAll bool) string {
	cfg := fmt.Sprintf(`{"device":{"backend":{"type":"localfs","config":{"dir":%q}},"cache":{"type":"blobcache","config":{"work_dir":%q}}},"mode":"direct","digest_validate":false,"enable_xattr":true,"amplify_io":1048576,"fs_prefetch":{"enable":%v,"prefetch_all":%v,"threads_count":4}}`, blobs, workDir, prefetchAll, prefetchAll)
	p := filepath.Join(b.TempDir(), "config.json")
	os.WriteFile(p, []byte(cfg), 0o600)
	return p
}

func benchWarm(b *testing.B, dir string) {
	src := filepath.Join(dir, "warm-src")
	os.MkdirAll(src, 0o755)
	native := filepath.Join(src, "big.bin")
	f, err := os.Create(native)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	if _, err := io.CopyN(f, rng, 1<<30); err != nil {
		b.Fatal(err)
	}
	f.Close()
	boot, blobs := buildDirImage(b, src, filepath.Join(dir, "warm-img"), builder.Options{Whiteout: builder.WhiteoutNone, BatchSize: 0x100000})
	work := filepath.Join(dir, "warm-cache")
	d := start(b, "--bootstrap", boot, "--config", writeConfig(b, blobs, work, true))
	// Prefetch fetches every chunk, then assembles the whole-file copy
	// and reads it back: from then on opens are handed the copy.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if _, body := d.do("GET", "/metrics", nil); strings.Contains(body, `nydusd_whole_file_copies_total{mountpoint="/"} 1`) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("whole-file cache not built:\n%s", d.log)
		}
		time.Sleep(200 * time.Millisecond)
	}
	ours := filepath.Join(d.mnt, "big.bin")
	dataRead := func() float64 {
		_, body := d.do("GET", "/api/v1/metrics", nil)
		var m api.FsMetrics
		json.Unmarshal([]byte(body), &m)
		return float64(m.DataRead)
	}
	before := dataRead()
	var nd, od, nh, oh []float64
	b.ResetTimer()
	for i := 0; i < benchRuns(); i++ {
		dropCaches(b)
		nd = append(nd, readSeq(b, native))
		nh = append(nh, readSeq(b, native))
		dropCaches(b)
		od = append(od, readSeq(b, ours))
		oh = append(oh, readSeq(b, ours))
	}
	b.StopTimer()
	n1, o1, n2, o2 := median(nd), median(od), median(nh), median(oh)
	b.ReportMetric(n1, "native-disk-MB/s")
	b.ReportMetric(o1, "nydus-disk-MB/s")
	b.ReportMetric(o1/n1, "disk-ratio")
	b.ReportMetric(n2, "native-hot-MB/s")
	b.ReportMetric(o2, "nydus-hot-MB/s")
	b.ReportMetric(o2/n2, "hot-ratio")
	// Passthrough reads never reach the daemon.
	b.ReportMetric((dataRead()-before)/1e6, "daemon-MB")
}

func tarWalk(b *testing.B, root string) float64 {
	t0 := time.Now()
	cmd := exec.Command("tar", "-cf", "/dev/null", "-C", root, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("tar over %s: %v\n%s", root, err, out)
	}
	return time.Since(t0).Seconds()
}

func benchWalk(b *testing.B, t *benchTree) {
	d := start(b, "--bootstrap", t.boot, "--config", writeConfig(b, t.blobs, filepath.Join(b.TempDir(), "cache"), false))
	var nat, our []float64
	tarWalk(b, t.native) // warm the dentry and inode caches of both
	tarWalk(b, d.mnt)
	b.ResetTimer()
	for i := 0; i < benchRuns(); i++ {
		nat = append(nat, tarWalk(b, t.native))
		our = append(our, tarWalk(b, d.mnt))
	}
	b.StopTimer()
	n, o := median(nat), median(our)
	b.Logf("walked %s (%d entries)", t.name, t.entries)
	b.ReportMetric(n*1000, "native-ms")
	b.ReportMetric(o*1000, "nydus-ms")
	b.ReportMetric(o/n, "slowdown")
}

func benchCold(b *testing.B) {
	r := registrytest.Start(b, registrytest.Options{})
	want := treetest.Random(42, 100<<20)
	layer := treetest.Tar([]treetest.File{treetest.Reg("data/big.bin", 0o644, want), treetest.Reg("etc/x", 0o644, []byte("x"))})
	registrytest.PushImage(b, r.Host+"/cold:1", [][]byte{layer})
	ro := imageref.RegistryOptions{PlainHTTP: true}
	src, _ := imageref.Parse(r.Host+"/cold:1", false, ro)
	dst, _ := imageref.Parse(r.Host+"/cold:nydus", false, ro)
	_, bootData := convertInto(b, src, dst, ro, converter.Options{})
	var mbs, gets, bytes []float64
	b.ResetTimer()
	for i := 0; i < benchRuns(); i++ {
		boot := filepath.Join(b.TempDir(), "image.boot")
		os.WriteFile(boot, bootData, 0o644)
		cfg := fmt.Sprintf(`{"device":{"backend":{"type":"registry","config":{"host":%q,"repo":"cold","scheme":"http"}},"cache":{"type":"blobcache","config":{"work_dir":%q}}},"mode":"direct","digest_validate":false,"amplify_io":1048576,"fs_prefetch":{"enable":false}}`, r.Host, b.TempDir())
		cp := filepath.Join(b.TempDir(), "config.json")
		os.WriteFile(cp, []byte(cfg), 0o600)
		d := start(b, "--bootstrap", boot, "--config", cp)
		r.ResetStats()
		mbs = append(mbs, readSeq(b, filepath.Join(d.mnt, "data/big.bin")))
		st := r.Stats()
		gets = append(gets, float64(st.BlobGets))
		bytes = append(bytes, float64(st.BlobBytesServed))
		d.cmd.Process.Signal(os.Interrupt)
		d.cmd.Wait()
	}
	b.StopTimer()
	b.ReportMetric(median(mbs), "MB/s")
	b.ReportMetric(median(gets), "blob-GETs")
	b.ReportMetric(median(bytes)/1e6, "MB-fetched")
}

func vmRSS(b *testing.B, pid int) (rss, hwm float64) {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(s), "\n") {
		fs := strings.Fields(l)
		if len(fs) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(fs[1], 64)
		switch fs[0] {
		case "VmRSS:":
			rss = kb / 1024
		case "VmHWM:":
			hwm = kb / 1024
		}
	}
	return rss, hwm
}

func benchRSS(b *testing.B, dir string, t *benchTree, mounts int) {
	// Each mount of the image has its own bootstrap copy and in-memory
	// state; they share one cache directory.
	bootData, _ := os.ReadFile(t.boot)
	d := start(b)
	b.ResetTimer()
	for i := 0; i < mounts; i++ {
		boot := filepath.Join(dir, fmt.Sprintf("rss-%s-%d.boot", t.name, i))
		os.WriteFile(boot, bootData, 0o644)
		code, body := d.do("POST", fmt.Sprintf("/api/v1/mount?mountpoint=/img%d", i), api.MountRequest{FsType: "rafs", Source: boot,
			Config: fmt.Sprintf(`{"device":{"backend":{"type":"localfs","config":{"dir":%q}},"cache":{"type":"blobcache","config":{"work_dir":%q}}},"digest_validate":false}`, t.blobs, filepath.Join(dir, "rss-cache-"+t.name))})
		if code != 204 {
			b.Fatalf("mount %d: %d %s", i, code, body)
		}
		tarWalk(b, filepath.Join(d.mnt, fmt.Sprintf("img%d", i)))
	}
	b.Logf("%d mounts of %s (%d entries), each walked", mounts, t.name, t.entries)
	b.StopTimer()
	rss, hwm := vmRSS(b, d.cmd.Process.Pid)
	if p := os.Getenv("BENCH_FS_HEAP_PROFILE"); p != "" {
		// go tool pprof -sample_index=inuse_space $p.150k (or .debian)
		_, body := d.do("GET", "/debug/pprof/heap?gc=1", nil)
		os.WriteFile(p+"."+t.name, []byte(body), 0o644)
	}
	b.ReportMetric(rss, "RSS-MiB")
	b.ReportMetric(hwm, "peak-RSS-MiB")
}
