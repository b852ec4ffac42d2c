// Package clitest runs a command of this repository the way its users
// do, for the tests under cmd/: Main builds the command in the test's
// package directory once per test binary, Run runs it and captures its
// output and exit code.
package clitest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Main builds the command in the current directory (the test's package)
// as name in a temporary directory, sets *bin to its path, runs the
// tests and exits with their code; call it from TestMain.
func Main(m *testing.M, name string, bin *string) {
	dir, err := os.MkdirTemp("", name+"-test-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "clitest: %v\n", err)
		os.Exit(1)
	}
	*bin = filepath.Join(dir, name)
	if out, err := exec.Command("go", "build", "-o", *bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "clitest: build %s: %v\n%s", name, err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Result is what a run printed and its exit code.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Run runs cmd (its Stdout and Stderr are set here) and returns what it
// printed and its exit code; a command that cannot start fails the test.
func Run(t testing.TB, cmd *exec.Cmd) Result {
	t.Helper()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return Result{Stdout: o.String(), Stderr: e.String(), Code: code}
}
