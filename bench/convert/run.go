package main

import (
	"github.com/nydus-go/nydus/bench/internal/benchkit"

	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// record is one timed run, a line of the results file.
type record struct {
	label  string
	round  int
	wall   float64 // seconds
	cpu    float64 // user+system seconds of the command and its children
	svc    float64 // user+system seconds the -services processes used meanwhile
	others float64 // CPU seconds all other processes used meanwhile
}

const resultsHeader = "# label\tround\twall_s\tcpu_s\tservices_cpu_s\tothers_cpu_s"

func (r record) line() string {
	return fmt.Sprintf("%s\t%d\t%.6f\t%.6f\t%.3f\t%.3f", r.label, r.round, r.wall, r.cpu, r.svc, r.others)
}

func parseRecord(line string) (record, error) {
	f := strings.Split(line, "\t")
	if len(f) != 6 {
		return record{}, fmt.Errorf("want 6 tab-separated fields, got %d", len(f))
	}
	r := record{label: f[0]}
	var err error
	if r.round, err = strconv.Atoi(f[1]); err != nil {
		return r, err
	}
	if r.wall, err = strconv.ParseFloat(f[2], 64); err != nil {
		return r, err
	}
	if r.cpu, err = strconv.ParseFloat(f[3], 64); err != nil {
		return r, err
	}
	if r.svc, err = strconv.ParseFloat(f[4], 64); err != nil {
		return r, err
	}
	if r.others, err = strconv.ParseFloat(f[5], 64); err != nil {
		return r, err
	}
	return r, nil
}

// cmdRun runs a command with the helper's stdin, stdout and stderr, and
// appends its wall time, CPU time (from wait4's rusage: the command and
// the children it waited for), the CPU time the benchmark's own services
// (registry, containerd: -services) used meanwhile, and the CPU time all
// other processes used meanwhile to the results file.
func cmdRun(args []string) error {
	fset := flag.NewFlagSet("run", flag.ContinueOnError)
	r := record{}
	fset.StringVar(&r.label, "label", "", "label (required)")
	fset.IntVar(&r.round, "round", 1, "round number")
	results := fset.String("results", "", "results file to append to (required)")
	reject := fset.Float64("reject-others", 0, "if other processes kept more than this many cores busy on average during the run, record nothing and exit 3 (0: never)")
	services := fset.String("services", "", "comma-separated PIDs of the benchmark's services, whose CPU time is counted apart from the other processes'")
	if err := fset.Parse(args); err != nil {
		return err
	}
	argv := fset.Args()
	if r.label == "" || *results == "" || len(argv) == 0 {
		return errors.New("-label, -results and a command are required")
	}
	if strings.ContainsAny(r.label, "\t\n") {
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
	var pids []int
	if *services != "" {
		for _, f := range strings.Split(*services, ",") {
			pid, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || pid <= 0 {
				return fmt.Errorf("-services: bad PID %q", f)
			}
			pids = append(pids, pid)
		}
	}
	svc0 := procsCPU(pids)
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
	r.svc = max(0, procsCPU(pids)-svc0)
	if err != nil {
		return fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.cpu = time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime)).Seconds()
	}
	if berr == nil {
		r.others = max(0, busy1-busy0-r.cpu-r.svc)
	}
	if *reject > 0 && r.others/r.wall > *reject {
		fmt.Fprintf(os.Stderr, "    %-52s %7.3f s  other processes kept %.2f cores busy meanwhile: run discarded\n", r.label, r.wall, r.others/r.wall)
		os.Exit(3)
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
	fmt.Fprintf(os.Stderr, "    %-52s %7.3f s  cpu %4.0f%%  services %4.0f%%  others %.2f cores\n",
		r.label, r.wall, 100*r.cpu/r.wall, 100*r.svc/r.wall, r.others/r.wall)
	return nil
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
		// The command name (field 2) may hold spaces: fields restart after
		// its closing parenthesis, at field 3 (state).
		i := strings.LastIndexByte(string(data), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		// utime, stime, cutime, cstime are fields 14-17, i.e. f[11:15].
		if len(f) < 15 {
			continue
		}
		for _, v := range f[11:15] {
			n, err := strconv.ParseFloat(v, 64)
			if err == nil {
				total += n
			}
		}
	}
	return total / benchkit.ClockTicks
}

// cmdFreePort prints a TCP port on 127.0.0.1 that nothing listens on at
// the moment (the caller must still check that its server got it).
func cmdFreePort(args []string) error {
	if len(args) != 0 {
		return errors.New("no arguments expected")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return err
	}
	fmt.Println(port)
	return nil
}
