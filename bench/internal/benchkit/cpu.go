package benchkit

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// BusyCPU returns the CPU seconds all CPUs have spent not idle (user,
// nice, system, irq, softirq, steal) since boot, from /proc/stat.
func BusyCPU() (float64, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, errors.New("unexpected /proc/stat format")
	}
	var busy float64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return 0, err
		}
		busy += v
	}
	return busy / ClockTicks, nil
}

// ClockTicks is USER_HZ, the unit of /proc/stat: 100 on every Linux ABI
// Go supports.
const ClockTicks = 100

// CmdWaitIdle waits until other processes keep less than -threshold
// cores busy over two consecutive -window samples, or -max seconds have
// passed; it prints the seconds it waited.
func CmdWaitIdle(args []string) error {
	fset := flag.NewFlagSet("waitidle", flag.ContinueOnError)
	maxWait := fset.Float64("max", 30, "give up after this many seconds")
	threshold := fset.Float64("threshold", 0.15, "busy cores below which the machine counts as idle")
	window := fset.Duration("window", 500*time.Millisecond, "sampling window")
	if err := fset.Parse(args); err != nil {
		return err
	}
	waited, err := waitIdle(context.Background(), time.Duration(*maxWait*float64(time.Second)), *threshold, *window)
	if err != nil {
		return err
	}
	fmt.Printf("%.1f\n", waited.Seconds())
	return nil
}

// IdleWindow is the sampling window of WaitIdle.
const IdleWindow = 500 * time.Millisecond

// WaitIdle waits until other processes keep less than threshold cores
// busy over two consecutive IdleWindow samples, or maxWait has passed (a
// sample already begun is finished), and returns how long it waited. It
// returns early with the context's error.
func WaitIdle(ctx context.Context, maxWait time.Duration, threshold float64) (time.Duration, error) {
	return waitIdle(ctx, maxWait, threshold, IdleWindow)
}

func waitIdle(ctx context.Context, maxWait time.Duration, threshold float64, window time.Duration) (time.Duration, error) {
	start := time.Now()
	quiet := 0
	for quiet < 2 && time.Since(start) < maxWait {
		b0, err := BusyCPU()
		if err != nil {
			return time.Since(start), err
		}
		t0 := time.Now()
		select {
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-time.After(window):
		}
		b1, err := BusyCPU()
		if err != nil {
			return time.Since(start), err
		}
		if (b1-b0)/time.Since(t0).Seconds() < threshold {
			quiet++
		} else {
			quiet = 0
		}
	}
	return time.Since(start), nil
}

// Verdict words a target check for the reports.
func Verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}
