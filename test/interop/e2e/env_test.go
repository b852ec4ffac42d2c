//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/nydus-go/nydus/internal/roottest"
	"github.com/nydus-go/nydus/internal/snapshotterconf"
	"github.com/nydus-go/nydus/internal/sysproc"
	"github.com/nydus-go/nydus/pkg/daemon/api"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

const (
	// cmdTimeout bounds every ctr, ctr-remote and nydusify command, so a
	// hang fails the test instead of stalling CI.
	cmdTimeout = 2 * time.Minute
	// snapshotterName is the proxy plugin name containerd knows the
	// snapshotter by (ctr --snapshotter).
	snapshotterName = "nydus"
	// blobAnnotation marks Nydus data blob layers in a converted manifest.
	blobAnnotation = "containerd.io/snapshot/nydus-blob"
	// osRelease and curlVersion are what the Debian image's
	// /etc/os-release and `curl --version` print.
	osRelease   = `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"`
	curlVersion = "curl 7.88.1"
)

// bins are the binaries and the image layout the tests use; make e2e sets
// their environment variables.
type bins struct {
	nydusd, nydusify, nydusImage, snapshotter string
	// layout is the OCI layout with the debian:minbase and debian:curl
	// images (scripts/debian-image.sh).
	layout string
}

func getBins(t *testing.T) bins {
	t.Helper()
	get := func(env string) string {
		p := os.Getenv(env)
		if p == "" {
			t.Fatalf("%s is not set: run the end-to-end tests with `make e2e`", env)
		}
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s: %v", env, err)
		}
		return p
	}
	return bins{
		nydusd:      get("NYDUSD"),
		nydusify:    get("NYDUSIFY"),
		nydusImage:  get("NYDUS_IMAGE"),
		snapshotter: get("SNAPSHOTTER"),
		layout:      get("E2E_IMAGE"),
	}
}

// startProc starts a daemon with sysproc.Start, failing the test if it
// cannot.
func startProc(t *testing.T, name, logPath string, argv ...string) *sysproc.Proc {
	t.Helper()
	p, err := sysproc.Start(name, logPath, argv...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// snOptions configure the snapshotter of an env.
type snOptions struct {
	// mode is daemon_mode: "dedicated" (default) or "shared".
	mode string
	// recover is [daemon] recover_policy: "failover" (default), "restart".
	recover string
	// backend is extra registry backend config JSON fields, e.g.
	// `"timeout":2,` (the template already sets scheme, timeouts, retries).
	backend string
	// digestValidate sets the template's digest_validate (default false,
	// what users get: passthrough, cached data verified at rest).
	digestValidate bool
}

// env is one registry, one containerd and (unless disabled) one upstream
// nydus-snapshotter driving our nydusd, all under dir.
type env struct {
	t   *testing.T
	b   bins
	dir string
	reg *registrytest.Registry

	ctd     *sysproc.Proc
	ctdSock string

	sn      *sysproc.Proc
	snOpts  snOptions
	snRoot  string
	snCfg   string
	snSock  string
	hadRunC bool // /run/containerd existed before the test
}

// newEnv starts the registry, containerd and, when sn is non-nil, the
// snapshotter; teardown is registered with t.Cleanup.
func newEnv(t *testing.T, sn *snOptions) *env {
	t.Helper()
	roottest.RequireRoot(t)
	b := getBins(t)
	for _, tool := range []string{"containerd", "ctr", "ctr-remote", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (apt-get install containerd runc stargz-snapshotter): %v", tool, err)
		}
	}
	// The snapshotter's root must be at most 70 bytes: keep dir short.
	dir, err := os.MkdirTemp("/tmp", "e2e-")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, b: b, dir: dir}
	_, err = os.Stat("/run/containerd")
	e.hadRunC = err == nil
	t.Cleanup(e.teardown)
	e.reg = registrytest.Start(t, registrytest.Options{})
	if sn != nil {
		e.snOpts = *sn
		if e.snOpts.mode == "" {
			e.snOpts.mode = "dedicated"
		}
		if e.snOpts.recover == "" {
			e.snOpts.recover = "failover"
		}
		e.snRoot = filepath.Join(dir, "sn")
		e.snSock = filepath.Join(dir, "sn.sock")
		e.writeSnapshotterConfig()
		e.startSnapshotter()
	}
	e.startContainerd(sn != nil)
	return e
}

func (e *env) writeSnapshotterConfig() {
	t := e.t
	// E2E_LOG_LEVEL sets the snapshotter's and nydusd's log level.
	logLevel := os.Getenv("E2E_LOG_LEVEL")
	if logLevel == "" {
		logLevel = "info"
	}
	tmpl := filepath.Join(e.dir, "nydusd.json")
	// A v1 template as the snapshotter wants it: plain HTTP to the local
	// registry, file metrics on, prefetch off so the bytes fetched are the
	// bytes the container reads.
	cfg := `{"device":{"backend":{"type":"registry","config":{"scheme":"http",` + e.snOpts.backend +
		`"timeout":5,"connect_timeout":5,"retry_limit":2}},"cache":{"type":"blobcache"}},` +
		`"mode":"direct","digest_validate":` + fmt.Sprint(e.snOpts.digestValidate) + `,"iostats_files":true,"enable_xattr":true,` +
		`"fs_prefetch":{"enable":false}}`
	if err := os.WriteFile(tmpl, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	toml := snapshotterconf.Config{Root: e.snRoot, Address: e.snSock, DaemonMode: e.snOpts.mode, NydusdConfig: tmpl,
		NydusdPath: e.b.nydusd, NydusImagePath: e.b.nydusImage, RecoverPolicy: e.snOpts.recover, LogLevel: logLevel}.TOML()
	e.snCfg = filepath.Join(e.dir, "snapshotter.toml")
	if err := os.WriteFile(e.snCfg, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startSnapshotter starts (or restarts) the snapshotter and waits for its
// gRPC socket.
func (e *env) startSnapshotter() {
	t := e.t
	t.Helper()
	os.Remove(e.snSock)
	e.sn = startProc(t, "snapshotter", filepath.Join(e.dir, "snapshotter.log"),
		e.b.snapshotter, "--config", e.snCfg)
	waitFor(t, 20*time.Second, "the snapshotter's socket", func() bool {
		if !e.sn.Alive() {
			t.Fatalf("snapshotter exited:\n%s", e.sn.Tail())
		}
		c, err := net.Dial("unix", e.snSock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

func (e *env) startContainerd(withSnapshotter bool) {
	t := e.t
	d := filepath.Join(e.dir, "containerd")
	e.ctdSock = filepath.Join(d, "containerd.sock")
	proxy := ""
	if withSnapshotter {
		proxy = fmt.Sprintf("[proxy_plugins]\n  [proxy_plugins.%s]\n    type = \"snapshot\"\n    address = %q\n",
			snapshotterName, e.snSock)
	}
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  level = "info"
[metrics]
  address = ""
%s[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %q
`, filepath.Join(d, "root"), filepath.Join(d, "state"), e.ctdSock, e.ctdSock+".ttrpc", proxy, filepath.Join(d, "opt"))
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(d, "config.toml")
	if err := os.WriteFile(p, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e.ctd = startProc(t, "containerd", filepath.Join(e.dir, "containerd.log"), "containerd", "--config", p)
	waitFor(t, 20*time.Second, "containerd", func() bool {
		if !e.ctd.Alive() {
			t.Fatalf("containerd exited:\n%s", e.ctd.Tail())
		}
		_, err := e.ctr("version")
		return err == nil
	})
}

// teardown removes containers and images, stops every process the test
// started by PID (the snapshotter's nydusd and containerd's shims
// included), unmounts what is left under dir and removes dir.
func (e *env) teardown() {
	t := e.t
	if hold := os.Getenv("E2E_HOLD"); hold != "" && t.Failed() {
		// Debugging: keep everything running until the file appears.
		t.Logf("holding %s until %s exists", e.dir, hold)
		for {
			if _, err := os.Stat(hold); err == nil {
				break
			}
			time.Sleep(time.Second)
		}
	}
	if t.Failed() && e.snRoot != "" {
		// Goroutine dumps of the daemons into the snapshotter's log
		// (kept with E2E_KEEP=1).
		for _, pid := range e.nydusdPIDs() {
			syscall.Kill(pid, syscall.SIGQUIT)
		}
		time.Sleep(time.Second)
	}
	if e.ctd != nil && e.ctd.Alive() {
		if out, err := e.ctr("containers", "ls", "-q"); err == nil {
			for _, id := range strings.Fields(out) {
				e.removeContainer(id)
			}
		}
		if out, err := e.ctr("images", "ls", "-q"); err == nil && strings.TrimSpace(out) != "" {
			e.ctr(append([]string{"images", "rm", "--sync"}, strings.Fields(out)...)...)
		}
	}
	e.sn.Stop(syscall.SIGTERM)
	// nydusd daemons the snapshotter left running, and shims.
	others := func(s string) []int {
		return slices.DeleteFunc(sysproc.PIDsMatching(s), func(pid int) bool {
			return e.ctd != nil && e.ctd.Alive() && pid == e.ctd.Cmd.Process.Pid
		})
	}
	for _, pid := range others(e.dir) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	sysproc.WaitGone(func() []int { return others(e.dir) })
	unmountUnder(t, e.dir)
	e.ctd.Stop(syscall.SIGTERM)
	for _, pid := range sysproc.PIDsMatching(e.dir) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	sysproc.WaitGone(func() []int { return sysproc.PIDsMatching(e.dir) })
	unmountUnder(t, e.dir)
	if left := sysproc.MountsUnder(e.dir); len(left) > 0 {
		t.Errorf("mounts left behind: %v", left)
	}
	// containerd 1.6 keeps shim sockets, fifos and the runc root in
	// /run/containerd whatever its state dir says, and leaves empty
	// "default" cgroups.
	if !e.hadRunC {
		os.RemoveAll("/run/containerd")
	}
	if cg, _ := filepath.Glob("/sys/fs/cgroup/*/default"); len(cg) > 0 {
		for _, d := range cg {
			os.Remove(d)
		}
	}
	if !t.Failed() || os.Getenv("E2E_KEEP") == "" {
		os.RemoveAll(e.dir)
	} else {
		t.Logf("kept %s", e.dir)
	}
}

// taskStatus returns the status ctr reports for a container's task
// (RUNNING, STOPPED, ...), or "" if it has none.
func (e *env) taskStatus(id string) string {
	out, _ := e.ctr("tasks", "ls")
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == id {
			return f[2]
		}
	}
	return ""
}

// removeContainer kills a container's task and deletes it.
func (e *env) removeContainer(id string) {
	e.ctr("tasks", "kill", "-s", "SIGKILL", id)
	for i := 0; i < 50; i++ {
		if _, err := e.ctr("tasks", "rm", "-f", id); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.ctr("containers", "rm", id)
}

// run runs a command with cmdTimeout and returns its combined output.
func run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: timed out after %s", name, strings.Join(args, " "), cmdTimeout)
	} else if err != nil {
		err = fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), err
}

func (e *env) ctr(args ...string) (string, error) {
	return run("ctr", append([]string{"-a", e.ctdSock}, args...)...)
}

func (e *env) mustCtr(args ...string) string {
	e.t.Helper()
	out, err := e.ctr(args...)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// convert converts tag of the Debian layout with our nydusify and pushes
// it to the registry as debian:target. It returns the reference and the
// total size of the Nydus data blobs of the result.
func (e *env) convert(tag, target string, extra ...string) (ref string, blobBytes int64) {
	t := e.t
	t.Helper()
	ref = e.reg.Host + "/debian:" + target
	args := append([]string{"convert", "--source", "oci:" + e.b.layout + ":" + tag, "--target", ref, "--plain-http"}, extra...)
	if out, err := run(e.b.nydusify, args...); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("nydusify convert: %s", lastLine(out))
	}
	if slices.Contains(extra, "--merge-platform") {
		return ref, 0
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		if l.Annotations[blobAnnotation] == "true" {
			blobBytes += l.Size
		}
	}
	if blobBytes == 0 {
		t.Fatalf("%s has no Nydus blob layers", ref)
	}
	return ref, blobBytes
}

// rpull pulls ref for the nydus snapshotter with the labels that trigger
// remote snapshots (ctr-remote image rpull), and returns how long it took.
func (e *env) rpull(ref string) time.Duration {
	e.t.Helper()
	start := time.Now()
	if _, err := run("ctr-remote", "-a", e.ctdSock, "image", "rpull", "--snapshotter", snapshotterName, "--plain-http", ref); err != nil {
		e.t.Fatalf("%v\nsnapshotter log:\n%s", err, e.sn.Tail())
	}
	return time.Since(start)
}

// runContainer runs argv in a new container of ref on the nydus
// snapshotter, waits for it and returns its output and run time.
func (e *env) runContainer(id, ref string, argv ...string) (string, time.Duration, error) {
	start := time.Now()
	out, err := e.ctr(append([]string{"run", "--rm", "--snapshotter", snapshotterName, ref, id}, argv...)...)
	return out, time.Since(start), err
}

// startContainer starts argv detached in a new container of ref on the
// nydus snapshotter, with the host directory out bind-mounted at /out.
func (e *env) startContainer(id, ref, out string, argv ...string) {
	e.t.Helper()
	e.mustCtr(append([]string{"run", "-d", "--snapshotter", snapshotterName,
		"--mount", "type=bind,src=" + out + ",dst=/out,options=rbind:rw", ref, id}, argv...)...)
}

// nydusdPIDs lists our nydusd processes serving this env's snapshotter.
func (e *env) nydusdPIDs() []int {
	var pids []int
	for _, pid := range sysproc.PIDsMatching(e.snRoot) {
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); bytes.HasPrefix(cmd, []byte(e.b.nydusd+"\x00")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// apiSockets lists the snapshotter's nydusd API sockets.
func (e *env) apiSockets() []string {
	s, _ := filepath.Glob(filepath.Join(e.snRoot, "socket", "*", "api.sock"))
	return s
}

// apiTimeout bounds each request to a nydusd API socket.
const apiTimeout = 10 * time.Second

// nydusdAPI is a client of the nydusd API socket sock.
func nydusdAPI(sock string) *api.Client {
	return api.NewClient(sock, api.WithTimeout(apiTimeout))
}

// cacheFiles lists the snapshotter's blob cache directory.
func (e *env) cacheFiles() []string {
	ents, _ := os.ReadDir(filepath.Join(e.snRoot, "cache"))
	var names []string
	for _, de := range ents {
		names = append(names, de.Name())
	}
	return names
}

// fuseMountsUnder lists the FUSE mount points at or below dir.
func fuseMountsUnder(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var ms []string
	for _, line := range strings.Split(string(b), "\n") {
		fs := strings.Fields(line)
		i := slices.Index(fs, "-")
		if i < 0 || i+1 >= len(fs) || len(fs) < 5 {
			continue
		}
		if strings.HasPrefix(fs[i+1], "fuse") && (fs[4] == dir || strings.HasPrefix(fs[4], dir+"/")) {
			ms = append(ms, fs[4])
		}
	}
	return ms
}

// unmountUnder lazily unmounts everything at or below dir, logging what
// it cannot.
func unmountUnder(t *testing.T, dir string) {
	if err := sysproc.UnmountUnder(dir); err != nil {
		t.Log(err)
	}
}

// waitFor polls cond every 100 ms until it holds or timeout passes, and
// fails the test then.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := sysproc.WaitFor(timeout, what, cond); err != nil {
		t.Fatal(err)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// dropCaches drops the page cache every 200 ms until stop is closed, so
// a container's re-reads reach nydusd.
func dropCaches(stop <-chan struct{}) {
	for {
		os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
		select {
		case <-stop:
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}
