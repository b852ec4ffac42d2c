// Command nydusify converts OCI and Docker images into Nydus images,
// checks converted images against their source, and copies Nydus images
// between registries. Its flags follow upstream nydusify.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/nydus-go/nydus/internal/cliutil"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if code := cliutil.Report(os.Stderr, "nydusify", newRootCmd().ExecuteContext(ctx)); code != 0 {
		stop()
		os.Exit(code)
	}
}
