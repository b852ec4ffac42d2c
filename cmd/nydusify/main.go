// Command nydusify converts OCI and Docker images into Nydus images,
// checks converted images against their source, and copies Nydus images
// between registries. Its flags follow upstream nydusify.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newRootCmd().ExecuteContext(ctx)
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "nydusify: %s\n", strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; "))
	if ee, ok := err.(*exitError); ok {
		os.Exit(ee.code)
	}
	os.Exit(1)
}
