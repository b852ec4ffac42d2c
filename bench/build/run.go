package main

import (
	"github.com/nydus-go/nydus/bench/internal/benchkit"

	"bufio"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// record is one timed run, a line of the results file.
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

const resultsHeader = "# group\tkind\tlabel\tinput_bytes\twall_s\tcpu_s\tmaxrss_kib\tout_bytes\tothers_cpu_s"

func (r record) line() string {
	return fmt.Sprintf("%s\t%s\t%s\t%d\t%.6f\t%.6f\t%d\t%d\t%.3f", r.group, r.kind, r.label, r.inputBytes, r.wall, r.cpu, r.rssKiB, r.outBytes, r.others)
}

func parseRecord(line string) (record, error) {
	f := strings.Split(line, "\t")
	if len(f) != 9 {
		return record{}, fmt.Errorf("want 9 tab-separated fields, got %d", len(f))
	}
	r := record{group: f[0], kind: f[1], label: f[2]}
	var err error
	if r.inputBytes, err = strconv.ParseInt(f[3], 10, 64); err != nil {
		return r, err
	}
	if r.wall, err = strconv.ParseFloat(f[4], 64); err != nil {
		return r, err
	}
	if r.cpu, err = strconv.ParseFloat(f[5], 64); err != nil {
		return r, err
	}
	if r.rssKiB, err = strconv.ParseInt(f[6], 10, 64); err != nil {
		return r, err
	}
	if r.outBytes, err = strconv.ParseInt(f[7], 10, 64); err != nil {
		return r, err
	}
	if r.others, err = strconv.ParseFloat(f[8], 64); err != nil {
		return r, err
	}
	return r, nil
}

// cmdRun runs a command with the helper's stdin, stdout and stderr, and
// appends its wall time, CPU time, peak RSS (from wait4's rusage, as GNU
// time reports it) and output size to the results file.
func cmdRun(args []string) error {
	fset := flag.NewFlagSet("run", flag.ContinueOnError)
	r := record{}
	fset.StringVar(&r.label, "label", "", "contender label (required)")
	fset.StringVar(&r.group, "group", "layer", "input group")
	fset.StringVar(&r.kind, "kind", "ours", "ours, zstd or erofs")
	fset.Int64Var(&r.inputBytes, "input-bytes", 0, "bytes of input, for MB/s (required)")
	results := fset.String("results", "", "results file to append to (required)")
	sizes := fset.String("size", "", "comma-separated outputs whose sizes are summed (directories: all files below)")
	rssFrom := fset.String("rss-from", "", "a `/usr/bin/time -v -o` report to take the peak RSS from")
	reject := fset.Float64("reject-others", 0, "if other processes kept more than this many cores busy on average during the run, record nothing and exit 3 (0: never)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	argv := fset.Args()
	if r.label == "" || *results == "" || r.inputBytes <= 0 || len(argv) == 0 {
		return errors.New("-label, -results, -input-bytes and a command are required")
	}
	if strings.ContainsAny(r.label+r.group+r.kind, "\t\n") {
		return errors.New("labels must not contain tabs or newlines")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// The command gets its own process group, and SIGINT/SIGTERM sent to
	// the helper are passed on to the whole group, so that nothing the
	// benchmark started outlives it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	busy0, _ := benchkit.BusyCPU()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-sigs:
			syscall.Kill(-cmd.Process.Pid, sig.(syscall.Signal))
		case <-done:
		}
	}()
	err := cmd.Wait()
	close(done)
	r.wall = time.Since(start).Seconds()
	busy1, berr := benchkit.BusyCPU()
	if err != nil {
		return fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.rssKiB = ru.Maxrss
		r.cpu = time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime)).Seconds()
	}
	if berr == nil {
		r.others = max(0, busy1-busy0-r.cpu)
	}
	if *reject > 0 && r.others/r.wall > *reject {
		fmt.Fprintf(os.Stderr, "    %-58s %7.3f s  other processes kept %.2f cores busy meanwhile: run discarded\n", r.label, r.wall, r.others/r.wall)
		os.Exit(3)
	}
	if *rssFrom != "" {
		kib, err := timeVRSS(*rssFrom)
		if err != nil {
			return err
		}
		r.rssKiB = kib
	}
	if *sizes != "" {
		for _, p := range strings.Split(*sizes, ",") {
			n, err := sizeOf(p)
			if err != nil {
				return fmt.Errorf("output size: %w", err)
			}
			r.outBytes += n
		}
	}
	f, err := os.OpenFile(*results, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if st, err := f.Stat(); err == nil && st.Size() == 0 {
		fmt.Fprintln(f, resultsHeader)
	}
	if _, err := fmt.Fprintln(f, r.line()); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "    %-58s %7.3f s  %7.1f MB/s  cpu %4.0f%%  rss %6.1f MiB  out %s  others %.2f cores\n",
		r.label, r.wall, float64(r.inputBytes)/1e6/r.wall, 100*r.cpu/r.wall, float64(r.rssKiB)/1024, human(r.outBytes), r.others/r.wall)
	return nil
}

// timeVRSS reads "Maximum resident set size (kbytes): N" from a GNU time
// -v report.
func timeVRSS(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if ok && k == "Maximum resident set size (kbytes)" {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s has no 'Maximum resident set size' line (not a GNU time -v report?)", path)
}

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
