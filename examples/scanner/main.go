// Command scanner is a reference subscriber to nydusd's events: it scans
// every image nydusd mounts with ClamAV (clamscan) and prints a verdict,
// one JSON line per scan, without ever delaying the container that uses
// the image. It follows each daemon's event log on its API socket
// (GET /api/v1/events?since=N&wait=30s), so it misses nothing and a
// restart of the scanner goes on where the log is.
//
//	scanner --sockets '/var/lib/containerd-nydus/socket/*/api.sock' --signatures eicar.ndb
//
// Sockets matching the pattern are picked up as nydus-snapshotter starts
// daemons (one per image in its dedicated mode). A mount event names the
// mountpoint (dedicated mode) or the image's path below the shared
// daemon's mountpoint (--shared-root).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nydus-go/nydus/pkg/daemon/api"
)

// Verdict is one scan's result, printed as a JSON line.
type Verdict struct {
	Socket          string    `json:"socket"`
	Mountpoint      string    `json:"mountpoint"`
	BootstrapDigest string    `json:"bootstrap_digest,omitempty"`
	Sequence        string    `json:"sequence"`
	Verdict         string    `json:"verdict"` // clean, infected or error
	Findings        []string  `json:"findings,omitempty"`
	Error           string    `json:"error,omitempty"`
	Started         time.Time `json:"started"`
	Took            string    `json:"took"`
}

func main() {
	sockets := flag.String("sockets", "", "glob of nydusd API sockets to follow (required)")
	sigs := flag.String("signatures", "", "ClamAV signature database (a .ndb/.hdb file or directory) passed to clamscan -d; default: clamscan's own")
	clamscan := flag.String("clamscan", "clamscan", "the clamscan binary")
	sharedRoot := flag.String("shared-root", "", "the shared nydusd's mountpoint, for mount events that name an image below it")
	flag.Parse()
	if *sockets == "" {
		fmt.Fprintln(os.Stderr, "scanner: --sockets is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := json.NewEncoder(os.Stdout)
	var outMu sync.Mutex
	report := func(v Verdict) {
		outMu.Lock()
		defer outMu.Unlock()
		out.Encode(v)
	}
	following := map[string]bool{}
	var wg sync.WaitGroup
	for ctx.Err() == nil {
		matches, err := filepath.Glob(*sockets)
		if err != nil {
			fmt.Fprintf(os.Stderr, "scanner: --sockets: %v\n", err)
			os.Exit(2)
		}
		for _, sock := range matches {
			if !following[sock] {
				following[sock] = true
				wg.Add(1)
				go func() {
					defer wg.Done()
					follow(ctx, sock, func(e api.CloudEvent) {
						report(scan(ctx, *clamscan, *sigs, *sharedRoot, sock, e))
					})
				}()
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	wg.Wait()
}

// follow reads a daemon's event log and calls fn for each mount event,
// until ctx ends or the daemon is gone for good.
func follow(ctx context.Context, sock string, fn func(api.CloudEvent)) {
	c := api.NewClient(sock)
	defer c.Close()
	var since uint64
	failures := 0
	for ctx.Err() == nil {
		evs, err := c.Events(ctx, since, 30*time.Second)
		if err != nil {
			if failures++; failures > 50 {
				return // the daemon was stopped
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		failures = 0
		for _, e := range evs {
			since = e.Seq()
			if e.Data.Kind == "mount" {
				fn(e)
			}
		}
	}
}

// scan runs clamscan over a mounted image and returns its verdict.
func scan(ctx context.Context, clamscan, sigs, sharedRoot, sock string, e api.CloudEvent) Verdict {
	mnt := e.Data.Path
	if sharedRoot != "" && !strings.HasPrefix(mnt, sharedRoot) {
		mnt = filepath.Join(sharedRoot, mnt)
	}
	v := Verdict{Socket: sock, Mountpoint: mnt, BootstrapDigest: e.Data.BootstrapDigest, Sequence: e.Sequence, Started: time.Now().UTC()}
	args := []string{"--no-summary", "--infected", "--recursive"}
	if sigs != "" {
		args = append(args, "--database", sigs)
	}
	out, err := exec.CommandContext(ctx, clamscan, append(args, mnt)...).Output()
	v.Took = time.Since(v.Started).Round(time.Millisecond).String()
	// clamscan exits 0 when nothing was found and 1 when something was.
	var exit *exec.ExitError
	switch {
	case err == nil:
		v.Verdict = "clean"
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		v.Verdict = "infected"
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if strings.HasSuffix(line, " FOUND") {
				v.Findings = append(v.Findings, strings.TrimPrefix(line, mnt))
			}
		}
	default:
		v.Verdict, v.Error = "error", err.Error()
	}
	return v
}
