package main

import (
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/nydus-go/nydus/internal/version"
)

// exitError carries an exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// logOptions configure logging for every command.
type logOptions struct {
	level string
}

func (l *logOptions) logger() *slog.Logger {
	lvl := slog.LevelInfo
	switch strings.ToLower(l.level) {
	case "trace", "debug":
		lvl = slog.LevelDebug
	case "warn", "warning":
		lvl = slog.LevelWarn
	case "error":
		lvl = slog.LevelError
	}
	var w io.Writer = os.Stderr
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl}))
}

// isTerminal reports whether stderr is a terminal (progress bars) or not
// (plain log lines).
func isTerminal() bool { return term.IsTerminal(int(os.Stderr.Fd())) }

func newRootCmd() *cobra.Command {
	lo := &logOptions{}
	root := &cobra.Command{
		Use:   "nydusify",
		Short: "Convert, check and copy Nydus images",
		Long: `nydusify converts OCI and Docker images into Nydus images, in a registry,
an OCI layout directory (oci:DIR[:TAG]) or an OCI layout archive.

Every layer is packed against the chunks of the layers below it, so data an
image re-adds or leaves unchanged is stored once; --independent packs layers
separately, as upstream does.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Version,
	}
	root.SetVersionTemplate(version.String("nydusify"))
	root.PersistentFlags().StringVar(&lo.level, "log-level", "info", "log level: trace, debug, info, warn, error")
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(newConvertCmd(lo), newCheckCmd(lo), newCopyCmd(lo), newTraceCmd(lo))
	return root
}
