package fusefs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	nfs "github.com/nydus-go/nydus/pkg/fs"
)

// Session is one FUSE connection serving a FileSystem. Its /dev/fuse
// descriptor can be handed to another process (Fd, InitIn), which resumes
// the same mount with Resume: the kernel keeps the mount while any
// process holds the descriptor.
type Session struct {
	srv        *fuse.Server
	fsys       *FileSystem
	mountpoint string
	fd         int // the /dev/fuse descriptor go-fuse reads; -1 if unknown
	serving    sync.Once
	done       chan struct{}
}

// mountOptions are the go-fuse options of an immutable image.
func mountOptions(o Options) fuse.MountOptions {
	return fuse.MountOptions{
		FsName:       o.FsName,
		Name:         "rafs",
		AllowOther:   true,
		Debug:        o.Debug,
		MaxWrite:     fuse.MAX_KERNEL_WRITE,
		MaxReadAhead: 1 << 20,
		// Immutable image: symlink targets are cached by the kernel too.
		EnableSymlinkCaching: true,
		// The kernel checks permissions against the image's modes.
		Options: []string{"default_permissions", "ro"},
	}
}

// Mount mounts fsys at dir. It opens /dev/fuse and calls mount(2) itself,
// so that the connection's descriptor is known and can be handed over for
// failover; without the privilege to do so it falls back to go-fuse's
// fusermount helper (no failover). Call Serve to start answering.
func Mount(dir string, fsys *FileSystem) (*Session, error) {
	if err := fsys.startJournal(nil); err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	mo := mountOptions(fsys.o)
	fd, err := syscall.Open("/dev/fuse", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err == nil {
		data := fmt.Sprintf("fd=%d,rootmode=40000,user_id=%d,group_id=%d,allow_other,default_permissions,max_read=%d",
			fd, os.Getuid(), os.Getgid(), mo.MaxWrite)
		err = syscall.Mount(fsys.o.FsName, dir, "fuse.rafs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_RDONLY, data)
		if err != nil {
			syscall.Close(fd)
		}
	}
	if err != nil {
		if !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("mount %s: %w", dir, err)
		}
		srv, err := fuse.NewServer(fsys, dir, &mo)
		if err != nil {
			return nil, fmt.Errorf("mount %s: %w", dir, err)
		}
		return &Session{srv: srv, fsys: fsys, mountpoint: dir, fd: -1, done: make(chan struct{})}, nil
	}
	// go-fuse reads the kernel's INIT from the descriptor we mounted with.
	srv, err := fuse.NewServer(fsys, fmt.Sprintf("/dev/fd/%d", fd), &mo)
	if err != nil {
		syscall.Unmount(dir, syscall.MNT_DETACH)
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	return &Session{srv: srv, fsys: fsys, mountpoint: dir, fd: fd, done: make(chan struct{})}, nil
}

// Resume serves fsys on an established FUSE connection handed over by
// another process: fd is its /dev/fuse descriptor (ownership passes to the
// session) and init the kernel's INIT message saved by that process
// (Session.InitIn). The kernel does not send INIT again, so it is replayed
// to go-fuse over a socket pair; then fd takes the socket's place. On
// error fd is left open: it stays the caller's.
func Resume(mountpoint string, fd int, init []byte, fsys *FileSystem) (*Session, error) {
	// go-fuse's InitIn is the whole request: it begins with the header.
	var req fuse.InitIn
	if len(init) == 0 || len(init) > int(unsafe.Sizeof(req)) {
		return nil, fmt.Errorf("resume %s: saved FUSE INIT message has %d bytes", mountpoint, len(init))
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&req)), unsafe.Sizeof(req)), init)
	if req.Major != 7 || req.Minor == 0 {
		return nil, fmt.Errorf("resume %s: saved FUSE INIT message has protocol version %d.%d, want 7.x", mountpoint, req.Major, req.Minor)
	}
	req.InHeader = fuse.InHeader{Length: uint32(unsafe.Sizeof(req)), Opcode: 26 /* FUSE_INIT */, Unique: 1}
	sp, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("resume %s: %w", mountpoint, err)
	}
	defer syscall.Close(sp[1])
	if _, err := syscall.Write(sp[1], unsafe.Slice((*byte)(unsafe.Pointer(&req)), unsafe.Sizeof(req))); err != nil {
		syscall.Close(sp[0])
		return nil, fmt.Errorf("resume %s: replay INIT: %w", mountpoint, err)
	}
	// The predecessor's opens: from its journal, else unknown (see
	// tookOver).
	fsys.tookOver.Store(true)
	if fsys.o.Journal != "" {
		state, err := readJournal(fsys.o.Journal)
		if err != nil {
			// Serve anyway, guessing as without a journal.
			fsys.o.Log.Error("the predecessor's open journal is unreadable; files it left open may get EIO", "err", err)
			state = map[uint64]inherited{}
		}
		if err := fsys.startJournal(state); err != nil {
			syscall.Close(sp[0])
			return nil, fmt.Errorf("resume %s: %w", mountpoint, err)
		}
	}
	mo := mountOptions(fsys.o)
	srv, err := fuse.NewServer(fsys, fmt.Sprintf("/dev/fd/%d", sp[0]), &mo)
	if err != nil {
		syscall.Close(sp[0])
		return nil, fmt.Errorf("resume %s: %w", mountpoint, err)
	}
	// go-fuse answers an INIT it refuses with an error reply rather than
	// failing; its settings then stay zero.
	if ks := srv.KernelSettings(); ks.Major != req.Major || ks.Minor != req.Minor || ks.Flags64() != req.Flags64() {
		syscall.Close(sp[0])
		return nil, fmt.Errorf("resume %s: go-fuse did not accept the replayed INIT (protocol %d.%d)", mountpoint, ks.Major, ks.Minor)
	}
	// go-fuse answered the replayed INIT on the socket; from now on its
	// descriptor number is the FUSE connection.
	if err := unix.Dup3(fd, sp[0], unix.O_CLOEXEC); err != nil {
		syscall.Close(sp[0])
		return nil, fmt.Errorf("resume %s: %w", mountpoint, err)
	}
	syscall.Close(fd)
	return &Session{srv: srv, fsys: fsys, mountpoint: mountpoint, fd: sp[0], done: make(chan struct{})}, nil
}

// Serve starts answering requests in the background; it is idempotent.
func (s *Session) Serve() {
	s.serving.Do(func() {
		go func() {
			s.srv.Serve()
			s.fsys.mu.Lock()
			if s.fsys.journal != nil {
				s.fsys.journal.Close()
				s.fsys.journal = nil
			}
			s.fsys.mu.Unlock()
			close(s.done)
		}()
	})
}

// Wait blocks until the connection ends (unmount, abort).
func (s *Session) Wait() { <-s.done }

// Done is closed when the connection ends.
func (s *Session) Done() <-chan struct{} { return s.done }

// Fd is the connection's /dev/fuse descriptor, or -1 when the mount went
// through fusermount. It stays owned by the session.
func (s *Session) Fd() int { return s.fd }

// Mountpoint is where the session is mounted.
func (s *Session) Mountpoint() string { return s.mountpoint }

// KernelSettings is the kernel's INIT message.
func (s *Session) KernelSettings() *fuse.InitIn { return s.srv.KernelSettings() }

// InitIn returns the kernel's INIT message as bytes, for Resume.
func (s *Session) InitIn() []byte {
	in := s.srv.KernelSettings()
	return append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(in)), unsafe.Sizeof(*in))...)
}

// NotifyResend asks the kernel to send again every request that was read
// from the connection but not answered (FUSE_NOTIFY_RESEND, Linux ≥ 6.9):
// what a crashed daemon took with it.
func (s *Session) NotifyResend() error {
	if s.fd < 0 {
		return errors.New("fusefs: connection descriptor unknown")
	}
	// fuse_out_header{len, error = notify code, unique = 0}
	var b [16]byte
	*(*uint32)(unsafe.Pointer(&b[0])) = 16
	*(*int32)(unsafe.Pointer(&b[4])) = 7 // FUSE_NOTIFY_RESEND
	_, err := syscall.Write(s.fd, b[:])
	if err != nil {
		return fmt.Errorf("notify resend: %w", err)
	}
	return nil
}

// Unmount detaches the mount; the connection ends once the kernel lets go.
func (s *Session) Unmount() error {
	if s.fd < 0 {
		return s.srv.Unmount()
	}
	var err error
	for i := 0; i < 5; i++ {
		if err = syscall.Unmount(s.mountpoint, 0); err == nil || errors.Is(err, syscall.EINVAL) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			break
		}
		time.Sleep(time.Duration(10<<i) * time.Millisecond)
	}
	if err := syscall.Unmount(s.mountpoint, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("unmount %s: %w", s.mountpoint, err)
	}
	return nil
}

// MountImage serves one image at dir (dedicated mode) and starts
// answering; call Unmount to stop.
func MountImage(dir string, f *nfs.FS, o Options) (*Session, error) {
	s, err := Mount(dir, NewDedicated(f, o))
	if err != nil {
		return nil, err
	}
	s.Serve()
	return s, nil
}

// Mounted reports whether dir is a mountpoint in this process's mount
// namespace, and its device minor number (the FUSE connection id under
// /sys/fs/fuse/connections). It reads /proc/self/mountinfo and never
// touches dir itself, which would hang on a FUSE mount nobody serves.
func Mounted(dir string) (minor uint32, ok bool, err error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return 0, false, err
	}
	dir = filepath.Clean(dir)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || unescapeMountinfo(f[4]) != dir {
			continue
		}
		var maj, min uint32
		if _, err := fmt.Sscanf(f[2], "%d:%d", &maj, &min); err != nil {
			return 0, false, fmt.Errorf("mountinfo: bad device %q", f[2])
		}
		minor, ok = min, true // the last (topmost) mount wins
	}
	return minor, ok, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of
// /proc/self/mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// startJournal starts the open journal (Options.Journal) with a
// predecessor's state (nil on a fresh mount).
func (fsys *FileSystem) startJournal(state map[uint64]inherited) error {
	if fsys.o.Journal == "" {
		return nil
	}
	j, err := openJournal(fsys.o.Journal, state)
	if err != nil {
		return fmt.Errorf("open journal: %w", err)
	}
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if fsys.journal != nil {
		fsys.journal.Close()
	}
	fsys.journal, fsys.inherited = j, state
	return nil
}
