// Package sysproc runs and tears down the system daemons that the
// end-to-end tests and the startup benchmark drive (docker-registry,
// containerd, snapshotters): processes started and stopped by PID, the
// processes and mounts left under a directory, and polling.
package sysproc

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a daemon started by Start.
type Proc struct {
	// Name is used in messages.
	Name string
	// Cmd is the running command.
	Cmd *exec.Cmd
	// Log is the file its stdout and stderr are appended to.
	Log  string
	done chan struct{}
}

// Start starts argv with its output appended to logPath. The process gets
// SIGKILL if the calling process dies.
func Start(name, logPath string, argv ...string) (*Proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	return p, nil
}

// Alive reports whether the process is running; a nil Proc is not.
func (p *Proc) Alive() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop sends sig and waits for the process, sending SIGKILL after 15 s.
// It does nothing on a nil or exited Proc.
func (p *Proc) Stop(sig syscall.Signal) {
	if !p.Alive() {
		return
	}
	p.Cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.Cmd.Process.Kill()
		<-p.done
	}
}

// Tail returns the last 4000 bytes of the log.
func (p *Proc) Tail() string {
	b, _ := os.ReadFile(p.Log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// PIDsMatching lists the processes, other than this one, whose command
// line contains s.
func PIDsMatching(s string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, de := range ents {
		pid, err := strconv.Atoi(de.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Contains(cmd, []byte(s)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// WaitGone waits up to 10 s until list returns no processes.
func WaitGone(list func() []int) {
	for i := 0; i < 100 && len(list()) > 0; i++ {
		time.Sleep(100 * time.Millisecond)
	}
}

// MountsUnder lists the mount points at or below dir, deepest first.
func MountsUnder(dir string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var ms []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			ms = append(ms, f[4])
		}
	}
	slices.SortFunc(ms, func(a, b string) int { return len(b) - len(a) })
	return ms
}

// UnmountUnder lazily unmounts everything at or below dir, in up to three
// passes, and returns the last error.
func UnmountUnder(dir string) error {
	var last error
	for i := 0; i < 3; i++ {
		ms := MountsUnder(dir)
		if len(ms) == 0 {
			return nil
		}
		for _, m := range ms {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
				last = fmt.Errorf("umount %s: %w", m, err)
			}
		}
	}
	return last
}

// WaitFor polls cond every 100 ms until it holds or timeout passes.
func WaitFor(timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}
