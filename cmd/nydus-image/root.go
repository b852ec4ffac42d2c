package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/nydus-go/nydus/internal/cliutil"
	"github.com/nydus-go/nydus/internal/version"
)

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
	if _, err := cliutil.ParseLogLevel(l.level); err != nil {
		return nil, err
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
	log, err := cliutil.NewLogger(l.level, w)
	if err != nil {
		closer()
		return nil, err
	}
	logger = log
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
