package main

import (
	"errors"
	"flag"
	"fmt"
	"strconv"
	"time"
)

// config holds the benchmark's knobs: flags whose defaults come from the
// BENCH_* environment variables the former script read.
type config struct {
	dir          string        // cache of rootfs trees and OCI layouts (BENCH_DIR)
	runs         int           // rounds of the speed measurement (BENCH_RUNS)
	zstdChunked  bool          // add the zstd:chunked reference row (BENCH_ZSTDCHUNKED)
	mirror       string        // Debian mirror URI; empty: apt's (BENCH_MIRROR)
	doc          string        // Markdown file whose section is rewritten (BENCH_DOC)
	tmp          string        // parent of the temporary directory (BENCH_TMP)
	idleWait     time.Duration // longest wait for idle CPUs before a timed run (BENCH_IDLE_WAIT)
	waitBudget   time.Duration // longest wait for idle CPUs in all (BENCH_WAIT_BUDGET)
	rejectOthers float64       // redo a run during which others kept more cores busy (BENCH_REJECT_OTHERS)
	deadline     time.Duration // stop waiting and redoing past this point (BENCH_DEADLINE)
}

// parseConfig parses args with the defaults getenv gives.
func parseConfig(args []string, getenv func(string) string) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("bench-convert", flag.ContinueOnError)
	var errs []error
	str := func(env, def string) string {
		if v := getenv(env); v != "" {
			return v
		}
		return def
	}
	num := func(env string, def float64) float64 {
		v := getenv(env)
		if v == "" {
			return def
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: not a number", env, v))
		}
		return f
	}
	secs := func(env string, def float64) time.Duration {
		return time.Duration(num(env, def) * float64(time.Second))
	}
	fs.StringVar(&c.dir, "dir", str("BENCH_DIR", "/var/tmp/nydus-bench"), "cache of rootfs trees and OCI layouts; the bookworm rootfs is shared with make bench-build (env BENCH_DIR)")
	runs := fs.String("runs", str("BENCH_RUNS", "3"), "rounds of the speed measurement (env BENCH_RUNS)")
	fs.BoolVar(&c.zstdChunked, "zstdchunked", str("BENCH_ZSTDCHUNKED", "1") == "1", "add the zstd:chunked reference row, one run (env BENCH_ZSTDCHUNKED=1)")
	fs.StringVar(&c.mirror, "mirror", getenv("BENCH_MIRROR"), "Debian mirror URI; default: read from apt's sources (env BENCH_MIRROR)")
	fs.StringVar(&c.doc, "doc", str("BENCH_DOC", "docs/benchmarks.md"), "Markdown file whose section is rewritten, relative to the repository root (env BENCH_DOC)")
	fs.StringVar(&c.tmp, "tmp", getenv("BENCH_TMP"), "parent of the temporary directory; default /dev/shm if it has room, else -dir (env BENCH_TMP)")
	fs.DurationVar(&c.idleWait, "idle-wait", secs("BENCH_IDLE_WAIT", 10), "longest wait for idle CPUs before each timed run (env BENCH_IDLE_WAIT, seconds)")
	fs.DurationVar(&c.waitBudget, "wait-budget", secs("BENCH_WAIT_BUDGET", 60), "longest wait for idle CPUs in all (env BENCH_WAIT_BUDGET, seconds)")
	fs.Float64Var(&c.rejectOthers, "reject-others", num("BENCH_REJECT_OTHERS", 0.3), "redo (up to 2 times) a run during which other processes kept more than this many cores busy; 0: never (env BENCH_REJECT_OTHERS)")
	fs.DurationVar(&c.deadline, "deadline", secs("BENCH_DEADLINE", 420), "past this point of the run, stop waiting and redoing (env BENCH_DEADLINE, seconds)")
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	n, err := strconv.Atoi(*runs)
	if err != nil || n < 1 {
		return nil, fmt.Errorf("BENCH_RUNS (-runs) must be a positive integer, got %q", *runs)
	}
	c.runs = n
	if c.idleWait < 0 || c.waitBudget < 0 || c.deadline < 0 || c.rejectOthers < 0 {
		return nil, errors.New("-idle-wait, -wait-budget, -deadline and -reject-others must not be negative")
	}
	return c, nil
}
