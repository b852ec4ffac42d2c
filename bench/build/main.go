// Command build is the helper behind scripts/bench-build.sh (`make
// bench-build`). It is not part of the product; its subcommands are:
//
//	mirror   print the Debian mirror URI apt is configured with for a suite
//	mkbig    synthesise a large layer: a tar repeated under N top-level
//	         directories plus incompressible random files
//	run      run a command, timing it and recording its peak RSS
//	report   turn the recorded runs into a markdown section, print it and
//	         splice it into docs/benchmarks.md
//	profile  build a layer in-process with a CPU profile
//	waitidle wait (bounded) until other processes leave the CPUs idle
//	gomaxprocs print the GOMAXPROCS a Go program gets here
package main

import (
	"github.com/nydus-go/nydus/bench/internal/benchkit"

	"fmt"
	"os"
	"runtime"
)

const usage = `usage: build SUBCOMMAND [flags]

subcommands:
  mirror  [-suite bookworm] [-component main] [-apt /etc/apt]
  mkbig   -in layer.tar -out big.tar [-copies 8] [-random-mib 128] [-seed 1]
  run     -label L -group G -kind K -input-bytes N -results FILE [-size PATH,...] [-rss-from FILE] [-reject-others CORES] -- CMD ARGS...
  waitidle [-max 30] [-threshold 0.15] [-window 500ms]
  report  -results FILE -doc FILE -heading H [-kv key=value]... [-stats FILE] [-profile FILE]
  profile -cpuprofile FILE [-inline-meta] [-toc] [-o BLOB] LAYER.tar
  gomaxprocs
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	args := os.Args[2:]
	switch os.Args[1] {
	case "mirror":
		err = benchkit.CmdMirror(args)
	case "mkbig":
		err = cmdMkbig(args)
	case "run":
		err = cmdRun(args)
	case "report":
		err = cmdReport(args)
	case "profile":
		err = cmdProfile(args)
	case "waitidle":
		err = benchkit.CmdWaitIdle(args)
	case "gomaxprocs":
		fmt.Println(runtime.GOMAXPROCS(0))
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "bench-build: unknown subcommand %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench-build %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
