package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nydus-go/nydus/internal/roottest"
	"github.com/nydus-go/nydus/internal/treetest"
)

// TestV2TOMLConfig mounts an image with upstream's v2 TOML configuration.
func TestV2TOMLConfig(t *testing.T) {
	roottest.RequireFUSE(t)
	data := treetest.Random(5, 200000)
	boot, blobs := image(t, treetest.Tar([]treetest.File{treetest.Reg("usr/lib/x.so", 0o644, data)}))
	cfg := fmt.Sprintf("version = 2\n[backend]\ntype = \"localfs\"\n[backend.localfs]\ndir = %q\n[cache]\ntype = \"blobcache\"\n[cache.filecache]\nwork_dir = %q\n[rafs]\nmode = \"direct\"\nenable_xattr = true\n[rafs.prefetch]\nenable = false\n", blobs, t.TempDir())
	p := filepath.Join(t.TempDir(), "config.toml")
	os.WriteFile(p, []byte(cfg), 0o600)
	d := start(t, "--bootstrap", boot, "--config", p)
	if got, err := os.ReadFile(filepath.Join(d.mnt, "usr/lib/x.so")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read through a v2 TOML config: %v", err)
	}
}
