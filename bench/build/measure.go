package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nydus-go/nydus/bench/internal/benchkit"
)

// record is one timed run.
type record struct {
	group      string // input the contender read ("layer", "big")
	kind       string // "ours", "zstd" (the group's reference), "erofs"
	label      string
	inputBytes int64
	wall       float64 // seconds
	cpu        float64 // user+system seconds
	rssKiB     int64
	outBytes   int64
	others     float64 // CPU seconds other processes used meanwhile
}

// Contention handling: before each run wait for the CPUs to be idle
// (other processes below idleThreshold cores), and retry a run during
// which other processes kept too many cores busy, up to attempts runs.
const (
	idleThreshold = 0.15
	attempts      = 3
)

// bench times the contenders.
type bench struct {
	cfg        config
	start      time.Time // the deadline counts from here
	vars       vars
	inputBytes map[string]int64 // by group
	waited     float64          // seconds waited for idle CPUs
	discarded  int              // contended runs
	records    []record
}

// rounds runs every contender cfg.runs times, interleaved, in a fresh
// output directory each round.
func (b *bench) rounds(ctx context.Context) error {
	o := b.vars["O"]
	for i := 1; i <= b.cfg.runs; i++ {
		logf("round %d/%d", i, b.cfg.runs)
		if err := os.RemoveAll(o); err != nil {
			return err
		}
		if err := os.MkdirAll(o, 0o755); err != nil {
			return err
		}
		for _, c := range contenders {
			rec, err := b.measure(ctx, c)
			if err != nil {
				return err
			}
			b.records = append(b.records, rec)
		}
	}
	logf("waited %ss in total for idle CPUs; discarded %d contended runs", secondsText(b.waited), b.discarded)
	return nil
}

// measure returns one recorded run of c: until the deadline it waits for
// idle CPUs first, and retries a contended run (the last attempt is
// recorded whatever the contention).
func (b *bench) measure(ctx context.Context, c contender) (record, error) {
	for attempt := 1; attempt <= attempts; attempt++ {
		reject := 0.0
		if time.Since(b.start) < b.cfg.deadline {
			w, err := benchkit.WaitIdle(ctx, b.cfg.idleWait, idleThreshold)
			if err != nil {
				return record{}, fmt.Errorf("waiting for idle CPUs: %w", err)
			}
			b.waited += math.Round(w.Seconds()*10) / 10
			if attempt < attempts {
				reject = b.cfg.reject
			}
		}
		rec, err := b.run(ctx, c)
		if err != nil {
			return rec, fmt.Errorf("contender '%s' (%s) failed: %w", c.label, c.group, err)
		}
		if contended(rec, reject) {
			b.discarded++
			fmt.Fprintf(os.Stderr, "    %-58s %7.3f s  other processes kept %.2f cores busy meanwhile: run discarded\n", rec.label, rec.wall, rec.others/rec.wall)
			continue
		}
		if rec.outBytes, err = outputSize(c, b.vars); err != nil {
			return rec, fmt.Errorf("output size of '%s': %w", c.label, err)
		}
		fmt.Fprintf(os.Stderr, "    %-58s %7.3f s  %7.1f MB/s  cpu %4.0f%%  rss %6.1f MiB  out %s  others %.2f cores\n",
			rec.label, rec.wall, float64(rec.inputBytes)/1e6/rec.wall, 100*rec.cpu/rec.wall, float64(rec.rssKiB)/1024, human(rec.outBytes), rec.others/rec.wall)
		return rec, nil
	}
	return record{}, errors.New("unreachable: no run recorded")
}

// run removes c's outputs and runs it once.
func (b *bench) run(ctx context.Context, c contender) (record, error) {
	for _, o := range c.outputs {
		os.RemoveAll(b.vars.expand(o))
	}
	argv := c.argv(b.vars)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	u, err := benchkit.Run(cmd)
	return record{
		group: c.group, kind: c.kind, label: c.label, inputBytes: b.inputBytes[c.group],
		wall: u.Wall.Seconds(), cpu: u.CPU.Seconds(), rssKiB: u.MaxRSSKiB, others: u.Others.Seconds(),
	}, err
}

// contended reports whether other processes kept more than reject cores
// busy on average during the run (never if reject is 0).
func contended(r record, reject float64) bool {
	return reject > 0 && r.wall > 0 && r.others/r.wall > reject
}

// outputSize sums the sizes of c's outputs.
func outputSize(c contender, v vars) (int64, error) {
	var n int64
	for _, o := range c.outputs {
		s, err := sizeOf(v.expand(o))
		if err != nil {
			return 0, err
		}
		n += s
	}
	return n, nil
}

// sizeOf is the size of a file, or of all regular files below a
// directory.
func sizeOf(path string) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	if !st.IsDir() {
		return st.Size(), nil
	}
	var n int64
	err = filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}

// human formats a byte count in MB (10^6 bytes), as the MB/s figures.
func human(n int64) string {
	return fmt.Sprintf("%.1f MB", float64(n)/1e6)
}

// secondsText formats seconds to a tenth, without trailing zeros ("27",
// "3.5").
func secondsText(s float64) string {
	return strconv.FormatFloat(math.Round(s*10)/10, 'f', -1, 64)
}
