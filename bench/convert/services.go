package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nydus-go/nydus/internal/sysproc"
)

// registryConfig is docker-registry's configuration: filesystem storage
// under data, deletes allowed, listening on 127.0.0.1:port.
func registryConfig(data string, port int) string {
	return fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: 127.0.0.1:%d
`, data, port)
}

// containerdConfig is the temporary containerd's configuration: root,
// state and sockets under dir, CRI disabled.
func containerdConfig(dir string) string {
	return fmt.Sprintf(`version = 2
root = "%[1]s/root"
state = "%[1]s/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "%[1]s/containerd.sock"
[ttrpc]
  address = "%[1]s/containerd.sock.ttrpc"
[debug]
  address = "%[1]s/debug.sock"
  level = "info"
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "%[1]s/opt"
`, dir)
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on at
// the moment (the caller must still check that its server got it).
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// startRegistry starts a docker-registry on a free port of 127.0.0.1,
// its data in TMP/registry/data, trying up to five ports.
func (b *bench) startRegistry() error {
	dir := filepath.Join(b.tmp, "registry")
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(b.tmp, "logs", "registry.log")
	for attempt := 1; attempt <= 5; attempt++ {
		port, err := freePort()
		if err != nil {
			return fmt.Errorf("no free port: %w", err)
		}
		cfg := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfg, []byte(registryConfig(filepath.Join(dir, "data"), port)), 0o644); err != nil {
			return err
		}
		os.Remove(logPath)
		p, err := sysproc.Start("docker-registry", logPath, "docker-registry", "serve", cfg)
		if err != nil {
			return err
		}
		b.registry = p
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		up := func() bool {
			log, _ := os.ReadFile(logPath)
			if !strings.Contains(string(log), "listening on "+addr) {
				return false
			}
			resp, err := httpClient.Get("http://" + addr + "/v2/")
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK
		}
		sysproc.WaitFor(10*time.Second, "docker-registry", func() bool { return !p.Alive() || up() })
		if p.Alive() && up() {
			b.reg = addr
			say("docker-registry pid %d on %s (data in %s)", p.Cmd.Process.Pid, addr, filepath.Join(dir, "data"))
			return nil
		}
		showTail(logPath, 3)
		p.Stop(syscall.SIGTERM)
		b.registry = nil
		warnf("docker-registry did not come up on port %d (attempt %d)", port, attempt)
	}
	return errors.New("could not start docker-registry")
}

// startContainerd starts a containerd with its own configuration, root,
// state and sockets under TMP/containerd.
func (b *bench) startContainerd(ctx context.Context) error {
	dir := filepath.Join(b.tmp, "containerd")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(containerdConfig(dir)), 0o644); err != nil {
		return err
	}
	b.csock = filepath.Join(dir, "containerd.sock")
	logPath := filepath.Join(b.tmp, "logs", "containerd.log")
	p, err := sysproc.Start("containerd", logPath, "containerd", "--config", cfg)
	if err != nil {
		return err
	}
	b.containerd = p
	up := func() bool {
		st, err := os.Stat(b.csock)
		if err != nil || st.Mode()&os.ModeSocket == 0 {
			return false
		}
		_, err = output(ctx, "ctr", "-a", b.csock, "version")
		return err == nil
	}
	sysproc.WaitFor(10*time.Second, "containerd", func() bool { return !p.Alive() || up() })
	if !p.Alive() || !up() {
		showTail(logPath, 5)
		return fmt.Errorf("containerd did not start (log: %s)", logPath)
	}
	say("containerd pid %d on %s", p.Cmd.Process.Pid, b.csock)
	return nil
}

// servicePIDs are the PIDs of the registry and containerd, whose CPU
// time is counted apart from the other processes'.
func (b *bench) servicePIDs() []int {
	var pids []int
	for _, p := range []*sysproc.Proc{b.registry, b.containerd} {
		if p.Alive() {
			pids = append(pids, p.Cmd.Process.Pid)
		}
	}
	return pids
}

// hostState is what the services may leave on the host: containerd 1.6
// may create /run/containerd whatever its configuration says, and
// cgroups named "default".
type hostState struct {
	runContainerd bool     // /run/containerd existed before the run
	cgroups       []string // /sys/fs/cgroup/*/default before the run
}

func readHostState() hostState {
	_, err := os.Stat("/run/containerd")
	cg, _ := filepath.Glob("/sys/fs/cgroup/*/default")
	return hostState{runContainerd: err == nil, cgroups: cg}
}

// restore removes /run/containerd if it appeared during the run and no
// other containerd is running, and the "default" cgroups that appeared.
func (h hostState) restore() {
	if _, err := os.Stat("/run/containerd"); !h.runContainerd && err == nil {
		if commRunning("containerd") {
			warnf("/run/containerd appeared during the run but another containerd is running; left in place")
		} else if err := removeTree("/run/containerd"); err != nil {
			warnf("%v", err)
		}
	}
	cg, _ := filepath.Glob("/sys/fs/cgroup/*/default")
	for _, d := range cg {
		if !slices.Contains(h.cgroups, d) {
			syscall.Rmdir(d)
		}
	}
}

// commRunning reports whether a process named comm is running.
func commRunning(comm string) bool {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm")); err == nil && strings.TrimSpace(string(b)) == comm {
			return true
		}
	}
	return false
}
