package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/nydus-go/nydus/pkg/daemon/api"
	"github.com/nydus-go/nydus/pkg/errdefs"
	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/nydus-go/nydus/pkg/fusefs"
)

// stateVersion identifies the layout of failoverState.
const stateVersion = 1

// failoverState is what a daemon hands its supervisor along with its
// /dev/fuse descriptor, and what a successor restores (JSON; the
// supervisor keeps it as opaque bytes).
type failoverState struct {
	Version    int          `json:"version"`
	Daemon     string       `json:"daemon"` // "nydus-go": states of other daemons are refused
	Shared     bool         `json:"shared"`
	Mountpoint string       `json:"mountpoint"`
	Init       []byte       `json:"fuse_init"` // the kernel's INIT message
	Mounts     []stateMount `json:"mounts"`
}

type stateMount struct {
	Mountpoint string `json:"mountpoint"` // API mountpoint: "/" or "/NAME"
	Slot       uint64 `json:"slot"`
	Bootstrap  string `json:"bootstrap"`
	// BootstrapDigest is the sha256 of the bootstrap when it was mounted:
	// a successor refuses a bootstrap that changed since.
	BootstrapDigest string          `json:"bootstrap_digest,omitempty"`
	Config          json.RawMessage `json:"config"`
	PrefetchFiles   []string        `json:"prefetch_files,omitempty"`
}

func (d *Daemon) snapshotState() (*failoverState, int, error) {
	d.mu.Lock()
	sess, shared := d.sess, d.shared
	mounts := make(map[string]*instance, len(d.mounts))
	for mp, inst := range d.mounts {
		mounts[mp] = inst
	}
	d.mu.Unlock()
	if sess == nil {
		return nil, -1, errdefs.Errorf(errdefs.ErrInvalid, "nothing is mounted: no FUSE connection to hand over")
	}
	if sess.Fd() < 0 {
		return nil, -1, errdefs.Errorf(errdefs.ErrUnsupported, "the FUSE connection was mounted through fusermount (not root): its descriptor cannot be handed over")
	}
	st := &failoverState{Version: stateVersion, Daemon: "nydus-go", Shared: shared, Mountpoint: d.o.Mountpoint, Init: sess.InitIn()}
	for mp, inst := range mounts {
		cfg, err := json.Marshal(inst.cfg)
		if err != nil {
			return nil, -1, err
		}
		st.Mounts = append(st.Mounts, stateMount{Mountpoint: mp, Slot: inst.slot, Bootstrap: inst.bootstrap, BootstrapDigest: inst.digest, Config: cfg, PrefetchFiles: inst.prefetchFiles})
	}
	return st, sess.Fd(), nil
}

// SendStates hands the FUSE descriptor and the mount state to the
// supervisor (--supervisor), as nydus-snapshotter asks with
// PUT /api/v1/daemon/fuse/sendfd: the daemon connects to the supervisor's
// socket and sends the state with the descriptor (SCM_RIGHTS).
func (d *Daemon) SendStates(ctx context.Context) error {
	if d.o.Supervisor == "" {
		return errdefs.Errorf(errdefs.ErrInvalid, "no supervisor: start nydusd with --id and --supervisor")
	}
	st, fd, err := d.snapshotState()
	if err != nil {
		return err
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	var dl net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := dl.DialContext(dctx, "unix", d.o.Supervisor)
	if err != nil {
		return fmt.Errorf("supervisor %s: %w", d.o.Supervisor, err)
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	uc.SetDeadline(time.Now().Add(10 * time.Second))
	oob := syscall.UnixRights(fd)
	for len(data) > 0 || len(oob) > 0 {
		n, oobn, err := uc.WriteMsgUnix(data, oob, nil)
		if err != nil {
			return fmt.Errorf("supervisor %s: send state: %w", d.o.Supervisor, err)
		}
		data, oob = data[n:], oob[oobn:]
	}
	d.o.Log.Info("sent FUSE connection and state to the supervisor", "supervisor", d.o.Supervisor, "mounts", len(st.Mounts))
	return nil
}

// recvStates reads a state and one descriptor from the supervisor.
func recvStates(ctx context.Context, sock string) ([]byte, int, error) {
	var dl net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := dl.DialContext(dctx, "unix", sock)
	if err != nil {
		return nil, -1, err
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	uc.SetDeadline(time.Now().Add(10 * time.Second))
	var data, oob []byte
	buf, oobBuf := make([]byte, 256<<10), make([]byte, syscall.CmsgSpace(4*8))
	for {
		n, oobn, _, _, err := uc.ReadMsgUnix(buf, oobBuf)
		data, oob = append(data, buf[:n]...), append(oob, oobBuf[:oobn]...)
		if errors.Is(err, io.EOF) || (err == nil && n == 0 && oobn == 0) {
			break
		}
		if err != nil {
			closeFds(oob)
			return nil, -1, err
		}
		if len(data) > 64<<20 {
			closeFds(oob)
			return nil, -1, errors.New("state larger than 64 MiB")
		}
	}
	fds := parseFds(oob)
	if len(fds) == 0 {
		return nil, -1, errors.New("the supervisor sent no file descriptor")
	}
	for _, f := range fds[1:] {
		syscall.Close(f)
	}
	return data, fds[0], nil
}

func parseFds(oob []byte) []int {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for i := range msgs {
		f, err := syscall.ParseUnixRights(&msgs[i])
		if err == nil {
			fds = append(fds, f...)
		}
	}
	return fds
}

func closeFds(oob []byte) {
	for _, f := range parseFds(oob) {
		syscall.Close(f)
	}
}

// TakeOver receives the FUSE descriptor and mount state of a crashed or
// upgraded predecessor from the supervisor, reopens its images and
// prepares to serve the same mount (state READY); Start resumes serving.
func (d *Daemon) TakeOver(ctx context.Context) error {
	if d.o.Supervisor == "" {
		return errdefs.Errorf(errdefs.ErrInvalid, "no supervisor: start nydusd with --id and --supervisor")
	}
	if s := d.State(); s != api.StateInit {
		return errdefs.Errorf(errdefs.ErrConflict, "takeover needs state INIT, the daemon is %s", s)
	}
	data, fd, err := recvStates(ctx, d.o.Supervisor)
	if err != nil {
		return fmt.Errorf("supervisor %s: receive state: %w", d.o.Supervisor, err)
	}
	if err := d.restore(ctx, data, fd); err != nil {
		return errdefs.Errorf(errdefs.ErrInvalid, "takeover: %w", err)
	}
	d.SetState(api.StateReady)
	return nil
}

// restore reopens the images of a predecessor's state and resumes its
// connection fd, which it owns: closed unless a session took it.
func (d *Daemon) restore(ctx context.Context, data []byte, fd int) error {
	if err := d.reserveSession(); err != nil {
		syscall.Close(fd)
		return err
	}
	r, err := d.resume(ctx, data, fd)
	if err != nil {
		d.publishSession(nil, nil, false, nil)
		syscall.Close(fd)
		return err
	}
	if !d.publishSession(r.fsys, r.sess, r.shared, r.insts) {
		d.discard(r.sess, r.insts)
		return errClosed
	}
	d.o.Log.Info("took over the FUSE connection", "mountpoint", d.o.Mountpoint, "mounts", len(r.insts))
	return nil
}

// resumed is a connection taken over, not yet published.
type resumed struct {
	fsys   *fusefs.FileSystem
	sess   *fusefs.Session
	shared bool
	insts  map[string]*instance // by API mountpoint
}

// resume reopens the images of a state and resumes the connection fd
// (restore); fd is the session's if it succeeds, else still the
// caller's. Daemon.mu is not held.
func (d *Daemon) resume(ctx context.Context, data []byte, fd int) (*resumed, error) {
	var st failoverState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("invalid state from the supervisor (%d bytes): %w", len(data), err)
	}
	if st.Daemon != "nydus-go" || st.Version != stateVersion {
		return nil, fmt.Errorf("state from the supervisor is from %q version %d; want nydus-go version %d", st.Daemon, st.Version, stateVersion)
	}
	if filepath.Clean(st.Mountpoint) != filepath.Clean(d.o.Mountpoint) {
		return nil, fmt.Errorf("state is for mountpoint %s, not %s", st.Mountpoint, d.o.Mountpoint)
	}
	var fsys *fusefs.FileSystem
	if st.Shared {
		fsys = fusefs.NewShared(d.fuseOptions())
	}
	insts := map[string]*instance{}
	fail := func(err error) (*resumed, error) {
		for _, i := range insts {
			i.closer()
		}
		return nil, err
	}
	for _, m := range st.Mounts {
		cfg, _, err := api.ParseConfig(m.Config)
		if err != nil {
			return fail(fmt.Errorf("mount %s: %w", m.Mountpoint, err))
		}
		inst, err := d.openImage(ctx, m.Bootstrap, cfg)
		if err != nil {
			return fail(fmt.Errorf("mount %s: %w", m.Mountpoint, err))
		}
		if m.BootstrapDigest != "" && inst.digest != m.BootstrapDigest {
			inst.closer()
			cb := &changedBootstrap{bootstrap: m.Bootstrap, then: m.BootstrapDigest, now: inst.digest}
			d.refused(m.Mountpoint, inst, cb)
			return fail(fmt.Errorf("mount %s: %w", m.Mountpoint, cb))
		}
		if err := d.admit(m.Mountpoint, inst); err != nil {
			inst.closer()
			return fail(fmt.Errorf("mount %s: %w", m.Mountpoint, err))
		}
		inst.slot, inst.prefetchFiles, inst.shared = m.Slot, m.PrefetchFiles, st.Shared
		insts[m.Mountpoint] = inst
		if !st.Shared {
			if m.Mountpoint != "/" || len(st.Mounts) != 1 {
				return fail(errors.New("dedicated state must hold one mount at /"))
			}
			fsys = fusefs.NewDedicated(inst.fs, d.fuseOptions())
			continue
		}
		if _, err := fsys.Add(m.Mountpoint[1:], m.Slot, inst.fs); err != nil {
			return fail(fmt.Errorf("mount %s: %w", m.Mountpoint, err))
		}
	}
	if fsys == nil {
		return fail(errors.New("dedicated state has no mount"))
	}
	sess, err := fusefs.Resume(d.o.Mountpoint, fd, st.Init, fsys)
	if err != nil {
		return fail(err)
	}
	return &resumed{fsys: fsys, sess: sess, shared: st.Shared, insts: insts}, nil
}

// Start resumes serving a connection taken over (READY → RUNNING) and
// recovers the requests the predecessor left unanswered, as the failover
// policy says. On a daemon already RUNNING it does nothing.
func (d *Daemon) Start(ctx context.Context) error {
	if d.State() == api.StateRunning {
		return nil
	}
	d.mu.Lock()
	sess := d.sess
	insts := make(map[string]*instance, len(d.mounts))
	for mp, inst := range d.mounts {
		insts[mp] = inst
	}
	d.mu.Unlock()
	if sess == nil {
		return errdefs.Errorf(errdefs.ErrConflict, "nothing to start: take a connection over first (PUT /api/v1/daemon/fuse/takeover)")
	}
	d.serve(sess)
	switch d.o.FailoverPolicy {
	case "none":
	case "flush":
		if err := notifyControl(sess.Mountpoint(), "flush"); err == nil {
			break
		} else {
			d.o.Log.Warn("flush through the fuse control filesystem failed; resending instead", "error", err)
		}
		fallthrough
	default:
		if err := sess.NotifyResend(); err != nil {
			d.o.Log.Warn("could not ask the kernel to resend unanswered requests", "error", err)
		}
	}
	d.SetState(api.StateRunning)
	for mp, inst := range insts {
		d.o.Events(fetch.Event{Kind: "takeover", Path: mp})
		d.prefetch(inst, inst.prefetchFiles)
	}
	return nil
}

// notifyControl writes "1" to a file of the connection's directory in the
// fuse control filesystem (/sys/fs/fuse/connections/<dev minor>/).
func notifyControl(mountpoint, event string) error {
	minor, ok, err := fusefs.Mounted(mountpoint)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s is not mounted", mountpoint)
	}
	return os.WriteFile(fmt.Sprintf("/sys/fs/fuse/connections/%d/%s", minor, event), []byte("1"), 0)
}

// Exit makes the daemon leave without unmounting, for a hot upgrade: its
// successor serves the mount (PUT /api/v1/daemon/exit).
func (d *Daemon) Exit() {
	d.exiting.Store(true)
	d.exitMu.Do(func() { close(d.exit) })
}

// Exited is closed when Exit is called.
func (d *Daemon) Exited() <-chan struct{} { return d.exit }
