package benchkit

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
)

// InstallPackages installs Debian packages with `apt-get update` and
// `apt-get install -y`, as root; it does nothing when pkgs is empty.
func InstallPackages(ctx context.Context, pkgs ...string) error {
	if len(pkgs) == 0 {
		return nil
	}
	list := strings.Join(pkgs, " ")
	if os.Geteuid() != 0 {
		return fmt.Errorf("missing packages: %s; rerun as root so they can be installed with apt-get", list)
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return fmt.Errorf("missing packages: %s, and no apt-get to install them", list)
	}
	update := exec.CommandContext(ctx, "apt-get", "update", "-qq")
	update.Stderr = os.Stderr
	if _, err := Run(update); err != nil {
		return fmt.Errorf("apt-get update: %w", err)
	}
	install := exec.CommandContext(ctx, "apt-get", append([]string{"install", "-y", "-qq"}, pkgs...)...)
	install.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	install.Stderr = os.Stderr
	if _, err := Run(install); err != nil {
		return fmt.Errorf("apt-get install -y %s: %w", list, err)
	}
	return nil
}

// MissingCommands returns the packages of the commands that are not in
// PATH nor in /usr/sbin or /sbin (where root's tools live); cmds maps a
// command to its package.
func MissingCommands(cmds map[string]string) []string {
	var pkgs []string
	for _, c := range slices.Sorted(maps.Keys(cmds)) {
		if _, err := LookCommand(c); err != nil && !slices.Contains(pkgs, cmds[c]) {
			pkgs = append(pkgs, cmds[c])
		}
	}
	return pkgs
}

// LookCommand finds a command in PATH, then in /usr/sbin and /sbin.
func LookCommand(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := dir + "/" + name
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", name, exec.ErrNotFound)
}
