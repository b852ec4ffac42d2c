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

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/converter"
	"github.com/nydus-go/nydus/pkg/daemon/api"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

// BenchmarkFS takes the nydusd figures of `make bench-fs` in one run on
// this machine, each against a reference measured in the same run:
//
//	warm   sequential read of a 1 GiB file, native ext4 vs our mount
//	       (whole-file cache + FUSE passthrough), page cache dropped and
//	       hot;
//	walk   `tar -cf /dev/null` over a Debian rootfs, native vs ours;
//	cold   read of a 100 MB file from docker-registry on loopback;
//	rss    daemon RSS with 10 images mounted in one shared daemon.
//
// Run it with -benchtime 1x (each sub-benchmark repeats its own
// measurement BENCH_FS_RUNS times and reports the median). It needs root
// and /dev/fuse. BENCH_FS_DIR is an ext4 scratch directory (default
// /var/tmp/nydus-bench/fs); BENCH_ROOTFS the tree to walk (default the
// bench-build bookworm rootfs if present, else /usr).
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
	b.Run("walk", func(b *testing.B) { benchWalk(b, dir) })
	b.Run("cold", func(b *testing.B) { benchCold(b) })
	b.Run("rss", func(b *testing.B) { benchRSS(b, dir) })
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

func benchRootfs() string {
	if r := os.Getenv("BENCH_ROOTFS"); r != "" {
		return r
	}
	if _, err := os.Stat("/var/tmp/nydus-bench/rootfs.ok"); err == nil {
		return "/var/tmp/nydus-bench/rootfs"
	}
	return "/usr"
}

func benchWalk(b *testing.B, dir string) {
	root := benchRootfs()
	boot, blobs := buildDirImage(b, root, filepath.Join(dir, "walk-img"), builder.Options{Whiteout: builder.WhiteoutNone})
	d := start(b, "--bootstrap", boot, "--config", writeConfig(b, blobs, filepath.Join(dir, "walk-cache"), false))
	var nat, our []float64
	tarWalk(b, root) // warm the dentry and inode caches of both
	tarWalk(b, d.mnt)
	b.ResetTimer()
	for i := 0; i < benchRuns(); i++ {
		nat = append(nat, tarWalk(b, root))
		our = append(our, tarWalk(b, d.mnt))
	}
	b.StopTimer()
	n, o := median(nat), median(our)
	b.Logf("walked %s", root)
	b.ReportMetric(n*1000, "native-ms")
	b.ReportMetric(o*1000, "nydus-ms")
	b.ReportMetric(o/n, "slowdown")
}

func benchCold(b *testing.B) {
	ctx := context.Background()
	r := registrytest.Start(b, registrytest.Options{})
	want := treetest.Random(42, 100<<20)
	layer := treetest.Tar([]treetest.File{treetest.Reg("data/big.bin", 0o644, want), treetest.Reg("etc/x", 0o644, []byte("x"))})
	registrytest.PushImage(b, r.Host+"/cold:1", [][]byte{layer})
	ro := converter.RegistryOptions{PlainHTTP: true}
	src, _ := converter.ParseRef(r.Host+"/cold:1", false, ro)
	dst, _ := converter.ParseRef(r.Host+"/cold:nydus", false, ro)
	if _, err := converter.Convert(ctx, src, dst, converter.Options{Source: ro, Target: ro, WorkDir: b.TempDir()}); err != nil {
		b.Fatal(err)
	}
	img, err := remote.Image(dst.Name, ro.Remote(ctx)...)
	if err != nil {
		b.Fatal(err)
	}
	ls, _ := img.Layers()
	rc, _ := ls[len(ls)-1].Compressed()
	bootData, err := converter.ExtractBootstrap(rc, 1<<30)
	rc.Close()
	if err != nil {
		b.Fatal(err)
	}
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

func benchRSS(b *testing.B, dir string) {
	root := benchRootfs()
	// Ten mounts of the rootfs image, each with its own bootstrap copy
	// and in-memory state, sharing one cache directory.
	boot0, blobs := buildDirImage(b, root, filepath.Join(dir, "rss-img"), builder.Options{Whiteout: builder.WhiteoutNone})
	bootData, _ := os.ReadFile(boot0)
	d := start(b)
	b.ResetTimer()
	for i := 0; i < 10; i++ {
		boot := filepath.Join(dir, fmt.Sprintf("rss-%d.boot", i))
		os.WriteFile(boot, bootData, 0o644)
		code, body := d.do("POST", fmt.Sprintf("/api/v1/mount?mountpoint=/img%d", i), api.MountRequest{FsType: "rafs", Source: boot,
			Config: fmt.Sprintf(`{"device":{"backend":{"type":"localfs","config":{"dir":%q}},"cache":{"type":"blobcache","config":{"work_dir":%q}}},"digest_validate":false}`, blobs, filepath.Join(dir, "rss-cache"))})
		if code != 204 {
			b.Fatalf("mount %d: %d %s", i, code, body)
		}
		tarWalk(b, filepath.Join(d.mnt, fmt.Sprintf("img%d", i)))
	}
	b.StopTimer()
	rss, hwm := vmRSS(b, d.cmd.Process.Pid)
	if p := os.Getenv("BENCH_FS_HEAP_PROFILE"); p != "" {
		// go tool pprof -sample_index=inuse_space $p
		_, body := d.do("GET", "/debug/pprof/heap?gc=1", nil)
		os.WriteFile(p, []byte(body), 0o644)
	}
	b.ReportMetric(rss, "RSS-MiB")
	b.ReportMetric(hwm, "peak-RSS-MiB")
}
