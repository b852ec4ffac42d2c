package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/nettest"
)

// TestSilentRegistry: nydusify against a registry that accepts TCP
// connections and never answers exits non-zero with one line naming the
// registry, after --response-timeout, instead of hanging.
func TestSilentRegistry(t *testing.T) {
	dir := t.TempDir()
	host := nettest.Silent(t)
	for _, args := range [][]string{
		{"convert", "--source", host + "/app:1", "--target", "oci:" + filepath.Join(dir, "out") + ":x"},
		{"check", "--target", host + "/app:1"},
		{"copy", "--source", host + "/app:1", "--target", host + "/app:2"},
	} {
		start := time.Now()
		res := run(t, dir, append(args, "--plain-http", "--response-timeout", "1s", "--connect-timeout", "1s")...)
		took := time.Since(start)
		lines := strings.Split(strings.TrimSpace(res.Stderr), "\n")
		if res.Code == 0 || took > 45*time.Second || !strings.Contains(lines[len(lines)-1], host) {
			t.Fatalf("%s: exit %d after %s:\n%s", args[0], res.Code, took, res.Stderr)
		}
		t.Logf("%s: exit %d after %s: %s", args[0], res.Code, took.Round(time.Millisecond), lines[len(lines)-1])
	}
}
