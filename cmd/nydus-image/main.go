// Command nydus-image builds, merges, checks, inspects and unpacks RAFS v6
// (Nydus) images. Its command line follows upstream nydus-image so that
// nydus-snapshotter's converter and nydusify can drive it unchanged.
package main

import (
	"errors"
	"fmt"
	"os"
)

func main() {
	err := newRootCmd().Execute()
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "nydus-image: %v\n", oneLine(err))
	var ee *exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	os.Exit(1)
}
