// Command nydusd mounts Nydus images through FUSE and fetches their data
// lazily, verifying every chunk. Its command line, configuration and API
// follow upstream nydusd, so nydus-snapshotter can drive it unchanged.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/nydus-go/nydus/internal/cliutil"
	"github.com/nydus-go/nydus/internal/version"
	"github.com/nydus-go/nydus/pkg/daemon"
	"github.com/nydus-go/nydus/pkg/daemon/api"
	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/nydus-go/nydus/pkg/fusefs"
)

type flags struct {
	mountpoint, apisock, config, bootstrap, id, supervisor string
	logLevel, logFile, failover, prefetchFiles, localfsDir string
	backendSource, eventSink, cacheMax                     string
	metaCache, hotCache                                    string
	logRotation, threads                                   int
	upgrade, showVersion, passthrough, digestValidate      bool
	dependencies, siblings                                 bool
}

func main() {
	// A daemon runs per image or per node for a long time: trade a little
	// GC CPU for a smaller footprint unless the user chose (GOGC).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(50)
	}
	f := &flags{}
	root := &cobra.Command{
		Use:   "nydusd [fuse] --mountpoint DIR --apisock SOCK [--config FILE] [--bootstrap FILE]",
		Short: "Mount Nydus images lazily through FUSE",
		Long: `nydusd mounts Nydus (RAFS v6) images through FUSE. File data is fetched
on first read from the backend (a registry or local files), verified
against its digest and cached.

With --bootstrap it serves one image at --mountpoint (dedicated mode).
Without it, it serves an empty directory and images are added below it
through the API: POST /api/v1/mount?mountpoint=/NAME (shared mode).`,
		SilenceUsage:       true,
		SilenceErrors:      true,
		Args:               cobra.ArbitraryArgs,
		FParseErrWhitelist: cobra.FParseErrWhitelist{UnknownFlags: true},
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.showVersion {
				fmt.Print(version.String("nydusd"))
				return nil
			}
			if len(args) > 0 && args[0] != "fuse" {
				return fmt.Errorf("unsupported mode %q (only fuse is supported)", args[0])
			}
			return run(cmd, f)
		},
	}
	fl := root.Flags()
	fl.StringVarP(&f.mountpoint, "mountpoint", "M", "", "FUSE mountpoint")
	fl.StringVarP(&f.apisock, "apisock", "A", "", "unix socket of the HTTP API (mode 0600)")
	fl.StringVarP(&f.config, "config", "C", "", "nydusd configuration (v1 JSON)")
	fl.StringVarP(&f.bootstrap, "bootstrap", "B", "", "RAFS bootstrap of the image to mount (dedicated mode)")
	fl.StringVar(&f.id, "id", "", "daemon id (with --supervisor)")
	fl.StringVar(&f.supervisor, "supervisor", "", "failover supervisor socket (with --id)")
	fl.StringVarP(&f.logLevel, "log-level", "l", "info", "log level: trace, debug, info, warn, error")
	fl.StringVarP(&f.logFile, "log-file", "L", "", "log file (default stderr)")
	fl.IntVar(&f.logRotation, "log-rotation-size", 0, "log rotation size in MiB (accepted; logs are appended)")
	fl.IntVar(&f.threads, "thread-num", 4, "FUSE worker threads (alias of --fuse-threads)")
	fl.IntVar(&f.threads, "fuse-threads", 4, "FUSE worker threads")
	fl.StringVar(&f.failover, "failover-policy", "resend", "failover policy: none, resend, flush")
	fl.BoolVar(&f.upgrade, "upgrade", false, "wait in INIT for a hot upgrade or failover: PUT /api/v1/daemon/fuse/takeover then /start resume the mount from the supervisor")
	fl.StringVar(&f.prefetchFiles, "prefetch-files", "", "file of paths to prefetch (with --bootstrap)")
	fl.StringVarP(&f.localfsDir, "localfs-dir", "D", "", "serve blobs from this directory (localfs backend)")
	fl.StringVar(&f.backendSource, "backend-source", "", "accepted for nydus-snapshotter compatibility; ignored")
	fl.BoolVar(&f.passthrough, "passthrough", true, "serve fully cached files through FUSE passthrough (keeps whole-file copies in the cache work_dir)")
	fl.StringVar(&f.eventSink, "event-sink", os.Getenv("NYDUSD_EVENT_SINK"), "deliver the event log (mounts, verification failures, backend errors) to this http(s):// or unix:///path URL: one CloudEvent per POST, in order, retried until accepted (env NYDUSD_EVENT_SINK)")
	fl.StringVar(&f.cacheMax, "cache-max-size", os.Getenv("NYDUSD_CACHE_MAX_SIZE"), "cap each cache work_dir, e.g. 10GiB; unused blobs are evicted LRU (env NYDUSD_CACHE_MAX_SIZE)")
	fl.StringVar(&f.metaCache, "meta-cache-size", envOr("NYDUSD_META_CACHE_SIZE", "32MiB"), "memory for image metadata, shared by every image: verified bootstrap blocks and decoded inodes (half each); the rest is read from the bootstrap files again when needed (env NYDUSD_META_CACHE_SIZE)")
	fl.StringVar(&f.hotCache, "hot-cache-size", envOr("NYDUSD_HOT_CACHE_SIZE", "16MiB"), "memory for the file data verified last, shared by every image, so a chunk the kernel reads in pieces is read and verified once (env NYDUSD_HOT_CACHE_SIZE)")
	fl.BoolVar(&f.digestValidate, "digest-validate", envBool("NYDUSD_DIGEST_VALIDATE"), "re-verify cached chunks on every read, overriding the config's digest_validate (env NYDUSD_DIGEST_VALIDATE)")
	fl.BoolVar(&f.dependencies, "dependency-prefetch", envBoolOr("NYDUSD_DEPENDENCY_PREFETCH", true), "when a program, a compiled Python module or a C header is opened, fetch what it needs (interpreter, libraries, the rest of the program, imported modules, included headers) all at once, and at mount the shell and the user databases (env NYDUSD_DEPENDENCY_PREFETCH=0 turns it off)")
	fl.BoolVar(&f.siblings, "sibling-prefetch", envBoolOr("NYDUSD_SIBLING_PREFETCH", true), "when a small file that is not cached is read, fetch the other small files of its directory (at most 512 KiB), once per directory (env NYDUSD_SIBLING_PREFETCH=0 turns it off)")
	fl.BoolVarP(&f.showVersion, "version", "V", false, "print the version")
	if code := cliutil.Report(os.Stderr, "nydusd", root.Execute()); code != 0 {
		os.Exit(code)
	}
}

func logger(f *flags) (*slog.Logger, func(), error) {
	if _, err := cliutil.ParseLogLevel(f.logLevel); err != nil {
		return nil, nil, err
	}
	var w io.Writer = os.Stderr
	closer := func() {}
	if f.logFile != "" {
		lf, err := os.OpenFile(f.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf("--log-file: %w", err)
		}
		w, closer = lf, func() { lf.Close() }
	}
	log, err := cliutil.NewLogger(f.logLevel, w)
	return log, closer, err
}

func run(cmd *cobra.Command, f *flags) error {
	log, closeLog, err := logger(f)
	if err != nil {
		return err
	}
	defer closeLog()
	warnUnknownFlags(cmd.Flags(), log)
	if f.mountpoint == "" {
		return fmt.Errorf("--mountpoint is required")
	}
	if (f.id == "") != (f.supervisor == "") {
		return fmt.Errorf("--id and --supervisor go together")
	}
	switch f.failover {
	case "none", "resend", "flush":
	default:
		return fmt.Errorf("invalid --failover-policy %q (want none, resend or flush)", f.failover)
	}
	takeover, err := shouldTakeOver(f, log)
	if err != nil {
		return err
	}
	// A mountpoint whose daemon died hangs on stat: only check it when
	// mounting anew.
	if !takeover {
		if _, busy, _ := fusefs.Mounted(f.mountpoint); busy {
			return fmt.Errorf("mountpoint %s is busy: something is already mounted there", f.mountpoint)
		}
		if st, err := os.Stat(f.mountpoint); err != nil || !st.IsDir() {
			return fmt.Errorf("mountpoint %s is not a directory", f.mountpoint)
		}
	}
	cacheMax, err := cliutil.ParseByteSize(f.cacheMax)
	if err != nil {
		return fmt.Errorf("--cache-max-size: %w", err)
	}
	metaCache, err := cliutil.ParseByteSize(f.metaCache)
	if err != nil {
		return fmt.Errorf("--meta-cache-size: %w", err)
	}
	hotCache, err := cliutil.ParseByteSize(f.hotCache)
	if err != nil {
		return fmt.Errorf("--hot-cache-size: %w", err)
	}
	// Every event goes to the event log first (beside the API socket, so
	// a successor carries it on), then to subscribers: the API and the
	// --event-sink.
	logPath := f.apisock + ".events"
	if f.apisock == "" {
		tmp, err := os.CreateTemp("", "nydusd-*.events")
		if err != nil {
			return fmt.Errorf("event log: %w", err)
		}
		tmp.Close()
		logPath = tmp.Name()
		defer os.Remove(logPath)
		defer os.Remove(logPath + ".1")
		defer os.Remove(logPath + ".cursor")
	}
	elog, err := daemon.OpenEventLog(logPath, f.id, 0)
	if err != nil {
		return err
	}
	defer elog.Close()
	events := func(e fetch.Event) {
		if _, err := elog.Append(e); err != nil {
			log.Error("recording an event", "kind", e.Kind, "err", err)
		}
	}
	if f.eventSink != "" {
		sink, err := daemon.NewEventSink(f.eventSink, elog, logPath+".cursor", log)
		if err != nil {
			return fmt.Errorf("--event-sink: %w", err)
		}
		defer sink.Close(2 * time.Second)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Beside the API socket: a successor (failover, hot upgrade) is
	// started with the same one.
	journal, record := "", ""
	if f.apisock != "" {
		journal, record = f.apisock+".opens", f.apisock+".mounts"
	}
	d := daemon.New(daemon.Options{ID: f.id, Supervisor: f.supervisor, Mountpoint: f.mountpoint, OpenJournal: journal, MountRecord: record, EventLog: elog, Log: log, Passthrough: f.passthrough, Dependencies: f.dependencies, Siblings: f.siblings,
		Events: events, CacheMaxBytes: cacheMax, MetaCacheBytes: metaCache, HotCacheBytes: hotCache, DigestValidate: f.digestValidate, FailoverPolicy: f.failover,
		Version: api.Version{PackageVer: version.Version, GitCommit: version.Commit(), BuildTime: version.BuildTime, Profile: "release", Rustc: "go"}})
	var cfg *api.ConfigV1
	switch {
	case f.config != "":
		b, err := os.ReadFile(f.config)
		if err != nil {
			return fmt.Errorf("--config: %w", err)
		}
		var unknown []string
		if cfg, unknown, err = api.ParseConfig(b); err != nil {
			return fmt.Errorf("%s: %w", f.config, err)
		}
		for _, u := range unknown {
			log.Warn("ignoring unknown config field", "field", u)
		}
		for _, u := range cfg.Unimplemented() {
			log.Warn("config field ignored", "field", u)
		}
	case f.localfsDir != "":
		cfg = &api.ConfigV1{Device: api.DeviceV1{Backend: api.BackendV1{Type: "localfs", Config: api.BackendConfig{Dir: f.localfsDir}}}}
	}
	switch {
	case takeover:
		if f.apisock == "" {
			return fmt.Errorf("--upgrade needs --apisock: the takeover is driven through the API")
		}
		log.Info("waiting in INIT for PUT /api/v1/daemon/fuse/takeover", "supervisor", f.supervisor, "mountpoint", f.mountpoint)
	case f.bootstrap != "":
		if cfg == nil {
			return fmt.Errorf("--bootstrap needs --config or --localfs-dir")
		}
		var pf []string
		if f.prefetchFiles != "" {
			b, err := os.ReadFile(f.prefetchFiles)
			if err != nil {
				return fmt.Errorf("--prefetch-files: %w", err)
			}
			for _, l := range strings.Split(string(b), "\n") {
				if l = strings.TrimSpace(l); strings.HasPrefix(l, "/") {
					pf = append(pf, l)
				}
			}
		}
		if err := d.MountDedicated(ctx, f.bootstrap, cfg, pf); err != nil {
			return err
		}
	default:
		if err := d.StartShared(ctx); err != nil {
			return err
		}
	}
	defer d.Close()
	if f.apisock != "" {
		closeAPI, err := d.ServeAPI(ctx, f.apisock)
		if err != nil {
			return err
		}
		defer closeAPI()
	}
	log.Info("nydusd running", "mountpoint", f.mountpoint, "apisock", f.apisock, "bootstrap", f.bootstrap)
	select {
	case <-ctx.Done():
		log.Info("signal received; unmounting", "mountpoint", f.mountpoint)
	case <-d.Ended():
		log.Info("FUSE session ended")
	case <-d.Exited():
		log.Info("exit requested; leaving the mount to the successor", "mountpoint", f.mountpoint)
	}
	return nil
}

// shouldTakeOver tells whether this nydusd must wait for a takeover
// instead of mounting: with --upgrade, or, like upstream, when a
// supervisor is set and a predecessor crashed (the mountpoint is still
// mounted and its API socket is left behind but refuses connections).
func shouldTakeOver(f *flags, log *slog.Logger) (bool, error) {
	if f.upgrade {
		if f.supervisor == "" {
			return false, fmt.Errorf("--upgrade needs --id and --supervisor: the FUSE connection comes from the supervisor")
		}
		return true, nil
	}
	if f.supervisor == "" || f.apisock == "" {
		return false, nil
	}
	_, mounted, err := fusefs.Mounted(f.mountpoint)
	if err != nil || !mounted {
		return false, nil
	}
	if st, err := os.Lstat(f.apisock); err != nil || st.Mode()&os.ModeSocket == 0 {
		return false, nil
	}
	c, err := net.DialTimeout("unix", f.apisock, time.Second)
	if err == nil {
		c.Close()
		return false, fmt.Errorf("another nydusd is serving %s (its API socket %s answers)", f.mountpoint, f.apisock)
	}
	log.Warn("a previous nydusd crashed: its mount and API socket are left; waiting for failover", "mountpoint", f.mountpoint, "apisock", f.apisock)
	return true, nil
}

// warnUnknownFlags logs flags the snapshotter may pass that we ignore.
func warnUnknownFlags(fs *pflag.FlagSet, log *slog.Logger) {
	for _, a := range os.Args[1:] {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name := strings.TrimPrefix(a, "--")
		if i := strings.IndexByte(name, '='); i >= 0 {
			name = name[:i]
		}
		if fs.Lookup(name) == nil {
			log.Warn("ignoring unknown flag", "flag", "--"+name)
		}
	}
}

// envBool reads a boolean environment variable (1, true, yes).
// envBoolOr is envBool with a default for an unset or empty variable.
func envBoolOr(name string, def bool) bool {
	switch strings.ToLower(os.Getenv(name)) {
	case "":
		return def
	case "0", "false", "no", "off":
		return false
	}
	return true
}

func envBool(name string) bool {
	switch strings.ToLower(os.Getenv(name)) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

// envOr returns the environment variable name, or def when it is unset
// or empty.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// parseSize parses a byte size flag (cliutil.ParseByteSize).
func parseSize(s string) (int64, error) { return cliutil.ParseByteSize(s) }
