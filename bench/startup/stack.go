package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nydus-go/nydus/internal/snapshotterconf"
	"github.com/nydus-go/nydus/internal/sysproc"
	"github.com/nydus-go/nydus/pkg/daemon/api"
)

// stack is the registry, the proxy, containerd and the remote
// snapshotters (nydus in its two modes, stargz, SOCI), all under dir.
type stack struct {
	dir  string
	bins bins

	reg      *sysproc.Proc
	regAddr  string // the registry itself (pushes)
	proxy    *proxy // what systems pull through
	ctd      *sysproc.Proc
	ctdSock  string
	nydus    *sysproc.Proc
	nydusSh  *sysproc.Proc // nydus-snapshotter in shared mode
	stargz   *sysproc.Proc
	soci     *sysproc.Proc
	hadRunCD bool

	out          string // output directory
	traceSummary string // nydusify trace's summary of a cold run
}

// bins are the programs the harness runs.
type bins struct {
	nydusd, nydusImage, nydusify, nydusSnapshotter, stargzSnapshotter string
	sociSnapshotter, soci                                             string // soci-snapshotter-grpc and the soci CLI (tools/soci)
}

func newStack(dir string, b bins) (*stack, error) {
	s := &stack{dir: dir, bins: b, ctdSock: filepath.Join(dir, "containerd.sock")}
	_, err := os.Stat("/run/containerd")
	s.hadRunCD = err == nil
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s.regAddr = fmt.Sprintf("127.0.0.1:%d", port)
	cfg := fmt.Sprintf("version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n",
		filepath.Join(dir, "registry"), s.regAddr)
	if err := os.WriteFile(filepath.Join(dir, "registry.yml"), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	if s.reg, err = sysproc.Start("registry", filepath.Join(dir, "registry.log"), "docker-registry", "serve", filepath.Join(dir, "registry.yml")); err != nil {
		return nil, err
	}
	if err := sysproc.WaitFor(20*time.Second, "the registry", func() bool {
		c, err := net.Dial("tcp", s.regAddr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}); err != nil {
		return nil, err
	}
	if s.proxy, err = startProxy(s.regAddr); err != nil {
		return nil, err
	}
	if err := s.writeConfigs(); err != nil {
		return nil, err
	}
	if s.ctd, err = sysproc.Start("containerd", filepath.Join(dir, "containerd.log"), "containerd", "--config", filepath.Join(dir, "containerd.toml")); err != nil {
		return nil, err
	}
	if err := sysproc.WaitFor(20*time.Second, "containerd", func() bool { _, err := s.ctr("version"); return err == nil }); err != nil {
		return nil, err
	}
	if err := s.restartSnapshotters(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *stack) writeConfigs() error {
	d := s.dir
	files := map[string]string{
		"containerd.toml": fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[metrics]
  address = ""
[proxy_plugins]
  [proxy_plugins.nydus]
    type = "snapshot"
    address = %q
  [proxy_plugins.nydus-shared]
    type = "snapshot"
    address = %q
  [proxy_plugins.stargz]
    type = "snapshot"
    address = %q
  [proxy_plugins.soci]
    type = "snapshot"
    address = %q
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %q
`, filepath.Join(d, "containerd/root"), filepath.Join(d, "containerd/state"), s.ctdSock, s.ctdSock+".ttrpc",
			filepath.Join(d, "nydus.sock"), filepath.Join(d, "nydus-shared.sock"), filepath.Join(d, "stargz.sock"),
			filepath.Join(d, "soci.sock"), filepath.Join(d, "containerd/opt")),
		// Prefetch is on: an image with a prefetch list gets it fetched
		// in the background; one without has nothing to prefetch.
		"nydusd.json": `{"device":{"backend":{"type":"registry","config":{"scheme":"http","timeout":10,"connect_timeout":5,"retry_limit":2}},` +
			`"cache":{"type":"blobcache"}},"mode":"direct","digest_validate":false,"iostats_files":true,"access_pattern":true,` +
			`"enable_xattr":true,"fs_prefetch":{"enable":true,"prefetch_all":false,"threads_count":4}}`,
		"nydus.toml":        nydusTOML(filepath.Join(d, "nr"), filepath.Join(d, "nydus.sock"), "dedicated", filepath.Join(d, "nydusd.json"), s.bins),
		"nydus-shared.toml": nydusTOML(filepath.Join(d, "nrs"), filepath.Join(d, "nydus-shared.sock"), "shared", filepath.Join(d, "nydusd.json"), s.bins),
		"stargz.toml":       fmt.Sprintf("[resolver.host.%q]\nmirrors = [{ host = %q, insecure = true }]\n", s.proxy.Addr, s.proxy.Addr),
		// SOCI: upstream's defaults, but its content store (the SOCI
		// indexes and zTOCs) under its root, so that a restart with an
		// empty root is cold; its mirror host is a URL.
		"soci.toml": fmt.Sprintf("[resolver.host.%q]\nmirrors = [{ host = %q, insecure = true }]\n[content_store]\ntype = \"soci\"\n",
			s.proxy.Addr, "http://"+s.proxy.Addr),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(d, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// nydusTOML is a nydus-snapshotter configuration: dedicated mode spawns
// one nydusd per image, shared mode starts one nydusd with the
// snapshotter and mounts every image in it through its API.
func nydusTOML(root, sock, mode, nydusdConfig string, b bins) string {
	return snapshotterconf.Config{Root: root, Address: sock, DaemonMode: mode, NydusdConfig: nydusdConfig,
		NydusdPath: b.nydusd, NydusImagePath: b.nydusImage}.TOML()
}

// restartSnapshotters stops the named remote snapshotters (both when
// none is named), removes everything they kept (mounts, caches, nydusd
// processes) and starts them again, so the next run is cold; then waits
// until containerd reaches them.
func (s *stack) restartSnapshotters(names ...string) error {
	if len(names) == 0 {
		names = []string{"nydus", "nydus-shared", "stargz", "soci"}
	}
	for _, sn := range names {
		var err error
		switch sn {
		case "nydus":
			s.nydus.Stop(syscall.SIGTERM)
			if err = wipe(filepath.Join(s.dir, "nr")); err != nil {
				return err
			}
			s.nydus, err = sysproc.Start("nydus-snapshotter", filepath.Join(s.dir, "nydus-snapshotter.log"),
				s.bins.nydusSnapshotter, "--config", filepath.Join(s.dir, "nydus.toml"))
		case "nydus-shared":
			s.nydusSh.Stop(syscall.SIGTERM)
			if err = wipe(filepath.Join(s.dir, "nrs")); err != nil {
				return err
			}
			s.nydusSh, err = sysproc.Start("nydus-snapshotter (shared)", filepath.Join(s.dir, "nydus-shared-snapshotter.log"),
				s.bins.nydusSnapshotter, "--config", filepath.Join(s.dir, "nydus-shared.toml"))
		case "stargz":
			s.stargz.Stop(syscall.SIGTERM)
			if err = wipe(filepath.Join(s.dir, "sr")); err != nil {
				return err
			}
			s.stargz, err = sysproc.Start("stargz-snapshotter", filepath.Join(s.dir, "stargz-snapshotter.log"),
				s.bins.stargzSnapshotter, "-config", filepath.Join(s.dir, "stargz.toml"), "-root", filepath.Join(s.dir, "sr"),
				"-address", filepath.Join(s.dir, "stargz.sock"), "-log-level", "warn")
		case "soci":
			// Its info log says which layers it mounted lazily.
			s.soci.Stop(syscall.SIGTERM)
			if err = wipe(filepath.Join(s.dir, "so")); err != nil {
				return err
			}
			s.soci, err = sysproc.Start("soci-snapshotter", filepath.Join(s.dir, "soci-snapshotter.log"),
				s.bins.sociSnapshotter, "-config", filepath.Join(s.dir, "soci.toml"), "-root", filepath.Join(s.dir, "so"),
				"-address", filepath.Join(s.dir, "soci.sock"), "-log-level", "info")
		default:
			continue
		}
		if err != nil {
			return err
		}
		if err := sysproc.WaitFor(30*time.Second, "containerd to reach the "+sn+" snapshotter", func() bool {
			_, err := s.ctr("snapshots", "--snapshotter", sn, "ls")
			return err == nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// wipe kills the processes using root, unmounts it and removes it.
func wipe(root string) error {
	killUnder(root)
	sysproc.UnmountUnder(root)
	return os.RemoveAll(root)
}

// cold removes every image and container, restarts the named snapshotters
// (none by default) with empty roots, then drops the page cache.
func (s *stack) cold(snapshotters ...string) error {
	if out, err := s.ctr("containers", "ls", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			s.ctr("tasks", "kill", "-s", "SIGKILL", id)
			s.ctr("tasks", "rm", "-f", id)
			s.ctr("containers", "rm", id)
		}
	}
	if out, err := s.ctr("images", "ls", "-q"); err == nil && strings.TrimSpace(out) != "" {
		if _, err := s.ctr(append([]string{"images", "rm", "--sync"}, strings.Fields(out)...)...); err != nil {
			return err
		}
	}
	if len(snapshotters) > 0 {
		if err := s.restartSnapshotters(snapshotters...); err != nil {
			return err
		}
	}
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}

// coldFor makes the next run of a snapshotter cold at the least cost:
// removing the images empties overlayfs's content and snapshots, and
// makes nydus-snapshotter stop the image's nydusd and delete its cache
// files (it is restarted only if any are left); stargz-snapshotter and the
// SOCI snapshotter keep caches and are restarted with an empty root
// (after each of their runs).
func (s *stack) coldFor(snapshotter string) error {
	if err := s.cold(); err != nil {
		return err
	}
	switch snapshotter {
	case "nydus":
		left, _ := os.ReadDir(filepath.Join(s.dir, "nr", "cache"))
		if len(left) > 0 || len(sysproc.PIDsMatching(filepath.Join(s.dir, "nr")+"/")) > 0 {
			return s.cold("nydus")
		}
	case "nydus-shared":
		// The shared nydusd keeps running, as on a node; the image's
		// cache files must be gone.
		left, _ := os.ReadDir(filepath.Join(s.dir, "nrs", "cache"))
		if len(left) > 0 {
			return s.cold("nydus-shared")
		}
	}
	return nil
}

// close stops everything by PID and unmounts what is left.
func (s *stack) close() {
	if s.ctd.Alive() {
		s.cold()
	}
	s.nydus.Stop(syscall.SIGTERM)
	s.nydusSh.Stop(syscall.SIGTERM)
	s.stargz.Stop(syscall.SIGTERM)
	s.soci.Stop(syscall.SIGTERM)
	if s.soci != nil && s.out != "" {
		// Kept: which layers SOCI mounted lazily, and why not.
		if b, err := os.ReadFile(s.soci.Log); err == nil {
			os.WriteFile(filepath.Join(s.out, "soci-snapshotter.log"), b, 0o644)
		}
	}
	s.ctd.Stop(syscall.SIGTERM)
	killUnder(s.dir) // nydusd daemons and shims left behind
	sysproc.UnmountUnder(s.dir)
	if s.proxy != nil {
		s.proxy.close()
	}
	s.reg.Stop(syscall.SIGTERM)
	if !s.hadRunCD {
		os.RemoveAll("/run/containerd")
	}
	if cg, _ := filepath.Glob("/sys/fs/cgroup/*/default"); len(cg) > 0 {
		for _, d := range cg {
			os.Remove(d)
		}
	}
}

// run runs a command with a timeout and returns its combined output.
func run(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("%s %s: timed out after %s", name, strings.Join(args, " "), timeout)
	}
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, lastLines(string(out), 3))
	}
	return string(out), nil
}

// runStdin is run with stdin.
func runStdin(stdin string, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, lastLines(string(out), 3))
	}
	return string(out), nil
}

// apiTimeout bounds each request to a nydusd API socket.
const apiTimeout = 10 * time.Second

// nydusdAPI is a client of the nydusd API socket sock.
func nydusdAPI(sock string) *api.Client {
	return api.NewClient(sock, api.WithTimeout(apiTimeout))
}

func (s *stack) ctr(args ...string) (string, error) {
	return run(3*time.Minute, "ctr", append([]string{"-a", s.ctdSock}, args...)...)
}

func (s *stack) ctrRemote(args ...string) (string, error) {
	return run(5*time.Minute, "ctr-remote", append([]string{"-a", s.ctdSock}, args...)...)
}

// runReady runs argv in a new container and returns the time to its first
// line of output (ready, when onReady is called too) and to its exit, and
// its output.
func (s *stack) runReady(snapshotter, ref, id string, argv []string, onReady func()) (ready, exit time.Duration, out string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	args := append([]string{"-a", s.ctdSock, "run", "--rm"}, "--snapshotter", snapshotter, ref, id)
	cmd := exec.CommandContext(ctx, "ctr", append(args, argv...)...)
	cmd.WaitDelay = 5 * time.Second
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, "", err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, "", err
	}
	var buf strings.Builder
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if ready == 0 {
			ready = time.Since(start)
			if onReady != nil {
				onReady()
			}
		}
		buf.WriteString(sc.Text() + "\n")
	}
	err = cmd.Wait()
	exit = time.Since(start)
	if ctx.Err() != nil {
		err = errors.New("timed out")
	}
	if err == nil && ready == 0 {
		err = errors.New("no output")
	}
	if err != nil {
		err = fmt.Errorf("ctr run %s: %w: %s", ref, err, lastLines(stderr.String()+buf.String(), 3))
	}
	return ready, exit, buf.String(), err
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// killUnder SIGKILLs the processes whose command line mentions dir (nydusd
// daemons, containerd shims), except this one.
func killUnder(dir string) {
	for i := 0; i < 3; i++ {
		pids := sysproc.PIDsMatching(dir + "/")
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimSpace(s), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, " | ")
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
