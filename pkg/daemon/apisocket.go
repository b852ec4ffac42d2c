package daemon

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// listenUnix listens on a new unix socket at path whose mode is exactly
// mode (at most 0777), without changing the process's umask (which
// every goroutine shares). The socket is never reachable with a looser
// mode: its inode gets mode before bind(2) (on Linux bind creates the
// file with the socket inode's mode, less the umask, so never looser),
// and the file is chmodded to mode before listen(2), until which
// connections are refused.
func listenUnix(path string, mode os.FileMode) (net.Listener, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path) // closes fd
	defer f.Close()
	if err := syscall.Fchmod(fd, uint32(mode.Perm())); err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		return nil, fmt.Errorf("bind %s: %w", path, err)
	}
	if err := os.Chmod(path, mode.Perm()); err != nil {
		os.Remove(path)
		return nil, err
	}
	if err := syscall.Listen(fd, syscall.SOMAXCONN); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	l, err := net.FileListener(f) // a duplicate of fd
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return l, nil
}
