// Command build is the layer build benchmark (`make bench-build`). Run
// without a subcommand, it builds (once, cached under BENCH_DIR) a
// `debootstrap --variant=minbase bookworm` rootfs, tars it as a layer
// (~130 MB) and times, BENCH_RUNS runs each (median reported),
// interleaved:
//   - bin/nydus-image create -t tar-rafs (zstd, blake3, 1 MiB chunks), in
//     its plain form and in the form nydus-snapshotter's converter uses
//     (--blob-inline-meta --features blob-toc);
//   - zstd -3 -T0 on the same tar (the machine's compression limit);
//   - mkfs.erofs on the same tree, plain and chunked (--chunksize --blobdev);
//
// then the peak RSS and throughput of nydus-image on a synthesised ~1 GiB
// layer (the tar repeated under 8 top-level directories plus random
// data). It prints a markdown section and splices it into
// docs/benchmarks.md (other sections are kept). Run it with -h for the
// flags and the BENCH_* environment variables they default to; it needs
// root the first time (apt-get install, debootstrap).
//
// Its subcommands are tools of their own:
//
//	mirror   print the Debian mirror URI apt is configured with for a suite
//	         (scripts/debian-image.sh uses it)
//	mkbig    synthesise a large layer: a tar repeated under N top-level
//	         directories plus incompressible random files
//	profile  build a layer in-process with a CPU profile
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nydus-go/nydus/bench/internal/benchkit"
)

const usage = `usage: build [flags]      run the benchmark (make bench-build)
       build SUBCOMMAND [flags]

subcommands:
  mirror  [-suite bookworm] [-component main] [-apt /etc/apt]
  mkbig   -in layer.tar -out big.tar [-copies 8] [-random-mib 128] [-seed 1]
  profile -cpuprofile FILE [-inline-meta] [-toc] [-o BLOB] LAYER.tar

flags of the benchmark:
`

func main() {
	start := time.Now()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	name, err := "", error(nil)
	if len(os.Args) > 1 && !strings.HasPrefix(os.Args[1], "-") {
		name, err = os.Args[1], subcommand(ctx, os.Args[1], os.Args[2:])
	} else {
		err = benchmark(ctx, os.Args[1:], start)
	}
	if err == nil {
		return
	}
	stop()
	code := 1
	if ctx.Err() != nil {
		code = 130
		if strings.Contains(context.Cause(ctx).Error(), "terminated") {
			code = 143
		}
	}
	if name != "" {
		fmt.Fprintf(os.Stderr, "bench-build %s: %v\n", name, err)
	} else if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	} else {
		fmt.Fprintf(os.Stderr, "bench-build: error: %v\nbench-build: FAILED (exit %d) after %.0fs\n", err, code, time.Since(start).Seconds())
	}
	os.Exit(code)
}

// benchmark parses the benchmark's flags and runs it.
func benchmark(ctx context.Context, args []string, start time.Time) error {
	cfg, err := parseConfig(args, os.Getenv)
	if err != nil {
		return err
	}
	return runBench(ctx, cfg, start)
}

// subcommand runs one of the tools.
func subcommand(ctx context.Context, name string, args []string) error {
	switch name {
	case "mirror":
		return benchkit.CmdMirror(args)
	case "mkbig":
		return cmdMkbig(ctx, args)
	case "profile":
		return cmdProfile(args)
	case "help":
		fmt.Print(usage)
		return nil
	}
	fmt.Fprint(os.Stderr, usage)
	return fmt.Errorf("unknown subcommand %q", name)
}
