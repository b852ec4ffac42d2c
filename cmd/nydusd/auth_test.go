package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nydus-go/nydus/internal/roottest"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/daemon/api"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

// TestRegistryAuthRenewal: nydusd mounted with stale credentials against
// an htpasswd-protected docker-registry fails reads with EIO; after
// nydus-snapshotter's PUT /api/v1/config {"registry_auth"} the same mount
// reads correctly, and the password never appears in the log.
func TestRegistryAuthRenewal(t *testing.T) {
	roottest.RequireFUSE(t)
	r := registrytest.Start(t, registrytest.Options{Htpasswd: map[string]string{"alice": "s3cret-pw"}})
	data := treetest.Random(5, 300000)
	var blob bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(treetest.Tar([]treetest.File{treetest.Reg("app/data", 0o644, data)})), &blob, builder.Options{Whiteout: builder.WhiteoutNone})
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := name.NewRepository(r.Host+"/private", name.Insecure)
	if err := remote.WriteLayer(repo, static.NewLayer(blob.Bytes(), types.MediaType("application/vnd.oci.image.layer.nydus.blob.v1")),
		remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret-pw"})); err != nil {
		t.Fatal(err)
	}
	boot := filepath.Join(t.TempDir(), "image.boot")
	os.WriteFile(boot, res.Bootstrap, 0o644)
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	cfg := fmt.Sprintf(`{"device":{"backend":{"type":"registry","config":{"host":%q,"repo":"private","scheme":"http","auth":%q,"timeout":5,"retry_limit":1}},"cache":{"type":"blobcache","config":{"work_dir":%q}}},"digest_validate":false,"fs_prefetch":{"enable":false}}`,
		r.Host, b64("alice:expired-pw"), t.TempDir())
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	d := start(t, "--bootstrap", boot, "--config", cfgPath)
	p := filepath.Join(d.mnt, "app/data")
	if _, err := os.ReadFile(p); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read with stale credentials: %v, want EIO", err)
	}
	ctx := t.Context()
	var se *api.StatusError
	if err := d.client.SetRegistryAuth(ctx, "/", "%%%"); !errors.As(err, &se) || se.StatusCode != 400 || !strings.Contains(se.Message, "registry_auth") {
		t.Fatalf("invalid registry_auth: %v", err)
	}
	if err := d.client.SetRegistryAuth(ctx, "/", ""); !errors.As(err, &se) || se.StatusCode != 400 || !strings.Contains(se.Message, "registry_auth is empty") {
		t.Fatalf("empty registry_auth: %v", err)
	}
	if err := d.client.SetRegistryAuth(ctx, "/nope", b64("alice:s3cret-pw")); !errors.As(err, &se) || se.StatusCode != 404 {
		t.Fatalf("unknown id: %v", err)
	}
	if err := d.client.SetRegistryAuth(ctx, "/", b64("alice:s3cret-pw")); err != nil {
		t.Fatalf("renew: %v", err)
	}
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after renewal: %v", err)
	}
	if l := d.log.String(); strings.Contains(l, "s3cret-pw") || strings.Contains(l, "expired-pw") || strings.Contains(l, b64("alice:s3cret-pw")) || strings.Contains(l, b64("alice:expired-pw")) {
		t.Fatalf("credentials in the log:\n%s", d.log)
	}
}
