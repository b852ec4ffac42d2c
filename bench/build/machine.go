package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// machine describes where the benchmark runs, for the report.
type machine struct {
	nproc, gomaxprocs int
	cpu               string // model name, "unknown CPU" if not found
	kernel            string
	mem               string // "24 GiB"
}

func describeMachine() machine {
	m := machine{nproc: runtime.NumCPU(), gomaxprocs: runtime.GOMAXPROCS(0), cpu: "unknown CPU", mem: "?"}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if v := procField(string(data), "model name"); v != "" {
			m.cpu = v
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		if kib, err := strconv.ParseFloat(strings.TrimSuffix(procField(string(data), "MemTotal"), " kB"), 64); err == nil {
			m.mem = fmt.Sprintf("%.0f GiB", kib/1048576)
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(data))
	}
	return m
}

// procField returns the value of the first "key: value" line of a /proc
// file such as /proc/cpuinfo or /proc/meminfo.
func procField(text, key string) string {
	for _, l := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// gitCommit is the short HEAD commit, with " + uncommitted changes" if
// tracked files differ from it, or "unknown".
func gitCommit(ctx context.Context, root string) string {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = root
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

// fsType returns the type of the file system holding path, from
// /proc/self/mountinfo (the mount point that is the longest prefix).
func fsType(path string) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	best, typ := "", ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		mnt, t, ok := parseMountinfo(sc.Text())
		if ok && within(path, mnt) && len(mnt) >= len(best) {
			best, typ = mnt, t
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if typ == "" {
		return "", fmt.Errorf("no mount holds %s", path)
	}
	return typ, nil
}

// parseMountinfo returns the mount point and file system type of a
// /proc/self/mountinfo line ("... mountpoint opts [tags] - fstype ...").
func parseMountinfo(line string) (mnt, typ string, ok bool) {
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

// freeBytes is the space available to unprivileged users on path's file
// system.
func freeBytes(path string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}
