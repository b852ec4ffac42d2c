package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/nydus-go/nydus/internal/roottest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// TestSmallMetadataCache: a daemon whose metadata cache holds a small
// part of the image (64 KiB: about 150 of its 4,000 entries) serves the whole
// tree exactly as the source has it, through the kernel, however much it
// evicts and decodes again.
func TestSmallMetadataCache(t *testing.T) {
	roottest.RequireFUSE(t)
	files := treetest.Generate(5, 4000)
	layer := treetest.Tar(files)
	boot, blobs := image(t, layer)
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfgPath, []byte(localfsConfig(t, blobs)), 0o600)
	d := start(t, "--bootstrap", boot, "--config", cfgPath, "--meta-cache-size", "64KiB", "--hot-cache-size", "0")
	want, _ := treetest.FromTar(bytes.NewReader(layer), treetest.Options{})
	for i := 0; i < 2; i++ {
		// The second time, with the kernel's caches dropped, every
		// lookup reaches the daemon again.
		os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0o200)
		got, err := treetest.FromDir(d.mnt, treetest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if diff := treetest.Diff(want, got); diff != "" {
			t.Fatalf("walk %d: the mounted tree differs:\n%s", i, diff)
		}
	}
}

// TestBootstrapChangedAfterMount: nydusd reads a mounted bootstrap from
// its file, block by block, and checks each block against what it read
// at mount: a bootstrap overwritten afterwards (same size, other bytes)
// gives EIO, never the new metadata, with a bootstrap-changed event and
// nydusd_at_rest_failures_total.
func TestBootstrapChangedAfterMount(t *testing.T) {
	roottest.RequireFUSE(t)
	files := treetest.Generate(6, 3000)
	boot, blobs := image(t, treetest.Tar(files))
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfgPath, []byte(localfsConfig(t, blobs)), 0o600)
	// No metadata cache: every lookup reads the file.
	d := start(t, "--bootstrap", boot, "--config", cfgPath, "--meta-cache-size", "0")
	if _, err := os.ReadDir(filepath.Join(d.mnt, "app")); err != nil {
		t.Fatal(err)
	}
	// Every block after the superblock's is changed.
	b, _ := os.ReadFile(boot)
	for i := rafs.BlockSize; i < len(b); i++ {
		b[i] ^= 0xa5
	}
	f, err := os.OpenFile(boot, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(b[rafs.BlockSize:], rafs.BlockSize)
	f.Close()
	var sawEIO bool
	filepath.WalkDir(d.mnt, func(p string, e os.DirEntry, err error) error {
		if errors.Is(err, syscall.EIO) {
			sawEIO = true
			return filepath.SkipAll
		}
		return nil
	})
	if !sawEIO {
		t.Fatal("a walk of a mount whose bootstrap changed on disk got no EIO")
	}
	if ev, _ := os.ReadFile(d.sock + ".events"); !strings.Contains(string(ev), `"kind":"bootstrap-changed"`) {
		t.Errorf("no bootstrap-changed event:\n%s", ev)
	}
	if _, body := d.do("GET", "/metrics", nil); !strings.Contains(body, `nydusd_at_rest_failures_total{mountpoint="/"} 1`) {
		t.Errorf("nydusd_at_rest_failures_total is not 1:\n%s", body)
	}
}
