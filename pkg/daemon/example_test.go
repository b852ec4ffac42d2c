package daemon_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/nydus-go/nydus/pkg/daemon"
	"github.com/nydus-go/nydus/pkg/imageref"
)

// Mount a Nydus image straight from its registry reference: files are
// fetched when first read and verified against their digests. (Needs
// root or FUSE rights, and a registry: not run by go test.)
func ExampleMountImage() {
	ctx := context.Background()
	m, err := daemon.MountImage(ctx, "127.0.0.1:5000/app:nydus", "/mnt/app",
		daemon.MountImageOptions{Registry: imageref.RegistryOptions{PlainHTTP: true}})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	motd, err := os.ReadFile("/mnt/app/etc/motd")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(motd))
}
