package main

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/nydus-go/nydus/internal/cliutil"
	"github.com/nydus-go/nydus/internal/version"
)

// logOptions configure logging for every command.
type logOptions struct {
	level string
}

// logger returns the logger --log-level asks for; an invalid level
// fails the command before it runs (root's PersistentPreRunE).
func (l *logOptions) logger() *slog.Logger {
	log, err := cliutil.NewLogger(l.level, os.Stderr)
	if err != nil {
		log, _ = cliutil.NewLogger("info", os.Stderr)
	}
	return log
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
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		_, err := cliutil.ParseLogLevel(lo.level)
		return err
	}
	root.PersistentFlags().StringVar(&lo.level, "log-level", "info", "log level: trace, debug, info, warn, error")
	root.CompletionOptions.DisableDefaultCmd = true
	root.AddCommand(newConvertCmd(lo), newCheckCmd(lo), newCopyCmd(lo), newTraceCmd(lo))
	return root
}
