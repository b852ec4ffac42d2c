// Command soci-snapshotter-grpc is a minimal SOCI snapshotter daemon for the
// startup benchmark: upstream's cmd module is not on the Go module proxy, so
// this builds the daemon from the root module github.com/awslabs/soci-snapshotter
// (its service package), as a containerd proxy snapshotter on a unix socket.
// It reads upstream's config.toml schema; the content store, metadata
// database and snapshots all live under -root, so removing it makes the
// next start cold.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	golog "log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/awslabs/soci-snapshotter/config"
	socifs "github.com/awslabs/soci-snapshotter/fs"
	"github.com/awslabs/soci-snapshotter/metadata"
	"github.com/awslabs/soci-snapshotter/service"
	"github.com/awslabs/soci-snapshotter/service/keychain/dockerconfig"
	"github.com/awslabs/soci-snapshotter/ztoc"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "soci-snapshotter-grpc: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	address := flag.String("address", "/run/soci-snapshotter-grpc/soci-snapshotter-grpc.sock", "unix socket to serve the snapshotter on")
	root := flag.String("root", config.DefaultSociSnapshotterRootPath, "state directory (snapshots, content store, metadata database)")
	cfgPath := flag.String("config", "", "TOML configuration (upstream's config.toml schema); defaults without")
	level := flag.String("log-level", "info", "log level")
	ns := flag.String("namespace", "default", "containerd namespace of requests that carry none and name no snapshot")
	flag.Parse()
	if err := log.SetLevel(*level); err != nil {
		return err
	}
	logrus.SetFormatter(&logrus.JSONFormatter{TimestampFormat: log.RFC3339NanoFixed})
	// go-fuse logs through the standard library's logger: debug level only.
	golog.SetOutput(log.L.WriterLevel(logrus.DebugLevel))

	cfg := config.NewConfig()
	if *cfgPath != "" {
		var err error
		if cfg, err = config.NewConfigFromToml(*cfgPath); err != nil {
			return err
		}
	}
	if cfg == nil {
		return fmt.Errorf("default configuration does not parse")
	}
	if err := os.MkdirAll(*root, 0o700); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(log.WithLogger(context.Background(), log.L), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	if !cfg.SkipCheckSnapshotterSupported {
		if err := service.Supported(*root); err != nil {
			return fmt.Errorf("overlayfs not supported under %s: %w", *root, err)
		}
	}
	mt, db, err := metadataStore(*root, cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	sn, err := service.NewSociSnapshotterService(ctx, *root, &cfg.ServiceConfig,
		service.WithCredsFuncs(dockerconfig.NewDockerConfigKeychain(ctx)),
		service.WithFilesystemOptions(socifs.WithMetadataStore(mt)))
	if err != nil {
		return err
	}
	defer sn.Close()

	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(unaryNamespace(*ns)), grpc.ChainStreamInterceptor(streamNamespace(*ns)))
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
	log.G(ctx).WithField("address", *address).Info("soci-snapshotter-grpc started")
	select {
	case <-ctx.Done():
		srv.Stop()
		return nil
	case err := <-errc:
		return err
	}
}

// metadataStore is upstream's default "db" metadata store: one bbolt
// database under root for every layer's TOC.
func metadataStore(root string, cfg *config.Config) (metadata.Store, *bolt.DB, error) {
	if cfg.MetadataStore != "" && cfg.MetadataStore != "db" {
		return nil, nil, fmt.Errorf("metadata_store %q: only \"db\" is built in", cfg.MetadataStore)
	}
	db, err := bolt.Open(filepath.Join(root, "metadata.db"), 0o600, &bolt.Options{
		NoFreelistSync:  true,
		InitialMmapSize: 64 << 20,
		FreelistType:    bolt.FreelistMapType,
		NoSync:          cfg.MetadataDBNoSync,
	})
	if err != nil {
		return nil, nil, err
	}
	return func(sr *io.SectionReader, toc ztoc.TOC, opts ...metadata.Option) (metadata.Reader, error) {
		if cfg.MetadataInsertionChunkSize > 0 {
			opts = append(opts, metadata.WithInsertionChunkSize(cfg.MetadataInsertionChunkSize))
		}
		return metadata.NewReader(db, sr, toc, opts...)
	}, db, nil
}

// withNamespace puts the request's containerd namespace in ctx, incoming
// and outgoing, as SOCI's filesystem wants it (upstream's daemon has the
// same interceptors). containerd 1.6, Debian's, sends proxy snapshotters no
// namespace header; its snapshot keys and names start with the namespace
// ("default/3/extract-…"), so that is read instead, and def is the last
// resort (List, which names no snapshot).
func withNamespace(ctx context.Context, req any, def string) context.Context {
	ns, ok := namespaces.Namespace(ctx)
	if !ok {
		ns = def
		var key string
		switch r := req.(type) {
		case interface{ GetKey() string }:
			key = r.GetKey()
		case interface{ GetName() string }:
			key = r.GetName()
		case *snapshotsapi.UpdateSnapshotRequest:
			key = r.GetInfo().GetName()
		}
		if i := strings.IndexByte(key, '/'); i > 0 {
			ns = key[:i]
		}
	}
	return namespaces.WithNamespace(ctx, ns)
}

func unaryNamespace(def string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		return handler(withNamespace(ctx, req, def), req)
	}
}

func streamNamespace(def string) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &nsStream{ServerStream: ss, ctx: withNamespace(ss.Context(), nil, def)})
	}
}

type nsStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *nsStream) Context() context.Context { return s.ctx }
