// Command convert is the image conversion benchmark (`make
// bench-convert`); it is not part of the product.
//
// It caches debootstrapped Debian rootfs trees and OCI images built from
// them (under -dir), starts a temporary docker-registry on 127.0.0.1 and
// a temporary containerd (own config, root, state and sockets, CRI
// disabled), pushes the images and measures, in one invocation:
//
//  1. Conversion speed and size on a 2-layer image (bookworm minbase +
//     `apt-get install curl ca-certificates`), -runs interleaved rounds,
//     median reported: bin/nydusify convert registry → registry with the
//     defaults and with --independent, against eStargz with Debian's
//     ctr-remote (`ctr content fetch`, `ctr-remote image convert
//     --estargz --oci`, `ctr image push`, each timed) and, one run for
//     reference, zstd:chunked. Before each timed run it waits (bounded)
//     for idle CPUs and redoes a run other processes contended.
//  2. Dedup across an image family (bookworm minbase, + curl, two more
//     bookworm minbase debootstraps, trixie minbase, + curl): OCI gzip
//     layer bytes against the unique Nydus blob bytes read back from the
//     registry, converting with --chunk-dict, with nydusify's defaults
//     (the dedup scope), with --dedup-scope none and upstream-style with
//     --independent.
//
// It prints the report and rewrites the "## Conversion" section of
// docs/benchmarks.md (other sections are kept). Everything it starts is
// stopped by PID, everything it mounts is unmounted and its temporary
// directory removed, also on SIGINT or SIGTERM. It needs root (apt-get,
// debootstrap, chroot, containerd). Flags take their defaults from the
// BENCH_* environment variables; see -help.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	start := time.Now()
	cfg, err := parseConfig(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench-convert: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err = chdirRoot()
	if err == nil {
		err = runBench(ctx, cfg)
	}
	interrupted := ctx.Err() != nil
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench-convert: error: %v\nbench-convert: FAILED after %ds\n", err, int(time.Since(start).Seconds()))
		if interrupted {
			os.Exit(130)
		}
		os.Exit(1)
	}
}

// chdirRoot makes the repository root the working directory: bin/, the
// document and git are found from there.
func chdirRoot() error {
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	root, err := repoRoot(wd)
	if err != nil {
		return err
	}
	return os.Chdir(root)
}
