// Package roottest gates tests that need root or /dev/fuse: they skip on
// a developer machine without them, and fail in CI (CI set), which runs as
// root with /dev/fuse, so a skip there can never hide a failure.
package roottest

import (
	"os"
	"testing"
)

// RequireRoot skips (or, in CI, fails) a test when not running as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Getuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("this test needs root, and CI runs as root")
	}
	t.Skip("needs root")
}

// RequireFUSE skips (or, in CI, fails) a test without root and /dev/fuse.
func RequireFUSE(t testing.TB) {
	t.Helper()
	if os.Getuid() == 0 {
		if _, err := os.Stat("/dev/fuse"); err == nil {
			return
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("FUSE tests need root and /dev/fuse, which CI has")
	}
	t.Skip("needs root and /dev/fuse")
}
