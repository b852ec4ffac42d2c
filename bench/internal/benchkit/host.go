package benchkit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
)

// Machine is what a benchmark report says about the host.
type Machine struct {
	// NumCPU is runtime.NumCPU().
	NumCPU int
	// CPU is the model name ("unknown CPU"), Kernel the release ("?"),
	// Memory the total RAM such as "24 GiB" ("?").
	CPU, Kernel, Memory string
}

// ReadMachine describes the host from /proc.
func ReadMachine() Machine {
	m := Machine{NumCPU: runtime.NumCPU(), CPU: "unknown CPU", Kernel: "?", Memory: "?"}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if v := ProcField(string(b), "model name"); v != "" {
			m.CPU = v
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if kib, err := strconv.ParseFloat(strings.TrimSuffix(ProcField(string(b), "MemTotal"), " kB"), 64); err == nil {
			m.Memory = fmt.Sprintf("%.0f GiB", kib/1048576)
		}
	}
	return m
}

// ProcField returns the value of the first "key: value" line of a /proc
// file such as cpuinfo or meminfo.
func ProcField(text, key string) string {
	for _, l := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// GitCommit is the short HEAD commit of the checkout at dir, with
// " + uncommitted changes" if tracked files differ from it, or
// "unknown".
func GitCommit(ctx context.Context, dir string) string {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = dir
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	c, err := git("rev-parse", "--short", "HEAD")
	if err != nil || c == "" {
		return "unknown"
	}
	if st, err := git("status", "--porcelain", "--untracked-files=no"); err == nil && st != "" {
		c += " + uncommitted changes"
	}
	return c
}

// FSType returns the type of the file system holding path, from
// /proc/self/mountinfo.
func FSType(path string) (string, error) {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	typ, ok := MountFSType(string(mi), path)
	if !ok {
		return "", fmt.Errorf("no mount holds %s", path)
	}
	return typ, nil
}

// MountFSType returns, from the text of a mountinfo file, the type of
// the deepest mount point containing path.
func MountFSType(mountinfo, path string) (string, bool) {
	best, typ := "", ""
	for _, l := range strings.Split(mountinfo, "\n") {
		mnt, t, ok := ParseMountinfo(l)
		if ok && within(path, mnt) && len(mnt) >= len(best) {
			best, typ = mnt, t
		}
	}
	return typ, typ != ""
}

// ParseMountinfo returns the mount point and file system type of a
// /proc/self/mountinfo line ("... mountpoint opts [tags] - fstype ...").
func ParseMountinfo(line string) (mnt, typ string, ok bool) {
	pre, post, ok := strings.Cut(line, " - ")
	f, g := strings.Fields(pre), strings.Fields(post)
	if !ok || len(f) < 5 || len(g) < 1 {
		return "", "", false
	}
	return unescapeOctal(f[4]), g[0], true
}

// unescapeOctal undoes the \040-style escapes of /proc mount tables.
func unescapeOctal(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
}
