package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/roottest"
	"github.com/nydus-go/nydus/internal/treetest"
)

// TestCacheCapCountsWholeFileCopies: with --cache-max-size, passthrough's
// whole-file copies stay within half the cap; without it every fully read
// file gets one.
func TestCacheCapCountsWholeFileCopies(t *testing.T) {
	roottest.RequireFUSE(t)
	var files []treetest.File
	want := map[string][]byte{}
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("f%d", i)
		want[name] = treetest.Random(int64(60+i), 600<<10)
		files = append(files, treetest.Reg(name, 0o644, want[name]))
	}
	boot, blobs := image(t, treetest.Tar(files))
	for _, c := range []struct {
		cap      string
		maxBytes int64
		copies   int
	}{{"", 0, 3}, {"3MiB", 3 << 20, 2}} {
		cfg := strings.Replace(localfsConfig(t, blobs), `"enable":true,"prefetch_all":true`, `"enable":false,"prefetch_all":false`, 1)
		var wd struct {
			Device struct {
				Cache struct {
					Config struct {
						WorkDir string `json:"work_dir"`
					} `json:"config"`
				} `json:"cache"`
			} `json:"device"`
		}
		json.Unmarshal([]byte(cfg), &wd)
		p := filepath.Join(t.TempDir(), "config.json")
		os.WriteFile(p, []byte(cfg), 0o600)
		args := []string{"--bootstrap", boot, "--config", p}
		if c.cap != "" {
			args = append(args, "--cache-max-size", c.cap)
		}
		d := start(t, args...)
		for name, data := range want {
			if got, err := os.ReadFile(filepath.Join(d.mnt, name)); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("cap %q: %s: %v", c.cap, name, err)
			}
		}
		dir := filepath.Join(wd.Device.Cache.Config.WorkDir, "nydus-go-files")
		var n int
		var total int64
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			n, total = 0, 0
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if info, err := e.Info(); err == nil && info.Mode().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
					n++
					total += info.Size()
				}
			}
			if n >= c.copies || time.Now().After(deadline) {
				break
			}
		}
		time.Sleep(200 * time.Millisecond) // no more copies may appear
		ents, _ := os.ReadDir(dir)
		if n != c.copies || len(ents) != c.copies {
			t.Fatalf("cap %q: %d whole-file copies (%d entries), want %d", c.cap, n, len(ents), c.copies)
		}
		if c.maxBytes > 0 && total > c.maxBytes/2 {
			t.Fatalf("cap %q: whole-file copies use %d bytes, over half the cap", c.cap, total)
		}
	}
}
