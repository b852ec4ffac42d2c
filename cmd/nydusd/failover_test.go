package main

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nydus-go/nydus/internal/fusetest"
	"github.com/nydus-go/nydus/internal/roottest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/daemon/api"
	"github.com/nydus-go/nydus/pkg/fusefs"
)

// testSupervisor keeps a daemon's state and FUSE descriptor the way
// nydus-snapshotter's supervisor does: it listens on its socket, the
// daemon connects and sends (sendfd) or receives (takeover).
type testSupervisor struct {
	path string
	data []byte
	fd   int
}

// fetch listens, asks d to send its state (PUT sendfd) and receives it.
func (s *testSupervisor) fetch(t *testing.T, d *daemonProc) {
	t.Helper()
	os.Remove(s.path)
	l, err := net.Listen("unix", s.path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		var data, oob []byte
		buf, oobBuf := make([]byte, 1<<16), make([]byte, unix.CmsgSpace(4*4))
		for {
			n, oobn, _, _, err := c.(*net.UnixConn).ReadMsgUnix(buf, oobBuf)
			data, oob = append(data, buf[:n]...), append(oob, oobBuf[:oobn]...)
			if errors.Is(err, io.EOF) || (err == nil && n == 0) {
				break
			}
			if err != nil {
				got <- err
				return
			}
		}
		msgs, err := unix.ParseSocketControlMessage(oob)
		if err != nil || len(msgs) == 0 {
			got <- fmt.Errorf("no descriptor received (%v)", err)
			return
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			got <- fmt.Errorf("descriptors %v (%v)", fds, err)
			return
		}
		if s.fd > 0 {
			unix.Close(s.fd)
		}
		s.data, s.fd = data, fds[0]
		got <- nil
	}()
	if err := d.client.SendFD(t.Context()); err != nil {
		t.Fatalf("sendfd: %v", err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon sent no state to the supervisor")
	}
}

// offer listens and hands the kept state and descriptor to the next
// daemon that connects.
func (s *testSupervisor) offer(t *testing.T) {
	t.Helper()
	os.Remove(s.path)
	l, err := net.Listen("unix", s.path)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer l.Close()
		l.(*net.UnixListener).SetDeadline(time.Now().Add(20 * time.Second))
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.(*net.UnixConn).WriteMsgUnix(s.data, unix.UnixRights(s.fd), nil)
	}()
}

// TestFailoverAndHotUpgrade keeps readers reading one mount while (1)
// nydusd is killed with SIGKILL and a new nydusd, started with the same
// command line, takes the FUSE connection over from the supervisor, and
// (2) a third nydusd started with --upgrade replaces the second one (hot
// upgrade: takeover, exit, start). No read may fail or return wrong bytes.
// failoverSetup prepares a failover test of an image: a config without
// prefetch, a mountpoint, an API socket path and a supervisor (closed at
// the end of the test), all in one directory.
func failoverSetup(t *testing.T, blobs string) (dir, cfgPath, mnt, sock string, sup *testSupervisor) {
	t.Helper()
	cfg := strings.Replace(localfsConfig(t, blobs), `"enable":true,"prefetch_all":true`, `"enable":false,"prefetch_all":false`, 1)
	dir = t.TempDir()
	cfgPath = filepath.Join(dir, "config.json")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	mnt, sock = filepath.Join(dir, "mnt"), filepath.Join(dir, "api.sock")
	os.MkdirAll(mnt, 0o755)
	sup = &testSupervisor{path: filepath.Join(dir, "supervisor.sock")}
	t.Cleanup(func() {
		if sup.fd > 0 {
			unix.Close(sup.fd)
		}
	})
	return dir, cfgPath, mnt, sock, sup
}

func TestFailoverAndHotUpgrade(t *testing.T) {
	roottest.RequireFUSE(t)
	var files []treetest.File
	want := map[string][]byte{}
	for i := 0; i < 24; i++ {
		name := fmt.Sprintf("d%d/f%02d.bin", i%3, i)
		data := treetest.Random(int64(500+i), 384<<10+i*977)
		files = append(files, treetest.Reg(name, 0o644, data))
		want[name] = data
	}
	boot, blobs := image(t, treetest.Tar(files))
	dir, cfgPath, mnt, sock, sup := failoverSetup(t, blobs)
	// Reads go through the daemon every time: no passthrough, and the
	// readers drop the page cache before each read.
	args := []string{"--bootstrap", boot, "--config", cfgPath, "--id", "d1", "--supervisor", sup.path, "--passthrough=false"}
	d1 := startAt(t, sock, mnt, api.StateRunning, args...)
	// Whatever happens, no reader may stay blocked on this connection
	// after the test: abort it if it is still there.
	minor, ok, err := fusefs.Mounted(mnt)
	if err != nil || !ok {
		t.Fatalf("mountinfo: %v %v", ok, err)
	}
	defer fusetest.AbortConn(minor) // runs before the daemons' cleanups

	sup.fetch(t, d1)
	var st struct {
		Mountpoint string `json:"mountpoint"`
		Mounts     []any  `json:"mounts"`
	}
	if err := json.Unmarshal(sup.data, &st); err != nil || st.Mountpoint != mnt || len(st.Mounts) != 1 {
		t.Fatalf("state sent to the supervisor: %s (%v)", sup.data, err)
	}

	readers := fusetest.StartReaders(4, mnt, want)
	readers.Progress(t, 20, "before the kill")

	// 1. Failover: SIGKILL, then a new nydusd with the same command line
	// finds the mount and the dead socket and waits for the takeover.
	d1.cmd.Process.Kill()
	d1.cmd.Wait()
	time.Sleep(100 * time.Millisecond) // readers queue on the orphaned connection
	sup.offer(t)
	d2 := startAt(t, sock, mnt, api.StateInit, args...)
	if err := d2.client.TakeOver(t.Context()); err != nil {
		t.Fatalf("takeover: %v\n%s", err, d2.log)
	}
	if info, _ := d2.info(); info == nil || info.State != api.StateReady {
		t.Fatalf("state after takeover: %+v", info)
	}
	if err := d2.client.Start(t.Context()); err != nil {
		t.Fatalf("start: %v\n%s", err, d2.log)
	}
	readers.Progress(t, 20, "after failover")

	// 2. Hot upgrade: the running daemon hands its state over again, a
	// new one started with --upgrade on another socket takes over, the
	// old one exits without unmounting, the new one starts.
	sup.fetch(t, d2)
	sup.offer(t)
	d3 := startAt(t, filepath.Join(dir, "api1.sock"), mnt, api.StateInit, append(args, "--upgrade")...)
	if err := d3.client.TakeOver(t.Context()); err != nil {
		t.Fatalf("upgrade takeover: %v\n%s", err, d3.log)
	}
	if err := d2.client.Exit(t.Context()); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if err := d2.cmd.Wait(); err != nil {
		t.Fatalf("old daemon exit: %v\n%s", err, d2.log)
	}
	if _, ok, _ := fusefs.Mounted(mnt); !ok {
		t.Fatal("the old daemon unmounted on exit")
	}
	if err := d3.client.Start(t.Context()); err != nil {
		t.Fatalf("upgrade start: %v\n%s", err, d3.log)
	}
	readers.Progress(t, 20, "after hot upgrade")
	readers.Stop(t, func() { fusetest.AbortConn(minor) })

	// SIGTERM unmounts.
	d3.cmd.Process.Signal(syscall.SIGTERM)
	if err := d3.cmd.Wait(); err != nil {
		t.Fatalf("nydusd exit after SIGTERM: %v\n%s", err, d3.log)
	}
	if _, ok, _ := fusefs.Mounted(mnt); ok {
		t.Fatal("still mounted after SIGTERM")
	}
	t.Logf("%d verified reads across a SIGKILL failover and a hot upgrade", readers.Reads())
}

// TestBusyMountpoint: a second nydusd on a mounted mountpoint exits with
// a one-line error instead of stacking a mount.
func TestBusyMountpoint(t *testing.T) {
	roottest.RequireFUSE(t)
	boot, blobs := image(t, treetest.Tar([]treetest.File{treetest.Reg("a", 0o644, []byte("a"))}))
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfgPath, []byte(localfsConfig(t, blobs)), 0o600)
	d := start(t, "--bootstrap", boot, "--config", cfgPath)
	out, err := exec.Command(bin, "--mountpoint", d.mnt, "--apisock", filepath.Join(t.TempDir(), "api.sock"), "--bootstrap", boot, "--config", cfgPath).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is busy") || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
		t.Fatalf("second nydusd on a busy mountpoint: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(d.mnt, "a")); err != nil || string(b) != "a" {
		t.Fatalf("the first mount is disturbed: %v", err)
	}
}

// TestTakeoverRefusesChangedBootstrap: nydusd reports the sha256 of each
// bootstrap it mounted, sends it in its failover state, and a successor
// refuses to take over a mount whose bootstrap changed since.
func TestTakeoverRefusesChangedBootstrap(t *testing.T) {
	roottest.RequireFUSE(t)
	boot, blobs := image(t, treetest.Tar([]treetest.File{treetest.Reg("f", 0o644, treetest.Random(5, 100000))}))
	other, _ := image(t, treetest.Tar([]treetest.File{treetest.Reg("g", 0o644, treetest.Random(6, 100000))}))
	_, cfgPath, mnt, sock, sup := failoverSetup(t, blobs)
	args := []string{"--bootstrap", boot, "--config", cfgPath, "--id", "d1", "--supervisor", sup.path}
	d1 := startAt(t, sock, mnt, api.StateRunning, args...)
	minor, ok, err := fusefs.Mounted(mnt)
	if err != nil || !ok {
		t.Fatalf("mountinfo: %v %v", ok, err)
	}
	defer fusetest.AbortConn(minor)
	b, _ := os.ReadFile(boot)
	want := fmt.Sprintf("sha256:%x", sha256.Sum256(b))
	info, err := d1.info()
	if err != nil || info.Mounts["/"].BootstrapDigest != want || info.Mounts["/"].Bootstrap != boot {
		t.Fatalf("daemon info %+v (%v), want bootstrap digest %s", info, err, want)
	}
	sup.fetch(t, d1)
	if !strings.Contains(string(sup.data), want) {
		t.Fatalf("the failover state lacks the bootstrap digest: %s", sup.data)
	}
	d1.cmd.Process.Kill()
	d1.cmd.Wait()
	// The bootstrap is replaced by another image's.
	ob, _ := os.ReadFile(other)
	os.WriteFile(boot, ob, 0o644)
	sup.offer(t)
	d2 := startAt(t, sock, mnt, api.StateInit, args...)
	var se *api.StatusError
	if err := d2.client.TakeOver(t.Context()); !errors.As(err, &se) || !strings.Contains(se.Message, "changed since it was mounted") {
		t.Fatalf("takeover of a changed bootstrap: %v", err)
	}
}
