package fusefs

import (
	"archive/tar"
	"bytes"

	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"github.com/hanwen/go-fuse/v2/fuse"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/roottest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	nfs "github.com/nydus-go/nydus/pkg/fs"
	"github.com/nydus-go/nydus/pkg/storage"
)

// slowSource delays every range read, so reads through the mount take
// long enough to be interrupted.
type slowSource struct {
	storage.FileSource
	delay time.Duration
}

func (s *slowSource) ReadRange(ctx context.Context, blobID string, off, n int64) ([]byte, error) {
	select {
	case <-ctx.Done(): // as a network backend would
		return nil, ctx.Err()
	case <-time.After(s.delay):
	}
	return s.FileSource.ReadRange(ctx, blobID, off, n)
}

// TestSignalsDoNotFailReads: a process that handles signals (as Go
// programs such as runc's init do for their preemption signal) makes the
// kernel send FUSE_INTERRUPT for its pending reads. A fetch must not be
// abandoned for that: the read completes with the right bytes. Before
// this was fixed, containerd failed to start containers lazily with
// "exec /bin/sh: input/output error".
func TestSignalsDoNotFailReads(t *testing.T) {
	roottest.RequireFUSE(t)
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatalf("python3 is needed as the signal-handling reader: %v", err)
	}
	data := treetest.Random(7, 6<<16)
	boot, dir := buildImage(t, treetest.Tar([]treetest.File{
		treetest.Reg("small", 0o644, []byte("x")),
		treetest.Reg("big", 0o644, data),
	}), builder.Options{ChunkSize: 0x10000})
	mnt, _ := mount(t, boot, &slowSource{FileSource: storage.FileSource{Dir: dir}, delay: 150 * time.Millisecond}, nfs.Options{}, "small")

	// The reader is another process: it says "ready" once its handler is
	// installed, then reads the file (six chunks, ~0.9 s) while it is
	// signalled every 10 ms.
	cmd := exec.Command("python3", "-c", `import hashlib, signal, sys
signal.signal(signal.SIGUSR1, lambda *a: None)
print("ready", flush=True)
d = open(sys.argv[1], "rb").read()
signal.signal(signal.SIGUSR1, signal.SIG_IGN)
print(hashlib.sha256(d).hexdigest(), flush=True)`, filepath.Join(mnt, "big"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("reader did not start: %s", stderr.String())
	}
	done, stopped := make(chan struct{}), make(chan struct{})
	signals := 0
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
				if cmd.Process.Signal(syscall.SIGUSR1) == nil {
					signals++
				}
			}
		}
	}()
	got := ""
	if lines.Scan() {
		got = lines.Text()
	}
	// The reader ignores the signal before it answers (Python restores
	// the default action, terminate, while it shuts down); stop anyway.
	close(done)
	<-stopped
	err = cmd.Wait()
	sum := sha256.Sum256(data)
	if err != nil || got != hex.EncodeToString(sum[:]) {
		t.Fatalf("read while signalled %d times: %v, sha256 %q, want %x\n%s", signals, err, got, sum, stderr.String())
	}
	if signals < 20 {
		t.Fatalf("only %d signals during the read; the test did not exercise interrupts", signals)
	}
}

// TestInterruptedRequestsSucceed calls the filesystem with the request's
// cancel channel already closed, as go-fuse does when the kernel sends
// FUSE_INTERRUPT: lookups, symlinks, attributes and reads still answer
// (upstream nydusd ignores interrupts too). The fetches are bounded by
// the backend's own timeouts instead.
func TestInterruptedRequestsSucceed(t *testing.T) {
	data := treetest.Random(8, 3<<16)
	boot, dir := buildImage(t, treetest.Tar([]treetest.File{
		treetest.Reg("usr/bin/dash", 0o755, data),
		{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: "bin", Linkname: "usr/bin", Mode: 0o777, ModTime: treetest.T}},
	}), builder.Options{ChunkSize: 0x10000})
	f, err := nfs.Open(context.Background(), boot, &slowSource{FileSource: storage.FileSource{Dir: dir}}, nfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := NewDedicated(f, Options{})
	interrupted := make(chan struct{})
	close(interrupted)

	var bin, usr, binDir, dash fuse.EntryOut
	if st := s.Lookup(interrupted, &fuse.InHeader{NodeId: fuse.FUSE_ROOT_ID}, "bin", &bin); !st.Ok() {
		t.Fatalf("lookup /bin: %v", st)
	}
	if target, st := s.Readlink(interrupted, &fuse.InHeader{NodeId: bin.NodeId}); !st.Ok() || string(target) != "usr/bin" {
		t.Fatalf("readlink /bin: %q, %v", target, st)
	}
	if st := s.Lookup(interrupted, &fuse.InHeader{NodeId: fuse.FUSE_ROOT_ID}, "usr", &usr); !st.Ok() {
		t.Fatalf("lookup /usr: %v", st)
	}
	if st := s.Lookup(interrupted, &fuse.InHeader{NodeId: usr.NodeId}, "bin", &binDir); !st.Ok() {
		t.Fatalf("lookup /usr/bin: %v", st)
	}
	if st := s.Lookup(interrupted, &fuse.InHeader{NodeId: binDir.NodeId}, "dash", &dash); !st.Ok() {
		t.Fatalf("lookup /usr/bin/dash: %v", st)
	}
	var attr fuse.AttrOut
	if st := s.GetAttr(interrupted, &fuse.GetAttrIn{InHeader: fuse.InHeader{NodeId: dash.NodeId}}, &attr); !st.Ok() || attr.Size != uint64(len(data)) {
		t.Fatalf("getattr: size %d, %v", attr.Size, st)
	}
	buf := make([]byte, len(data))
	res, st := s.Read(interrupted, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: dash.NodeId}, Size: uint32(len(buf))}, buf)
	if !st.Ok() {
		t.Fatalf("read: %v", st)
	}
	got, _ := res.Bytes(nil)
	if !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, not the file's", len(got))
	}
}
