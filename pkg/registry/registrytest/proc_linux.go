package registrytest

import "syscall"

// sysProcAttr makes the kernel kill the registry when the test process dies
// without running its cleanups (e.g. on a `go test -timeout` panic).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
