package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nydus-go/nydus/internal/fusetest"
	"github.com/nydus-go/nydus/internal/roottest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/daemon/api"
	"github.com/nydus-go/nydus/pkg/fusefs"
)

// killHard ends a daemon as a crash does (kill -9) and cleans up the
// mount it leaves, as the snapshotter does before it restarts nydusd.
func killHard(t *testing.T, d *daemonProc) {
	t.Helper()
	minor, ok, _ := fusefs.Mounted(d.mnt)
	d.cmd.Process.Kill()
	d.cmd.Wait()
	if ok {
		fusetest.AbortConn(minor)
	}
	unixUnmount(d.mnt)
}

// TestRestartRefusesChangedBootstrap: nydusd records, beside its API
// socket, the digest of each bootstrap it mounts; a nydusd restarted on
// the same socket after a crash (the snapshotter's recover_policy
// "restart") refuses to mount the same bootstrap file with other
// content, with an error naming it and a bootstrap-changed event, in
// dedicated and shared mode. An unchanged bootstrap mounts again, and a
// clean stop ends the record (a later daemon may mount a new version).
func TestRestartRefusesChangedBootstrap(t *testing.T) {
	roottest.RequireFUSE(t)
	boot, blobs := image(t, treetest.Tar([]treetest.File{treetest.Reg("f", 0o644, []byte("first"))}))
	other, blobs2 := image(t, treetest.Tar([]treetest.File{treetest.Reg("g", 0o644, []byte("second"))}))
	orig, _ := os.ReadFile(boot)
	ob, _ := os.ReadFile(other)
	// Both images' blobs in one directory, so either bootstrap mounts.
	ents, _ := os.ReadDir(blobs2)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(blobs2, e.Name()))
		os.WriteFile(filepath.Join(blobs, e.Name()), b, 0o644)
	}
	_, cfgPath, mnt, sock, _ := failoverSetup(t, blobs)
	args := []string{"--bootstrap", boot, "--config", cfgPath}
	refusedEvents := func() int {
		b, _ := os.ReadFile(sock + ".events")
		return strings.Count(string(b), `"kind":"bootstrap-changed"`)
	}

	t.Run("dedicated", func(t *testing.T) {
		d := startAt(t, sock, mnt, api.StateRunning, args...)
		killHard(t, d)
		// Restarted, the bootstrap unchanged: mounted again.
		d = startAt(t, sock, mnt, api.StateRunning, args...)
		if b, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || string(b) != "first" {
			t.Fatalf("after a restart: %q, %v", b, err)
		}
		killHard(t, d)
		// Restarted, the bootstrap replaced: refused.
		os.WriteFile(boot, ob, 0o644)
		out, err := exec.Command(bin, append([]string{"--mountpoint", mnt, "--apisock", sock}, args...)...).CombinedOutput()
		if _, exit := err.(*exec.ExitError); !exit || !strings.Contains(string(out), "bootstrap "+boot+" changed since it was mounted") {
			t.Fatalf("restart on a changed bootstrap: %v\n%s", err, out)
		}
		if n := refusedEvents(); n != 1 {
			t.Errorf("%d bootstrap-changed events, want 1", n)
		}
		// The original back, then a clean stop: the record ends, and
		// the new version mounts.
		os.WriteFile(boot, orig, 0o644)
		d = startAt(t, sock, mnt, api.StateRunning, args...)
		d.stop()
		os.WriteFile(boot, ob, 0o644)
		d = startAt(t, sock, mnt, api.StateRunning, args...)
		if b, err := os.ReadFile(filepath.Join(mnt, "g")); err != nil || string(b) != "second" {
			t.Fatalf("a new version after a clean stop: %q, %v", b, err)
		}
		d.stop()
		os.WriteFile(boot, orig, 0o644)
		if _, err := os.Stat(sock + ".mounts"); !os.IsNotExist(err) {
			t.Errorf("the mount record outlived the last mount: %v", err)
		}
	})

	t.Run("shared", func(t *testing.T) {
		mount := func(d *daemonProc) (int, string) {
			return d.do("POST", "/api/v1/mount?mountpoint=/img", api.MountRequest{FsType: "rafs", Source: boot, Config: localfsConfig(t, blobs)})
		}
		d := startAt(t, sock, mnt, api.StateRunning)
		if code, body := mount(d); code != 204 {
			t.Fatalf("mount: %d %s", code, body)
		}
		killHard(t, d)
		d = startAt(t, sock, mnt, api.StateRunning)
		if code, body := mount(d); code != 204 {
			t.Fatalf("mount of the unchanged bootstrap after a restart: %d %s", code, body)
		}
		killHard(t, d)
		before := refusedEvents()
		os.WriteFile(boot, ob, 0o644)
		defer os.WriteFile(boot, orig, 0o644)
		d = startAt(t, sock, mnt, api.StateRunning)
		if code, body := mount(d); code != 400 || !strings.Contains(body, "changed since it was mounted") {
			t.Fatalf("mount of a changed bootstrap after a restart: %d %s", code, body)
		}
		if n := refusedEvents() - before; n != 1 {
			t.Errorf("%d bootstrap-changed events, want 1", n)
		}
		// An umount ends the record: the new version mounts.
		os.WriteFile(boot, orig, 0o644)
		if code, body := mount(d); code != 204 {
			t.Fatalf("mount: %d %s", code, body)
		}
		if code, body := d.do("DELETE", "/api/v1/mount?mountpoint=/img", nil); code != 204 {
			t.Fatalf("umount: %d %s", code, body)
		}
		os.WriteFile(boot, ob, 0o644)
		if code, body := mount(d); code != 204 {
			t.Fatalf("mount of a new version after an umount: %d %s", code, body)
		}
		if b, err := os.ReadFile(filepath.Join(mnt, "img", "g")); err != nil || string(b) != "second" {
			t.Fatalf("the new version: %q, %v", b, err)
		}
	})
}
