package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"

	"github.com/nydus-go/nydus/bench/internal/benchkit"
)

// tools maps the commands the benchmark runs to their Debian packages.
var tools = map[string]string{
	"debootstrap": "debootstrap",
	"zstd":        "zstd",
	"mkfs.erofs":  "erofs-utils",
	"tar":         "tar",
}

// ensureTools installs the packages of missing tools with apt-get (as
// root) and puts /usr/sbin and /sbin on PATH, where debootstrap lives.
func ensureTools(ctx context.Context) error {
	if pkgs := benchkit.MissingCommands(tools); len(pkgs) > 0 {
		logf("installing %s (apt-get update + install)", strings.Join(pkgs, " "))
		if err := benchkit.InstallPackages(ctx, pkgs...); err != nil {
			return err
		}
	}
	os.Setenv("PATH", os.Getenv("PATH")+":/usr/sbin:/sbin")
	for t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("%s is still missing after installing packages", t)
		}
	}
	return nil
}

var zstdVersionRE = regexp.MustCompile(`v[0-9][0-9.]*`)

// zstdVersion is "v1.5.4" from `zstd --version`, or "?".
func zstdVersion(ctx context.Context) string {
	out, _ := exec.CommandContext(ctx, "zstd", "--version").CombinedOutput()
	if v := zstdVersionRE.FindString(string(out)); v != "" {
		return v
	}
	return "?"
}

// erofsVersion is the version of the erofs-utils package, or "?".
func erofsVersion(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${Version}", "erofs-utils").Output()
	if v := strings.TrimSpace(string(out)); err == nil && v != "" {
		return v
	}
	return "?"
}
