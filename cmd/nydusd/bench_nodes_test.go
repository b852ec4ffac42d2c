package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/roottest"
	"github.com/nydus-go/nydus/internal/sysproc"
	"github.com/nydus-go/nydus/pkg/converter"
	"github.com/nydus-go/nydus/pkg/daemon/api"
	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

// startSliceCache starts Debian's nginx as a pull-through cache of the
// origin that keeps blobs by slice (the slice module, sliceSize) and lets one
// request per slice through to the origin at a time (proxy_cache_lock):
// a mirror that caches what lazy readers fetch, as a CDN or Dragonfly
// does, rather than whole blobs. It returns the mirror's URL; the test's
// cleanup stops it.
func startSliceCache(b *testing.B, origin string) string {
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		b.Fatalf("nginx is not installed (make deps installs Debian's nginx-light): %v", err)
	}
	dir := b.TempDir()
	port := freeTCPPort(b)
	conf := fmt.Sprintf(`daemon off;
user root;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
  access_log %[1]s/access.log;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  proxy_cache_path %[1]s/cache levels=1:2 keys_zone=blobs:16m max_size=8g inactive=1d use_temp_path=off;
  server {
    listen 127.0.0.1:%[2]d;
    location ~ ^/v2/.+/blobs/ {
      slice %[4]s;
      proxy_cache blobs;
      proxy_cache_key $uri$slice_range;
      proxy_set_header Range $slice_range;
      proxy_http_version 1.1;
      proxy_cache_valid 200 206 1d;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 60s;
      proxy_cache_lock_age 60s;
      proxy_pass http://%[3]s;
    }
    location / {
      proxy_pass http://%[3]s;
    }
  }
}
`, dir, port, origin, sliceSize())
	cfg := filepath.Join(dir, "nginx.conf")
	os.WriteFile(cfg, []byte(conf), 0o644)
	p, err := sysproc.Start("nginx", filepath.Join(dir, "nginx.log"), nginx, "-c", cfg, "-p", dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Stop(syscall.SIGQUIT) })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return "http://" + addr
		}
		if time.Now().After(deadline) {
			errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			b.Fatalf("nginx did not start:\n%s%s", p.Tail(), errLog)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freeTCPPort returns a loopback port that was free a moment ago.
func freeTCPPort(b *testing.B) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// BenchmarkNodes is `make bench-nodes`: N nydusd daemons on this machine,
// each with its own cache like N nodes, start the same image's workload
// at the same time (N = 1, 4, 16; BENCH_NODES overrides), first all
// straight from the origin registry, then all through one pull-through
// cache of it, configured as nydusd's `mirrors` and cold at the start of
// each N:
//
//	slice-cache      Debian's nginx keeping blob ranges by 128 KiB slice
//	                 (BENCH_SLICE overrides) and letting one request per
//	                 slice through at a time, as a CDN or Dragonfly's
//	                 piece store does;
//	registry-mirror  Debian's docker-registry as a pull-through cache
//	                 (proxy.remoteurl), which fetches whole blobs.
//
// The image is the Debian curl image of `make image` (BENCH_IMAGE_DIR)
// converted with nydusify's defaults; the workload is `curl --version`
// run in the mount by chroot, with the default nydusd configuration of
// nydus-snapshotter (prefetch of the image's hot set on). A node's
// start time runs from nydusd's launch to the workload's exit. Reported
// per case: the origin's blob egress (bytes and GETs, from its counting
// proxy, once the nodes are idle), that egress over one node's start
// from the origin (the origin-1 case of the same run), and the start
// times' median and maximum. Run it with -benchtime 1x; it needs root
// and /dev/fuse.
func BenchmarkNodes(b *testing.B) {
	roottest.RequireFUSE(b)
	ns := []int{1, 4, 16}
	if s := os.Getenv("BENCH_NODES"); s != "" {
		ns = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				b.Fatalf("BENCH_NODES=%q: want a list of node counts such as 1,4,16", s)
			}
			ns = append(ns, n)
		}
	}
	origin := registrytest.Start(b, registrytest.Options{})
	boot := nodesImage(b, origin)
	var one float64 // origin bytes of one node's start, from the direct N=1 case
	for _, mode := range []string{"origin", "slice-cache", "registry-mirror"} {
		for _, n := range ns {
			b.Run(fmt.Sprintf("%s-%d", mode, n), func(b *testing.B) {
				mirror := ""
				switch mode {
				case "registry-mirror":
					m := registrytest.Start(b, registrytest.Options{Remote: "http://" + origin.Host})
					mirror = "http://" + m.Host
				case "slice-cache":
					mirror = startSliceCache(b, origin.Host)
				}
				origin.ResetStats()
				times := startNodes(b, n, boot, origin.Host, mirror, func() { quiesce(origin) })
				st := origin.Stats()
				bytes := float64(st.BlobBytesServed)
				if mode == "origin" && n == 1 {
					one = bytes
				}
				b.ReportMetric(bytes/1e6, "origin-MB")
				b.ReportMetric(float64(st.BlobGets), "origin-GETs")
				if one > 0 {
					b.ReportMetric(bytes/one, "x-one-start")
				}
				sort.Float64s(times)
				b.ReportMetric(times[len(times)/2], "start-median-ms")
				b.ReportMetric(times[len(times)-1], "start-max-ms")
			})
		}
	}
}

// nodesImage converts the Debian curl image into the origin as
// debian:nydus and returns its bootstrap file.
func nodesImage(b *testing.B, origin *registrytest.Registry) string {
	return convertBenchImage(b, origin, "curl", "debian:nydus", converter.Options{})
}

// convertBenchImage converts a tag of the Debian image layout of `make
// image` into the origin and returns its bootstrap file.
func convertBenchImage(b *testing.B, origin *registrytest.Registry, tag, target string, o converter.Options) string {
	src := os.Getenv("BENCH_IMAGE_DIR")
	if src == "" {
		src = "/var/tmp/nydus-images/debian"
	}
	ro := imageref.RegistryOptions{PlainHTTP: true}
	from, err := imageref.Parse("oci:"+src+":"+tag, false, ro)
	if err != nil {
		b.Fatal(err)
	}
	to, _ := imageref.Parse(origin.Host+"/"+target, false, ro)
	_, data := convertInto(b, from, to, ro, o)
	boot := filepath.Join(b.TempDir(), "image.boot")
	if err := os.WriteFile(boot, data, 0o644); err != nil {
		b.Fatal(err)
	}
	return boot
}

// nodeConfig is nydus-snapshotter's default nydusd configuration (as
// bench/startup writes it) with the node's own cache, and the mirror if
// any.
func nodeConfig(host, repo, mirror, workDir string) string {
	mirrors := ""
	if mirror != "" {
		mirrors = fmt.Sprintf(`,"mirrors":[{"host":%q}]`, mirror)
	}
	return fmt.Sprintf(`{"device":{"backend":{"type":"registry","config":{"host":%q,"repo":%q,"scheme":"http","timeout":10,"connect_timeout":5,"retry_limit":2%s}},`+
		`"cache":{"type":"blobcache","config":{"work_dir":%q}}},"mode":"direct","digest_validate":false,"iostats_files":true,"access_pattern":true,`+
		`"enable_xattr":true,"fs_prefetch":{"enable":true,"prefetch_all":false,"threads_count":4}}`, host, repo, mirrors, workDir)
}

// startNodes starts n nodes at once and returns each one's start time in
// milliseconds: nydusd launched, mounted, and the workload run in the
// mount. Every daemon is stopped and unmounted before it returns.
func startNodes(b *testing.B, n int, boot, host, mirror string, settled func()) []float64 {
	type node struct {
		dir, mnt, sock string
		cmd            *exec.Cmd
		log            *syncBuffer
	}
	nodes := make([]*node, n)
	for i := range nodes {
		dir := b.TempDir()
		nd := &node{dir: dir, mnt: filepath.Join(dir, "mnt"), sock: filepath.Join(dir, "api.sock"), log: &syncBuffer{}}
		os.MkdirAll(nd.mnt, 0o755)
		os.WriteFile(filepath.Join(dir, "config.json"), []byte(nodeConfig(host, "debian", mirror, filepath.Join(dir, "cache"))), 0o600)
		nodes[i] = nd
	}
	defer func() {
		for _, nd := range nodes {
			(&daemonProc{cmd: nd.cmd, mnt: nd.mnt}).stop()
		}
	}()
	times := make([]float64, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	startLine := make(chan struct{})
	for i, nd := range nodes {
		nd.cmd = exec.Command(bin, "--mountpoint", nd.mnt, "--apisock", nd.sock, "--bootstrap", boot,
			"--config", filepath.Join(nd.dir, "config.json"), "--log-level", "warn")
		nd.cmd.Stdout, nd.cmd.Stderr = nd.log, nd.log
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-startLine
			t0 := time.Now()
			if err := nd.cmd.Start(); err != nil {
				errs[i] = err
				return
			}
			d := &daemonProc{cmd: nd.cmd, sock: nd.sock, mnt: nd.mnt, log: nd.log, client: api.NewClient(nd.sock)}
			defer d.client.Close()
			for {
				if info, err := d.info(); err == nil && info.State == api.StateRunning {
					break
				}
				if time.Since(t0) > 60*time.Second {
					errs[i] = fmt.Errorf("node %d: nydusd not RUNNING after 60 s:\n%s", i, nd.log)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
			out, err := exec.Command("chroot", nd.mnt, "/usr/bin/curl", "--version").CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), "curl ") {
				errs[i] = fmt.Errorf("node %d: curl --version in the mount: %v\n%s\nnydusd:\n%s", i, err, out, nd.log)
				return
			}
			times[i] = float64(time.Since(t0).Microseconds()) / 1000
		}()
	}
	b.ResetTimer()
	close(startLine)
	wg.Wait()
	b.StopTimer()
	for _, err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	settled() // the nodes' background fetches end before they are stopped
	return times
}

// quiesce waits until the origin has served no blob byte for half a
// second (at most 30 s): what the nodes' starts fetch in the background
// (prefetch, read-ahead, a mirror filling its storage) counts too.
func quiesce(r *registrytest.Registry) {
	last, still := r.Stats().BlobBytesServed, 0
	for deadline := time.Now().Add(30 * time.Second); still < 5 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		if n := r.Stats().BlobBytesServed; n != last {
			last, still = n, 0
		} else {
			still++
		}
	}
}

// sliceSize is the slice cache's slice: BENCH_SLICE, default 128 KiB
// (with 1 MiB slices the edges of nydusd's 1 MiB spans cost 1.7× the
// bytes a start needs; 256 KiB, 1.2×; 128 KiB, 1.1×).
func sliceSize() string {
	if s := os.Getenv("BENCH_SLICE"); s != "" {
		return s
	}
	return "128k"
}
