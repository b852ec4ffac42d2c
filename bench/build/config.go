package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// config holds the benchmark's settings: flags whose defaults come from
// the BENCH_* environment variables.
type config struct {
	root     string        // repository root
	benchDir string        // BENCH_DIR: cache of the rootfs and layer tars
	outDir   string        // BENCH_OUT_DIR: outputs ("": a fresh dir on /dev/shm)
	runs     int           // BENCH_RUNS: runs per contender
	profile  bool          // BENCH_PROFILE=1: add a CPU profile of one build
	mirror   string        // BENCH_MIRROR: Debian mirror ("": apt's)
	doc      string        // BENCH_DOC: Markdown file to update
	idleWait time.Duration // BENCH_IDLE_WAIT: bound of each wait for idle CPUs
	reject   float64       // BENCH_REJECT_OTHERS: cores others may keep busy
	deadline time.Duration // BENCH_DEADLINE: no waiting nor retrying past it
	goCmd    string        // GO: the go command (for go tool pprof)
}

// parseConfig reads the flags in args, with defaults from getenv.
func parseConfig(args []string, getenv func(string) string) (config, error) {
	root, err := repoRoot()
	if err != nil {
		return config{}, err
	}
	c := config{root: root}
	env := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	runs, err := envInt("BENCH_RUNS", env("BENCH_RUNS", "3"))
	if err != nil {
		return c, err
	}
	idle, err := envFloat("BENCH_IDLE_WAIT", env("BENCH_IDLE_WAIT", "20"))
	if err != nil {
		return c, err
	}
	reject, err := envFloat("BENCH_REJECT_OTHERS", env("BENCH_REJECT_OTHERS", "0.25"))
	if err != nil {
		return c, err
	}
	deadline, err := envFloat("BENCH_DEADLINE", env("BENCH_DEADLINE", "420"))
	if err != nil {
		return c, err
	}
	fs := flag.NewFlagSet("bench-build", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	fs.StringVar(&c.benchDir, "dir", env("BENCH_DIR", "/var/tmp/nydus-bench"), "cache of the rootfs and layer tars (BENCH_DIR)")
	fs.StringVar(&c.outDir, "out-dir", getenv("BENCH_OUT_DIR"), "where outputs are written; empty: a fresh dir on /dev/shm, removed at the end (BENCH_OUT_DIR)")
	fs.IntVar(&c.runs, "runs", runs, "runs per contender (BENCH_RUNS)")
	fs.BoolVar(&c.profile, "profile", env("BENCH_PROFILE", "1") == "1", "add a CPU profile of one build (BENCH_PROFILE=1)")
	fs.StringVar(&c.mirror, "mirror", getenv("BENCH_MIRROR"), "Debian mirror URI; empty: read from apt's sources (BENCH_MIRROR)")
	fs.StringVar(&c.doc, "doc", env("BENCH_DOC", filepath.Join(root, "docs", "benchmarks.md")), "Markdown file whose section is rewritten (BENCH_DOC)")
	idleS := fs.Float64("idle-wait", idle, "seconds to wait at most for idle CPUs before each run (BENCH_IDLE_WAIT)")
	fs.Float64Var(&c.reject, "reject-others", reject, "retry (up to 2 times) a run during which other processes kept more than this many cores busy (BENCH_REJECT_OTHERS)")
	deadlineS := fs.Float64("deadline", deadline, "seconds after which the benchmark stops waiting and retrying (BENCH_DEADLINE)")
	fs.StringVar(&c.goCmd, "go", env("GO", "go"), "the go command, for go tool pprof (GO)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if c.runs < 1 {
		return c, fmt.Errorf("-runs must be a positive integer, got %d", c.runs)
	}
	c.idleWait = seconds(*idleS)
	c.deadline = seconds(*deadlineS)
	return c, nil
}

func envInt(key, v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%s must be a positive integer, got '%s'", key, v)
	}
	return n, nil
}

func envFloat(key, v string) (float64, error) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("%s must be a number ≥ 0, got '%s'", key, v)
	}
	return f, nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// repoRoot is the nearest directory, from the working directory up, that
// holds bench/build (make runs the benchmark from the root).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if st, err := os.Stat(filepath.Join(dir, "bench", "build")); err == nil && st.IsDir() {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the nydus-go repository (no bench/build above the working directory)")
		}
		dir = parent
	}
}
