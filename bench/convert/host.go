package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/nydus-go/nydus/bench/internal/benchkit"
)

// toolPackages maps the commands the benchmark runs to the Debian
// packages that provide them.
var toolPackages = map[string]string{
	"docker-registry": "docker-registry",
	"containerd":      "containerd",
	"ctr":             "containerd",
	"runc":            "runc",
	"ctr-remote":      "stargz-snapshotter",
	"debootstrap":     "debootstrap",
	"umoci":           "umoci",
	"skopeo":          "skopeo",
}

// ensureTools installs the packages of the missing tools with apt-get;
// /usr/sbin and /sbin are added to PATH first, for the children too.
func ensureTools(ctx context.Context) error {
	if err := os.Setenv("PATH", os.Getenv("PATH")+":/usr/sbin:/sbin"); err != nil {
		return err
	}
	if need := benchkit.MissingCommands(toolPackages); len(need) > 0 {
		say("installing %s (apt-get update + install)", strings.Join(need, " "))
		if err := benchkit.InstallPackages(ctx, need...); err != nil {
			return err
		}
	}
	for _, t := range append(slices.Sorted(maps.Keys(toolPackages)), "tar", "chroot") {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s is still missing after installing packages", t)
		}
	}
	return nil
}

// makeTmp creates the temporary directory: under parent if set, else in
// /dev/shm if it is writable with more than 4 GiB free, else under the
// cache directory.
func makeTmp(parent, cacheDir string) (string, error) {
	if parent != "" {
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return "", err
		}
		return os.MkdirTemp(parent, "nydus-bench-convert.")
	}
	var st syscall.Statfs_t
	if syscall.Access("/dev/shm", 2 /* W_OK */) == nil && syscall.Statfs("/dev/shm", &st) == nil &&
		uint64(st.Bavail)*uint64(st.Bsize) > 4<<30 {
		return os.MkdirTemp("/dev/shm", "nydus-bench-convert.")
	}
	return os.MkdirTemp(cacheDir, "tmp-convert.")
}

// tmpFSText describes where the temporary files are: "tmpfs (/dev/shm)".
func tmpFSText(tmp string) string {
	typ, err := benchkit.FSType(tmp)
	if err != nil {
		typ = "?"
	}
	return fmt.Sprintf("%s (%s)", typ, filepath.Dir(tmp))
}

// pkgVersion is the installed version of a Debian package, or "?".
func pkgVersion(ctx context.Context, pkg string) string {
	out, err := output(ctx, "dpkg-query", "-W", "-f=${Version}", pkg)
	if err != nil || strings.TrimSpace(out) == "" {
		return "?"
	}
	return strings.TrimSpace(out)
}

// versionLine returns the value of the "Version:" line of a --version
// output.
func versionLine(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "Version:" {
			return f[1]
		}
	}
	return ""
}

// repoRoot returns the directory of the main module's go.mod, from dir
// upwards.
func repoRoot(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
			strings.HasPrefix(string(b), "module github.com/nydus-go/nydus\n") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("not inside the nydus repository (no go.mod of github.com/nydus-go/nydus above the working directory)")
		}
	}
}
