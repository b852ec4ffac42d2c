package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/nydus-go/nydus/bench/internal/benchkit"
)

// record is one timed run.
type record struct {
	label  string
	round  int
	wall   float64 // seconds
	cpu    float64 // user+system seconds of the command and its children
	svc    float64 // user+system seconds the benchmark's services used meanwhile
	others float64 // CPU seconds all other processes used meanwhile
}

// errRejected reports a timed run during which other processes kept too
// many cores busy: nothing was recorded.
var errRejected = errors.New("run discarded: the machine was busy")

// idleThreshold is the busy cores below which the machine counts as idle.
const idleThreshold = 0.15

// run runs argv with its output written to logPath (truncated first),
// stopped with ctx (see benchkit.Run); the error names the log.
func run(ctx context.Context, logPath string, argv ...string) error {
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	if _, err := benchkit.Run(cmd); err != nil {
		return fmt.Errorf("%w (log: %s)", err, logPath)
	}
	return nil
}

// output runs argv and returns its stdout; the end of its stderr is part
// of the error when it fails.
func output(ctx context.Context, argv ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if _, err := benchkit.Run(cmd); err != nil {
		msg := strings.Join(strings.Fields(stderr.String()), " ")
		if len(msg) > 300 {
			msg = "..." + msg[len(msg)-300:]
		}
		if msg != "" {
			return "", fmt.Errorf("%w: %s", err, msg)
		}
		return "", err
	}
	return stdout.String(), nil
}

// timed runs argv with its output written to logPath and records its wall
// time, its CPU time (the command and the children it waited for), the
// CPU time of the service PIDs meanwhile and the CPU time all other
// processes used meanwhile. With reject > 0, a run during which the
// others kept more than reject cores busy on average returns errRejected.
func timed(ctx context.Context, label string, round int, services []int, reject float64, logPath string, argv []string) (record, error) {
	r := record{label: label, round: round}
	f, err := os.Create(logPath)
	if err != nil {
		return r, err
	}
	defer f.Close()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	svc0 := procsCPU(services)
	u, err := benchkit.Run(cmd)
	r.svc = max(0, procsCPU(services)-svc0)
	if err != nil {
		return r, err
	}
	r.wall, r.cpu = u.Wall.Seconds(), u.CPU.Seconds()
	r.others = max(0, u.Others.Seconds()-r.svc)
	if reject > 0 && r.others/r.wall > reject {
		logf("    %-52s %7.3f s  other processes kept %.2f cores busy meanwhile: run discarded", r.label, r.wall, r.others/r.wall)
		return r, errRejected
	}
	logf("    %-52s %7.3f s  cpu %4.0f%%  services %4.0f%%  others %.2f cores",
		r.label, r.wall, 100*r.cpu/r.wall, 100*r.svc/r.wall, r.others/r.wall)
	return r, nil
}

// procsCPU returns the user+system CPU seconds the processes (and the
// children they waited for) have used, from /proc/PID/stat; processes
// that are gone count 0.
func procsCPU(pids []int) float64 {
	var total float64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		total += statCPU(string(data))
	}
	return total / benchkit.ClockTicks
}

// statCPU returns utime+stime+cutime+cstime, in clock ticks, of a
// /proc/PID/stat line.
func statCPU(stat string) float64 {
	// The command name (field 2) may hold spaces: fields restart after
	// its closing parenthesis, at field 3 (state).
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(stat[i+1:])
	// utime, stime, cutime, cstime are fields 14-17, i.e. f[11:15].
	if len(f) < 15 {
		return 0
	}
	var total float64
	for _, v := range f[11:15] {
		if n, err := strconv.ParseFloat(v, 64); err == nil {
			total += n
		}
	}
	return total
}

// contention is the idle-wait and redo policy of the timed runs on a
// shared machine: before each run wait (bounded by idleWait per run and
// waitBudget in all) for the CPUs to be idle, and redo up to two times a
// run during which other processes kept more than reject cores busy;
// past the deadline, neither wait nor redo.
type contention struct {
	idleWait, waitBudget time.Duration
	reject               float64
	deadline             time.Time
	waited               float64 // seconds, each wait rounded to 0.1 s
	discarded            int
}

// nextWait is how long to wait for idle CPUs before a run, from what is
// left of the budget.
func (c *contention) nextWait() time.Duration {
	left := c.waitBudget - time.Duration(c.waited*float64(time.Second))
	return max(0, min(c.idleWait, left))
}

// waitedText prints the total wait as the report shows it (16, 16.5).
func (c *contention) waitedText() string {
	return strconv.FormatFloat(math.Round(c.waited*10)/10, 'f', -1, 64)
}

// measure records one run of a step: up to three attempts, each after
// prep (untimed, may be nil) and a bounded wait for idle CPUs; an attempt
// the machine's load spoiled is redone, the third is kept whatever the
// load. argv gets the attempt number.
func (b *bench) measure(ctx context.Context, label string, round int, prep func(context.Context) error, argv func(attempt int) []string) error {
	c := b.contention
	for attempt := 1; attempt <= 3; attempt++ {
		if prep != nil {
			if err := prep(ctx); err != nil {
				return fmt.Errorf("preparing %s: %w", label, err)
			}
		}
		reject := 0.0
		if time.Now().Before(c.deadline) {
			w, err := benchkit.WaitIdle(ctx, c.nextWait(), idleThreshold)
			if err != nil {
				return fmt.Errorf("waiting for idle CPUs: %w", err)
			}
			c.waited += math.Round(w.Seconds()*10) / 10
			if attempt < 3 {
				reject = c.reject
			}
		}
		r, err := timed(ctx, label, round, b.servicePIDs(), reject, b.lastLog(), argv(attempt))
		switch {
		case errors.Is(err, errRejected):
			c.discarded++
			continue
		case ctx.Err() != nil:
			return fmt.Errorf("%s (round %d): %w", label, round, ctx.Err())
		case err != nil:
			showTail(b.lastLog(), 15)
			return fmt.Errorf("%s (round %d) failed: %w", label, round, err)
		}
		b.results[label] = append(b.results[label], r)
		return nil
	}
	return nil
}

// showTail prints the last n lines of a log to stderr, indented.
func showTail(path string, n int) {
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for _, l := range lines {
		logf("    | %s", l)
	}
}
