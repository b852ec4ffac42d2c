package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/nydus-go/nydus/internal/version"
	"github.com/spf13/cobra"
)

// exitError carries a specific exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// oneLine folds an error message onto one line.
func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}

var logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

// logFlags are accepted by every subcommand, as upstream.
type logFlags struct {
	level string
	file  string
}

func (l *logFlags) register(c *cobra.Command) {
	c.Flags().StringVarP(&l.level, "log-level", "l", "info", "log level: trace, debug, info, warn, error")
	c.Flags().StringVarP(&l.file, "log-file", "L", "", "write logs to this file instead of stderr")
}

func (l *logFlags) setup() (func(), error) {
	var lvl slog.Level
	switch strings.ToLower(l.level) {
	case "trace", "debug":
		lvl = slog.LevelDebug
	case "info", "":
		lvl = slog.LevelInfo
	case "warn", "warning":
		lvl = slog.LevelWarn
	case "error":
		lvl = slog.LevelError
	default:
		return nil, fmt.Errorf("invalid --log-level %q (want trace, debug, info, warn or error)", l.level)
	}
	var w io.Writer = os.Stderr
	closer := func() {}
	if l.file != "" {
		f, err := os.OpenFile(l.file, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open log file: %w", err)
		}
		w = f
		closer = func() { f.Close() }
	}
	logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl}))
	return closer, nil
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "nydus-image",
		Short: "Build, merge, check, inspect and unpack Nydus (RAFS v6) images",
		Long: `nydus-image builds Nydus images: a RAFS v6 bootstrap (an EROFS-compatible
metadata image) plus data blobs of compressed, content-addressed chunks.

Chunks are deduplicated by default and every chunk carries a digest that
readers verify. Output is reproducible: the same input gives identical bytes.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Version,
	}
	root.SetVersionTemplate(version.String("nydus-image"))
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(newCreateCmd(), newMergeCmd(), newCheckCmd(), newInspectCmd(), newStatCmd(), newUnpackCmd())
	return root
}
