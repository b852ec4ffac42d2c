// Command nydus-image builds, merges, checks, inspects and unpacks RAFS v6
// (Nydus) images. Its command line follows upstream nydus-image so that
// nydus-snapshotter's converter and nydusify can drive it unchanged.
package main

import (
	"os"

	"github.com/nydus-go/nydus/internal/cliutil"
)

func main() {
	if code := cliutil.Report(os.Stderr, "nydus-image", newRootCmd().Execute()); code != 0 {
		os.Exit(code)
	}
}
