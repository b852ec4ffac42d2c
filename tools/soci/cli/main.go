// Command soci is a small stand-in for upstream's soci CLI, for the startup
// benchmark: upstream's cmd module, which holds the CLI, is not on the Go
// module proxy, so this builds on the root module
// github.com/awslabs/soci-snapshotter. Two commands:
//
//	soci convert [flags] SRC DST   make SRC, in a registry, a SOCI-enabled image DST, and push it
//	soci rpull [flags] REF         pull REF into containerd with the labels the SOCI snapshotter reads
//
// Unlike upstream's `soci convert`, which works on containerd's image store
// and leaves the push to nerdctl, convert reads SRC from the registry and
// pushes DST there itself; and rpull exists because ctr-remote's rpull
// labels layers for stargz only.
package main

import (
	"fmt"
	"os"
)

func main() {
	cmds := map[string]func([]string) error{"convert": convert, "rpull": rpull}
	if len(os.Args) < 2 || cmds[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: soci convert [flags] SRC DST | soci rpull [flags] REF (-h for flags)")
		os.Exit(2)
	}
	if err := cmds[os.Args[1]](os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "soci %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}
