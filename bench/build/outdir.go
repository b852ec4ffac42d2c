package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/nydus-go/nydus/bench/internal/benchkit"
)

// outputs is where the contenders write: a directory and how the report
// names its file system.
type outputs struct {
	dir     string
	fs      string // "tmpfs (/dev/shm)"
	created bool   // made by the benchmark, removed at the end
}

// minShmBytes is the free space /dev/shm needs to hold the outputs.
const minShmBytes = 3 << 30

// makeOutputs picks the output directory: BENCH_OUT_DIR if set, else a
// fresh directory on /dev/shm if it has room, else one under BENCH_DIR.
func makeOutputs(cfg config) (outputs, error) {
	if cfg.outDir != "" {
		if err := os.MkdirAll(cfg.outDir, 0o755); err != nil {
			return outputs{}, err
		}
		dir, err := filepath.Abs(cfg.outDir)
		if err != nil {
			return outputs{}, err
		}
		return outputs{dir: dir, fs: fsDesc(dir, dir)}, nil
	}
	if free, err := freeBytes("/dev/shm"); err == nil && free > minShmBytes && writable("/dev/shm") {
		dir, err := os.MkdirTemp("/dev/shm", "nydus-bench.")
		if err != nil {
			return outputs{}, err
		}
		return outputs{dir: dir, fs: "tmpfs (/dev/shm)", created: true}, nil
	}
	dir, err := os.MkdirTemp(cfg.benchDir, "out.")
	if err != nil {
		return outputs{}, err
	}
	return outputs{dir: dir, fs: fsDesc(dir, cfg.benchDir), created: true}, nil
}

// fsDesc is "TYPE (shown)" for the file system holding dir.
func fsDesc(dir, shown string) string {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		real = dir
	}
	t, err := benchkit.FSType(real)
	if err != nil {
		t = "?"
	}
	return fmt.Sprintf("%s (%s)", t, shown)
}

// writable reports whether the benchmark may create files in dir.
func writable(dir string) bool {
	f, err := os.CreateTemp(dir, ".nydus-bench-probe.")
	if err != nil {
		return false
	}
	f.Close()
	os.Remove(f.Name())
	return true
}

// remove deletes the directory if the benchmark made it.
func (o outputs) remove() {
	if o.created {
		os.RemoveAll(o.dir)
	}
}
