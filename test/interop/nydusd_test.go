package interop

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/nydus-snapshotter/pkg/daemon"
	"github.com/containerd/nydus-snapshotter/pkg/daemon/types"
	"github.com/containerd/nydus-snapshotter/pkg/supervisor"

	"github.com/nydus-go/nydus/internal/fusetest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fusefs"
)

// nydusdBin builds our nydusd (or takes $NYDUSD).
func nydusdBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("NYDUSD"); p != "" {
		return p
	}
	p := filepath.Join(t.TempDir(), "nydusd")
	cmd := exec.Command("go", "build", "-o", p, "github.com/nydus-go/nydus/cmd/nydusd")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build nydusd: %v\n%s", err, out)
	}
	return p
}

// smallImage builds files into a bootstrap and a localfs blob directory,
// and returns a v1 config for them as the snapshotter writes it.
func smallImage(t *testing.T, files []treetest.File) (boot, cfg string) {
	t.Helper()
	dir := t.TempDir()
	var blob bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(treetest.Tar(files)), &blob, builder.Options{Whiteout: builder.WhiteoutNone, ChunkSize: 0x10000})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, res.BlobID), blob.Bytes(), 0o644)
	boot = filepath.Join(dir, "image.boot")
	os.WriteFile(boot, res.Bootstrap, 0o644)
	cfg = fmt.Sprintf(`{"device":{"id":"/1","backend":{"type":"localfs","config":{"dir":%q,"readahead":false,"proxy":{"fallback":false}}},"cache":{"type":"blobcache","config":{"work_dir":%q,"disable_indexed_map":false}}},"mode":"direct","digest_validate":false,"enable_xattr":true,"amplify_io":1048576,"fs_prefetch":{"enable":false,"prefetch_all":false,"threads_count":8,"merging_size":1048576}}`, dir, t.TempDir())
	return boot, cfg
}

type nydusdProc struct {
	cmd *exec.Cmd
	log bytes.Buffer
	c   daemon.NydusdClient
}

// startNydusd starts nydusd with the command line nydus-snapshotter
// builds for a shared fusedev daemon with recover_policy=failover, and
// waits for want through the snapshotter's own client.
func startNydusd(t *testing.T, bin string, want types.DaemonState, args ...string) *nydusdProc {
	t.Helper()
	p := &nydusdProc{}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = &p.log, &p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	})
	var sock string
	for i, a := range args {
		if a == "--apisock" {
			sock = args[i+1]
		}
	}
	if err := daemon.WaitUntilSocketExisted(sock, p.cmd.Process.Pid); err != nil {
		t.Fatalf("api socket: %v\n%s", err, p.log.String())
	}
	c, err := daemon.NewNydusClient(sock)
	if err != nil {
		t.Fatal(err)
	}
	p.c = c
	for i := 0; i < 50; i++ {
		if info, err := c.GetDaemonInfo(); err == nil && info.DaemonState() == want {
			return p
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("nydusd did not reach %s:\n%s", want, p.log.String())
	return nil
}

// TestSharedDaemonFailoverWithUpstreamSupervisor drives our nydusd in
// shared mode with nydus-snapshotter's own API client and failover
// supervisor (pkg/daemon, pkg/supervisor): mount an image, hand the
// state to the supervisor, SIGKILL nydusd while readers read, start a new
// nydusd that takes over, and check the readers never fail, a new image
// can be mounted next to the restored one and unmounting works.
func TestSharedDaemonFailoverWithUpstreamSupervisor(t *testing.T) {
	if os.Getuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("needs root and /dev/fuse")
		}
		t.Skip("needs root and /dev/fuse")
	}
	bin := nydusdBin(t)
	var files []treetest.File
	want := map[string][]byte{}
	for i := 0; i < 16; i++ {
		name := fmt.Sprintf("lib/f%02d.so", i)
		data := treetest.Random(int64(900+i), 256<<10+i*1013)
		files = append(files, treetest.Reg(name, 0o755, data))
		want[name] = data
	}
	boot1, cfg1 := smallImage(t, files)
	boot2, cfg2 := smallImage(t, []treetest.File{treetest.Reg("etc/os-release", 0o644, []byte("ID=nydus-go\n"))})

	root := t.TempDir()
	mnt := filepath.Join(root, "mnt")
	os.MkdirAll(mnt, 0o755)
	sock := filepath.Join(root, "socket", "d1", "api.sock")
	os.MkdirAll(filepath.Dir(sock), 0o755)
	set, err := supervisor.NewSupervisorSet(filepath.Join(root, "supervisor"))
	if err != nil {
		t.Fatal(err)
	}
	su := set.NewSupervisor("d1")
	args := []string{"fuse", "--thread-num", "4", "--id", "d1", "--mountpoint", mnt, "--apisock", sock, "--log-level", "info",
		"--log-rotation-size", "100", "--supervisor", su.Sock(), "--passthrough=false", "--failover-policy", "resend"}

	d1 := startNydusd(t, bin, types.DaemonStateRunning, args...)
	minor, _, _ := fusefs.Mounted(mnt)
	defer fusetest.AbortConn(minor) // never leave a reader blocked on the connection
	if err := d1.c.Mount("/snap1", boot1, cfg1); err != nil {
		t.Fatalf("mount through the snapshotter's client: %v", err)
	}
	if err := su.FetchDaemonStates(d1.c.SendFd); err != nil {
		t.Fatalf("supervisor FetchDaemonStates: %v\n%s", err, d1.log.String())
	}

	readers := fusetest.StartReaders(3, filepath.Join(mnt, "snap1"), want)
	readers.Progress(t, 15, "before the kill")

	// What nydus-snapshotter's doDaemonFailover does.
	d1.cmd.Process.Kill()
	d1.cmd.Wait()
	if err := su.SendStatesTimeout(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	d2 := startNydusd(t, bin, types.DaemonStateInit, args...)
	if err := d2.c.TakeOver(); err != nil {
		t.Fatalf("takeover: %v\n%s", err, d2.log.String())
	}
	if err := d2.c.Start(); err != nil {
		t.Fatalf("start: %v\n%s", err, d2.log.String())
	}
	if info, err := d2.c.GetDaemonInfo(); err != nil || info.DaemonState() != types.DaemonStateRunning {
		t.Fatalf("state after start: %+v %v", info, err)
	}
	readers.Progress(t, 15, "after the takeover")
	// The snapshotter sends the states again once the daemon runs.
	if err := su.FetchDaemonStates(d2.c.SendFd); err != nil {
		t.Fatalf("sendfd after takeover: %v", err)
	}

	// The restored daemon mounts and unmounts more images.
	if err := d2.c.Mount("/snap2", boot2, cfg2); err != nil {
		t.Fatalf("mount after takeover: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "snap2", "etc/os-release")); err != nil || string(b) != "ID=nydus-go\n" {
		t.Fatalf("second image after takeover: %q %v", b, err)
	}
	readers.Stop(t, func() { fusetest.AbortConn(minor) })
	if m, err := d2.c.GetCacheMetrics("/snap1"); err != nil || len(m.UnderlyingFiles) == 0 {
		t.Fatalf("blobcache metrics after takeover: %+v %v", m, err)
	}
	if err := d2.c.Umount("/snap1"); err != nil {
		t.Fatalf("umount: %v", err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "snap1")); !os.IsNotExist(err) {
		t.Fatalf("snap1 after umount: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "snap2", "etc/os-release")); err != nil || len(b) == 0 {
		t.Fatalf("snap2 after umount of snap1: %v", err)
	}
	d2.cmd.Process.Signal(syscall.SIGTERM)
	if err := d2.cmd.Wait(); err != nil {
		t.Fatalf("nydusd after SIGTERM: %v\n%s", err, d2.log.String())
	}
	if _, ok, _ := fusefs.Mounted(mnt); ok {
		t.Fatal("still mounted after SIGTERM")
	}
	t.Logf("%d verified reads across the failover", readers.Reads())
}
