package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/nydus-go/nydus/bench/internal/benchkit"
)

// heading is the section of the doc the benchmark writes.
const heading = "## Layer build (`make bench-build`)"

// runBench runs the whole benchmark and rewrites the doc's section.
func runBench(ctx context.Context, cfg config, start time.Time) error {
	nydusImage := filepath.Join(cfg.root, "bin", "nydus-image")
	if !isFile(nydusImage) {
		return fmt.Errorf("%s is missing: run 'make bench-build' (it runs 'make build' first)", nydusImage)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := ensureTools(ctx); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.benchDir, 0o755); err != nil {
		return err
	}
	out, err := makeOutputs(cfg)
	if err != nil {
		return fmt.Errorf("output dir: %w", err)
	}
	defer out.remove()
	m := benchkit.ReadMachine()
	logf("machine: nproc %d (GOMAXPROCS %d), %s, kernel %s, %s RAM", m.NumCPU, runtime.GOMAXPROCS(0), m.CPU, m.Kernel, m.Memory)
	logf("work dir %s, outputs on %s", cfg.benchDir, out.dir)
	in, err := prepareInputs(ctx, cfg)
	if err != nil {
		return err
	}
	if err := warmPageCache(ctx, in); err != nil {
		return fmt.Errorf("warming the page cache: %w", err)
	}
	b := &bench{cfg: cfg, start: start, inputBytes: map[string]int64{"layer": in.layerBytes, "big": in.bigBytes},
		vars: vars{"N": nydusImage, "L": in.layer, "B": in.big, "R": in.rootfs, "O": filepath.Join(out.dir, "o")}}
	if err := b.rounds(ctx); err != nil {
		return err
	}
	if err := checkBootstraps(ctx, b.vars); err != nil {
		return err
	}
	var prof, summary string
	if cfg.profile {
		if prof, summary, err = cpuProfile(ctx, cfg.goCmd, self, out.dir, in.layer); err != nil {
			return err
		}
	}
	rows, err := rowsOf(b.records)
	if err != nil {
		return err
	}
	stats, err := readStats(b.vars.expand(bigStats))
	if err != nil {
		return err
	}
	logf("report")
	kv := reportFacts(ctx, cfg, m, out, in, b)
	if err := writeSection(cfg.doc, heading, render(heading, rows, kv, stats, shownCommands(), prof, summary)); err != nil {
		return err
	}
	logf("done in %.0fs; wrote the section '%s' of %s", time.Since(start).Seconds(), heading, relPath(cfg.root, cfg.doc))
	return nil
}

// checkBootstraps runs `nydus-image check` on the last round's
// bootstraps: the figures are only worth something if the outputs are
// valid.
func checkBootstraps(ctx context.Context, v vars) error {
	logf("checking the last round's bootstraps")
	for _, c := range []struct{ boot, input string }{{layerBoot, v["L"]}, {bigBoot, v["B"]}} {
		cmd := exec.CommandContext(ctx, v["N"], "check", v.expand(c.boot))
		cmd.Stderr = os.Stderr
		if _, err := benchkit.Run(cmd); err != nil {
			return fmt.Errorf("nydus-image check rejected the bootstrap built from %s: %w", c.input, err)
		}
	}
	return nil
}

// shownCommands lists the contenders' labels and commands for the
// report.
func shownCommands() [][2]string {
	var cmds [][2]string
	for _, c := range contenders {
		cmds = append(cmds, [2]string{c.label, c.shown()})
	}
	return cmds
}

// reportFacts are the facts about the run the report quotes.
func reportFacts(ctx context.Context, cfg config, m benchkit.Machine, out outputs, in inputs, b *bench) map[string]string {
	return map[string]string{
		"command":       "make bench-build",
		"workdir":       cfg.benchDir,
		"outfs":         out.fs,
		"date":          time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		"commit":        benchkit.GitCommit(ctx, cfg.root),
		"go":            runtime.Version(),
		"nproc":         fmt.Sprint(m.NumCPU),
		"gomaxprocs":    fmt.Sprint(runtime.GOMAXPROCS(0)),
		"cpu":           m.CPU,
		"kernel":        m.Kernel,
		"mem":           m.Memory,
		"zstd_version":  "zstd " + zstdVersion(ctx),
		"erofs_version": "mkfs.erofs " + erofsVersion(ctx),
		"reject":        fmt.Sprint(cfg.reject),
		"contention":    fmt.Sprintf("waited %s s in total for idle CPUs and discarded %d contended runs", secondsText(b.waited), b.discarded),
		"layer_desc": fmt.Sprintf("`debootstrap --variant=minbase %s`, cleaned, tarred with `tar --numeric-owner --xattrs --acls` (no `./` prefix, dev/proc/sys contents excluded): %d bytes, %d entries",
			suite, in.layerBytes, in.layerEntries),
		"big_desc": fmt.Sprintf("the layer tar repeated under copy0/ … copy%d/ plus %d MiB of random data in 8 MiB files (`bench/build mkbig`): %d bytes",
			bigCopies-1, bigRandomMiB, in.bigBytes),
		"layer_short": fmt.Sprintf("layer (%d MB)", in.layerBytes/1000000),
		"big_short":   fmt.Sprintf("1 GiB layer (%d MB)", in.bigBytes/1000000),
	}
}

// relPath is path relative to root if it is below it.
func relPath(root, path string) string {
	if r, err := filepath.Rel(root, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}

// logf prints a progress line on stderr.
func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "==> "+format+"\n", a...)
}
