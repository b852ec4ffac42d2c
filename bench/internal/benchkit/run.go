package benchkit

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Usage is what a child process used, as Run measures it.
type Usage struct {
	// Wall is the time from just before the start to the end of the wait.
	Wall time.Duration
	// CPU is the user+system time of the child and of the descendants it
	// waited for (wait4's rusage).
	CPU time.Duration
	// MaxRSSKiB is the peak resident set size of the child or of its
	// largest waited-for descendant, in KiB (ru_maxrss, as GNU time -v
	// reports it).
	MaxRSSKiB int64
	// Others is the CPU time the rest of the machine used meanwhile (busy
	// time from /proc/stat minus CPU); 0 if /proc/stat could not be read.
	Others time.Duration
}

// OtherCores is the average number of cores other processes kept busy
// during the run.
func (u Usage) OtherCores() float64 {
	if u.Wall <= 0 {
		return 0
	}
	return u.Others.Seconds() / u.Wall.Seconds()
}

// StopGrace is how long Run lets a cancelled child's process group
// handle SIGTERM before the child gets SIGKILL.
const StopGrace = 10 * time.Second

// Run starts cmd in a process group of its own, waits for it and returns
// what it used, also when it failed. For a cmd made by
// exec.CommandContext, cancelling the context sends SIGTERM to the whole
// group and, StopGrace later, SIGKILL to the child; the child also gets
// SIGKILL if the calling process dies first.
func Run(cmd *exec.Cmd) (Usage, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if cmd.Cancel != nil {
		cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
		cmd.WaitDelay = StopGrace
	}
	var u Usage
	busy0, berr0 := BusyCPU()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return u, fmt.Errorf("start %s: %w", cmd.Args[0], err)
	}
	err := cmd.Wait()
	u.Wall = time.Since(start)
	busy1, berr1 := BusyCPU()
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		u.CPU = time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime))
		u.MaxRSSKiB = ru.Maxrss
	}
	if berr0 == nil && berr1 == nil {
		u.Others = max(0, time.Duration((busy1-busy0)*float64(time.Second))-u.CPU)
	}
	if err != nil {
		return u, fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
	}
	return u, nil
}
