package daemon

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nydus-go/nydus/internal/roottest"
	"github.com/nydus-go/nydus/internal/sysproc"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/converter"
	"github.com/nydus-go/nydus/pkg/errdefs"
	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

// TestMountImage: an image converted into a registry mounts from its
// reference in one call; its files read back (fetched from the registry
// and verified), Close unmounts it and removes the temporary work
// directory; an OCI (non-Nydus) image is refused by name.
func TestMountImage(t *testing.T) {
	roottest.RequireFUSE(t)
	r := registrytest.Start(t, registrytest.Options{})
	data := treetest.Random(71, 3<<20+17)
	layer := treetest.Tar([]treetest.File{treetest.Dir("etc", 0o755), treetest.Reg("etc/motd", 0o644, []byte("hello\n")), treetest.Reg("big.bin", 0o644, data)})
	registrytest.PushImage(t, r.Host+"/app:oci", [][]byte{layer})
	ro := imageref.RegistryOptions{PlainHTTP: true}
	src, _ := imageref.Parse(r.Host+"/app:oci", false, ro)
	dst, _ := imageref.Parse(r.Host+"/app:nydus", false, ro)
	ctx := context.Background()
	if _, err := converter.Convert(ctx, src, dst, converter.Options{Source: ro, Target: ro, WorkDir: t.TempDir(), NoDedupScope: true,
		Platforms: []v1.Platform{{OS: "linux", Architecture: "amd64"}}}); err != nil {
		t.Fatal(err)
	}
	before := r.Stats()

	mnt := t.TempDir()
	m, err := MountImage(ctx, r.Host+"/app:nydus", mnt, MountImageOptions{Registry: ro,
		Platform: v1.Platform{OS: "linux", Architecture: "amd64"}, Daemon: Options{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			m.Close()
		}
	}()
	if b, err := os.ReadFile(filepath.Join(mnt, "etc/motd")); err != nil || string(b) != "hello\n" {
		t.Fatalf("etc/motd: %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "big.bin")); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("big.bin: %d bytes, %v", len(b), err)
	}
	if got := r.Stats().BlobBytesServed - before.BlobBytesServed; got == 0 {
		t.Fatal("no blob bytes were read from the registry")
	}
	work := filepath.Dir(m.Bootstrap)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	closed = true
	if mounts := sysproc.MountsUnder(mnt); len(mounts) != 0 {
		t.Fatalf("still mounted after Close: %v", mounts)
	}
	if _, err := os.Stat(work); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the temporary work directory is left: %v", err)
	}

	if _, err := MountImage(ctx, r.Host+"/app:oci", t.TempDir(), MountImageOptions{Registry: ro,
		Platform: v1.Platform{OS: "linux", Architecture: "amd64"}}); !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("mounting an OCI image: %v, want it refused as not a Nydus image", err)
	}
}
