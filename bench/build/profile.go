package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"syscall"
	"time"

	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
)

// countWriter discards what it is given and counts it.
type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}

// cmdProfile builds a layer in-process as `nydus-image create -t tar-rafs`
// does (zstd, blake3, 1 MiB chunks, input through a 1 MiB bufio.Reader)
// with the CPU profiler on. The blob goes to -o (through a 1 MiB
// bufio.Writer, no fsync) or is discarded.
func cmdProfile(args []string) error {
	fs := flag.NewFlagSet("profile", flag.ContinueOnError)
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile here (required)")
	memProfile := fs.String("memprofile", "", "write a heap profile here after the build")
	inline := fs.Bool("inline-meta", false, "as --blob-inline-meta")
	toc := fs.Bool("toc", false, "as --features blob-toc")
	outPath := fs.String("o", "", "write the blob here (default: discard)")
	tracePath := fs.String("trace", "", "also write a runtime execution trace here (go tool trace)")
	workers := fs.Int("workers", 0, "compression goroutines (0: the builder's default, GOMAXPROCS)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile == "" || fs.NArg() != 1 {
		return errors.New("want -cpuprofile FILE and one layer tar")
	}
	in, err := os.Open(fs.Arg(0))
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	var out io.Writer
	cw := &countWriter{}
	out = cw
	var flush func() error
	if *outPath != "" {
		f, err := os.Create(*outPath)
		if err != nil {
			return err
		}
		defer f.Close()
		bw := bufio.NewWriterSize(io.MultiWriter(f, cw), 1<<20)
		out, flush = bw, bw.Flush
	}
	pf, err := os.Create(*cpuProfile)
	if err != nil {
		return err
	}
	defer pf.Close()
	if err := pprof.StartCPUProfile(pf); err != nil {
		return err
	}
	if *tracePath != "" {
		tf, err := os.Create(*tracePath)
		if err != nil {
			return err
		}
		defer tf.Close()
		if err := trace.Start(tf); err != nil {
			return err
		}
		defer trace.Stop()
	}
	start := time.Now()
	res, err := builder.Create(context.Background(), bufio.NewReaderSize(in, 1<<20), out, builder.Options{
		Compressor: compress.Zstd,
		Digester:   digester.Blake3,
		InlineMeta: *inline,
		TOC:        *toc,
		Workers:    *workers,
	})
	if err == nil && flush != nil {
		err = flush()
	}
	elapsed := time.Since(start)
	pprof.StopCPUProfile()
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	if *memProfile != "" {
		mf, err := os.Create(*memProfile)
		if err != nil {
			return err
		}
		runtime.GC()
		if err := pprof.WriteHeapProfile(mf); err != nil {
			mf.Close()
			return err
		}
		if err := mf.Close(); err != nil {
			return err
		}
	}
	var ru syscall.Rusage
	cpu := 0.0
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		cpu = time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime)).Seconds()
	}
	fmt.Fprintf(os.Stderr, "    profile build: %d bytes in %.3f s = %.1f MB/s (GOMAXPROCS %d, workers %d, process CPU %.2f s), blob %d bytes, bootstrap %d bytes, %d chunks\n",
		st.Size(), elapsed.Seconds(), float64(st.Size())/1e6/elapsed.Seconds(), runtime.GOMAXPROCS(0), *workers, cpu, cw.n, len(res.Bootstrap), res.Stats.Chunks)
	return nil
}
