package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/clitest"
	"github.com/nydus-go/nydus/internal/roottest"

	"golang.org/x/sys/unix"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/daemon/api"
)

var bin string

func TestMain(m *testing.M) { clitest.Main(m, "nydusd", &bin) }

// image builds a layer into a bootstrap file and a blob directory.
func image(t testing.TB, layer []byte) (boot, blobs string) {
	t.Helper()
	dir := t.TempDir()
	blobs = filepath.Join(dir, "blobs")
	os.MkdirAll(blobs, 0o755)
	var b bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(layer), &b, builder.Options{Whiteout: builder.WhiteoutNone, ChunkSize: 0x10000})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(blobs, res.BlobID), b.Bytes(), 0o644)
	boot = filepath.Join(dir, "image.boot")
	os.WriteFile(boot, res.Bootstrap, 0o644)
	return boot, blobs
}

type daemonProc struct {
	cmd  *exec.Cmd
	sock string
	mnt  string
	log  *syncBuffer
	// client talks to the daemon's API socket.
	client *api.Client
}

// syncBuffer is a bytes.Buffer safe for a process's output and a test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t testing.TB, args ...string) *daemonProc {
	t.Helper()
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "mnt"), 0o755)
	return startAt(t, filepath.Join(dir, "api.sock"), filepath.Join(dir, "mnt"), api.StateRunning, args...)
}

// startAt starts nydusd with the given API socket and mountpoint and
// waits for the API to report state want.
func startAt(t testing.TB, sock, mnt, want string, args ...string) *daemonProc {
	t.Helper()
	d := &daemonProc{sock: sock, mnt: mnt, log: &syncBuffer{}, client: api.NewClient(sock, api.WithTimeout(time.Minute))}
	all := append([]string{"fuse", "--mountpoint", d.mnt, "--apisock", d.sock, "--log-level", "info",
		"--log-rotation-size", "100", "--failover-policy", "resend", "--some-future-flag", "x"}, args...)
	d.cmd = exec.Command(bin, all...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("nydusd %s log:\n%s", d.sock, d.log)
		}
		d.stop()
		d.client.Close()
	})
	// The snapshotter waits for the socket, then polls for RUNNING.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if info, err := d.info(); err == nil && info.State == want {
			return d
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nydusd did not reach %s:\n%s", want, d.log)
	return nil
}

// stop ends a daemon that is still running (SIGTERM, SIGKILL after 10 s)
// and detaches its mountpoint.
func (d *daemonProc) stop() {
	if d.cmd.Process != nil && d.cmd.ProcessState == nil {
		d.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			<-done
		}
	}
	unix.Unmount(d.mnt, unix.MNT_DETACH)
}

// metric returns the value of the Prometheus sample of /metrics whose
// name and labels start with prefix ("name{" plus labels), summed over
// the samples that match; ok is false when none does.
func (d *daemonProc) metric(t testing.TB, prefix string) (v float64, ok bool) {
	t.Helper()
	_, body := d.do("GET", "/metrics", nil)
	for _, l := range strings.Split(body, "\n") {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		f := strings.Fields(l)
		x, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", l, err)
		}
		v, ok = v+x, true
	}
	return v, ok
}

// waitLog waits (at most 15 s) until the daemon has logged what.
func (d *daemonProc) waitLog(t testing.TB, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(d.log.String(), what) {
		if time.Now().After(deadline) {
			t.Fatalf("nydusd did not log %q:\n%s", what, d.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// info is the daemon's GET /api/v1/daemon.
func (d *daemonProc) info() (*api.DaemonInfo, error) {
	return d.client.DaemonInfo(context.Background())
}

// do sends a request to the daemon's API and returns the answer's status
// and body, whatever the status (0 and the error when there is none).
func (d *daemonProc) do(method, path string, body any) (int, string) {
	resp, err := d.client.Do(context.Background(), method, path, body)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

func localfsConfig(t testing.TB, blobs string) string {
	cfg := fmt.Sprintf(`{"device":{"id":"/1","backend":{"type":"localfs","config":{"dir":%q,"readahead":false,"proxy":{"fallback":false}}},"cache":{"type":"blobcache","config":{"work_dir":%q,"disable_indexed_map":false}}},"mode":"direct","digest_validate":false,"enable_xattr":true,"amplify_io":1048576,"fs_prefetch":{"enable":true,"prefetch_all":true,"threads_count":8,"merging_size":1048576},"our_extension":1}`, blobs, t.TempDir())
	return cfg
}

func TestDedicatedMode(t *testing.T) {
	roottest.RequireFUSE(t)
	layer := treetest.Tar(treetest.Sample())
	boot, blobs := image(t, layer)
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	cfgJSON := localfsConfig(t, blobs)
	os.WriteFile(cfgPath, []byte(cfgJSON), 0o600)
	d := start(t, "--bootstrap", boot, "--config", cfgPath)
	if st, err := os.Stat(d.sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("api socket mode: %v %v", st.Mode(), err)
	}
	info, _ := d.info()
	if info.Version.GitCommit == "" || info.Version.PackageVer == "" {
		t.Fatalf("version: %+v", info.Version)
	}
	got, err := treetest.FromDir(d.mnt, treetest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := treetest.FromTar(bytes.NewReader(layer), treetest.Options{})
	if diff := treetest.Diff(want, got); diff != "" {
		t.Fatalf("mounted tree differs:\n%s", diff)
	}
	// Fully read files get whole-file copies for FUSE passthrough.
	var c struct {
		Device struct {
			Cache struct {
				Config struct {
					WorkDir string `json:"work_dir"`
				} `json:"config"`
			} `json:"cache"`
		} `json:"device"`
	}
	json.Unmarshal([]byte(cfgJSON), &c)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, _ := os.ReadDir(filepath.Join(c.Device.Cache.Config.WorkDir, "nydus-go-files"))
		if len(ents) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no whole-file copies for passthrough in the cache work_dir")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, w := range []string{"--some-future-flag", "our_extension"} {
		if !strings.Contains(d.log.String(), w) {
			t.Errorf("log does not warn about %s:\n%s", w, d.log)
		}
	}
	if code, body := d.do("GET", "/metrics", nil); code != 200 || !strings.Contains(body, `nydusd_read_bytes_total{mountpoint="/"}`) {
		t.Fatalf("prometheus metrics: %d %s", code, body)
	}
	if code, body := d.do("GET", "/debug/pprof/", nil); code != 200 || !strings.Contains(body, "heap") {
		t.Fatalf("pprof index: %d", code)
	}
	if code, body := d.do("GET", "/api/v1/nope", nil); code != 404 || !strings.Contains(body, `"code"`) {
		t.Fatalf("unknown API: %d %s", code, body)
	}
	// SIGTERM unmounts.
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.cmd.Wait()
	var st unix.Statfs_t
	unix.Statfs(d.mnt, &st)
	if st.Type == 0x65735546 { // FUSE_SUPER_MAGIC
		t.Fatal("mountpoint still mounted after SIGTERM")
	}
}

func TestSharedMode(t *testing.T) {
	roottest.RequireFUSE(t)
	l1 := treetest.Tar(treetest.Sample())
	l2 := treetest.Tar([]treetest.File{treetest.Reg("only-in-two", 0o644, []byte("two"))})
	b1, blobs1 := image(t, l1)
	b2, blobs2 := image(t, l2)
	d := start(t)
	// The kernel caches directory listings (no OPENDIR); the shared
	// root's listing must follow mounts and unmounts.
	list := func() string {
		ents, err := os.ReadDir(d.mnt)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return strings.Join(names, ",")
	}
	if got := list(); got != "" {
		t.Fatalf("empty shared root lists %q", got)
	}
	for i, m := range []struct{ boot, blobs string }{{b1, blobs1}, {b2, blobs2}} {
		if err := d.client.Mount(t.Context(), fmt.Sprintf("/img%d", i), api.MountRequest{FsType: "rafs", Source: m.boot, Config: localfsConfig(t, m.blobs)}); err != nil {
			t.Fatalf("mount %d: %v", i, err)
		}
		if got, want := list(), map[int]string{0: "img0", 1: "img0,img1"}[i]; got != want {
			t.Fatalf("shared root after mount %d lists %q, want %q", i, got, want)
		}
	}
	got, err := treetest.FromDir(filepath.Join(d.mnt, "img0"), treetest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := treetest.FromTar(bytes.NewReader(l1), treetest.Options{})
	if diff := treetest.Diff(want, got); diff != "" {
		t.Fatalf("img0 differs:\n%s", diff)
	}
	if b, err := os.ReadFile(filepath.Join(d.mnt, "img1", "only-in-two")); err != nil || string(b) != "two" {
		t.Fatalf("img1: %q %v", b, err)
	}
	var se *api.StatusError
	if err := d.client.Mount(t.Context(), "/img1", api.MountRequest{Source: b2, Config: localfsConfig(t, blobs2)}); !errors.As(err, &se) || se.StatusCode != 409 || !strings.Contains(se.Message, "already mounted") {
		t.Fatalf("double mount: %v", err)
	}
	if err := d.client.Mount(t.Context(), "/bad", api.MountRequest{Source: b2, Config: `{"device":{"backend":{"type":"registry","config":{"timeout":"x"}}}}`}); !errors.As(err, &se) || se.StatusCode != 400 || !strings.Contains(se.Message, "timeout") {
		t.Fatalf("malformed config: %v", err)
	}
	// The cache files of the blobs in use (what the snapshotter's cache
	// GC spares) include img1's until it is unmounted: then no handle of
	// it is left, and its blob can go.
	ents, _ := os.ReadDir(blobs2)
	if len(ents) != 1 {
		t.Fatalf("img1's blobs: %v", ents)
	}
	blob1 := ents[0].Name()
	inUse := func() bool {
		m, err := d.client.BlobCacheMetrics(t.Context(), "")
		if err != nil {
			t.Fatalf("blobcache metrics: %v", err)
		}
		return slices.ContainsFunc(m.UnderlyingFiles, func(f string) bool { return strings.Contains(f, blob1) })
	}
	if !inUse() {
		t.Fatal("img1's blob is not in use while it is mounted and read")
	}
	if err := d.client.Umount(t.Context(), "/img1"); err != nil {
		t.Fatalf("umount: %v", err)
	}
	if inUse() {
		t.Error("img1's blob is still in use after its umount: a cache handle was leaked")
	}
	if _, err := os.Stat(filepath.Join(d.mnt, "img1", "only-in-two")); err == nil {
		t.Fatal("img1 still visible after umount")
	}
	if got := list(); got != "img0" {
		t.Fatalf("shared root after umount lists %q, want img0", got)
	}
}

func unixUnmount(dir string) { unix.Unmount(dir, unix.MNT_DETACH) }

// TestRuntimeDoesNotImportBuilder: nydusd's dependency graph holds no
// build-side package (the builder, the converter, the checker).
func TestRuntimeDoesNotImportBuilder(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		for _, bad := range []string{"/pkg/builder", "/pkg/converter", "/pkg/checker"} {
			if strings.HasSuffix(p, bad) {
				t.Errorf("nydusd depends on %s", p)
			}
		}
	}
}
