// Command convert is the helper behind scripts/bench-convert.sh (`make
// bench-convert`). It is not part of the product; its subcommands are:
//
//	mirror    print the Debian mirror URI apt is configured with for a suite
//	freeport  print a free TCP port on 127.0.0.1
//	waitidle  wait (bounded) until other processes leave the CPUs idle
//	run       run a command, recording its wall and CPU time
//	layers    print the layers of an image in a plain-HTTP registry
//	report    turn the recorded runs and the registry's manifests into a
//	          markdown section, print it and splice it into docs/benchmarks.md
package main

import (
	"github.com/nydus-go/nydus/bench/internal/benchkit"

	"fmt"
	"os"
)

const usage = `usage: convert SUBCOMMAND [flags]

subcommands:
  mirror   [-suite bookworm] [-component main] [-apt /etc/apt]
  freeport
  waitidle [-max 30] [-threshold 0.15] [-window 500ms]
  run      -label L -results FILE [-round N] [-services PID,...] [-reject-others CORES] -- CMD ARGS...
  layers   REF                       (HOST:PORT/REPO:TAG, plain HTTP)
  report   -results FILE -plan FILE -doc FILE -heading H [-kv key=value]...
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
	case "freeport":
		err = cmdFreePort(args)
	case "waitidle":
		err = benchkit.CmdWaitIdle(args)
	case "run":
		err = cmdRun(args)
	case "layers":
		err = cmdLayers(args)
	case "report":
		err = cmdReport(args)
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "bench-convert: unknown subcommand %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench-convert %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
