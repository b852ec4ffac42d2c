// Command containerd-stargz-grpc is a minimal stargz snapshotter daemon for
// the startup benchmark: Debian ships only ctr-remote, and upstream's cmd
// module is not on the Go module proxy, so this builds the daemon from the
// root module github.com/containerd/stargz-snapshotter, as a containerd
// proxy snapshotter on a unix socket.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/log"
	"github.com/containerd/stargz-snapshotter/service"
	"github.com/pelletier/go-toml/v2"
	"google.golang.org/grpc"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "containerd-stargz-grpc: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	address := flag.String("address", "/run/containerd-stargz-grpc/containerd-stargz-grpc.sock", "unix socket to serve the snapshotter on")
	root := flag.String("root", "/var/lib/containerd-stargz-grpc", "state directory")
	config := flag.String("config", "", "TOML configuration (upstream's config.toml schema)")
	level := flag.String("log-level", "info", "log level")
	flag.Parse()
	if err := log.SetLevel(*level); err != nil {
		return err
	}
	var cfg service.Config
	if *config != "" {
		b, err := os.ReadFile(*config)
		if err != nil {
			return err
		}
		if err := toml.Unmarshal(b, &cfg); err != nil {
			return fmt.Errorf("%s: %w", *config, err)
		}
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	sn, err := service.NewStargzSnapshotterService(ctx, *root, &cfg)
	if err != nil {
		return err
	}
	defer sn.Close()
	srv := grpc.NewServer()
	snapshotsapi.RegisterSnapshotsServer(srv, snapshotservice.FromSnapshotter(sn))
	if err := os.MkdirAll(filepath.Dir(*address), 0o700); err != nil {
		return err
	}
	os.Remove(*address)
	ln, err := net.Listen("unix", *address)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		srv.Stop()
		return nil
	case err := <-errc:
		return err
	}
}
