package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/roottest"

	"github.com/nydus-go/nydus/internal/treetest"
)

// TestCrashDuringLazyReads kills nydusd with SIGKILL while many readers
// are fetching chunks into the cache, restarts it on the same cache, and
// checks that every file reads back exactly (cached chunks re-verified
// with digest_validate), three times over with different kill points.
func TestCrashDuringLazyReads(t *testing.T) {
	roottest.RequireFUSE(t)
	var files []treetest.File
	want := map[string][]byte{}
	for i := 0; i < 48; i++ {
		name := fmt.Sprintf("d%d/f%02d.bin", i%4, i)
		data := treetest.Random(int64(100+i), 512<<10+i*4099)
		files = append(files, treetest.Reg(name, 0o644, data))
		want[name] = data
	}
	boot, blobs := image(t, treetest.Tar(files))
	cfg := localfsConfig(t, blobs)
	cfg = strings.Replace(cfg, `"enable":true,"prefetch_all":true`, `"enable":false,"prefetch_all":false`, 1)
	cfg = strings.Replace(cfg, `"digest_validate":false`, `"digest_validate":true`, 1)
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)

	for round, delay := range []time.Duration{30 * time.Millisecond, 120 * time.Millisecond, 300 * time.Millisecond} {
		d := start(t, "--bootstrap", boot, "--config", cfgPath)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for r := 0; r < 6; r++ {
			wg.Add(1)
			go func(r int) {
				defer wg.Done()
				for k := r; ; k++ {
					select {
					case <-stop:
						return
					default:
					}
					name := files[k%len(files)].Header.Name
					got, err := os.ReadFile(filepath.Join(d.mnt, name))
					if err == nil && !bytes.Equal(got, want[name]) {
						t.Errorf("round %d: %s read wrong bytes before the kill", round, name)
					}
					if err != nil {
						return // the daemon is gone
					}
				}
			}(r)
		}
		time.Sleep(delay)
		d.cmd.Process.Kill()
		d.cmd.Wait()
		close(stop)
		unixUnmount(d.mnt) // readers blocked on the dead mount return ENOTCONN
		wg.Wait()

		d2 := start(t, "--bootstrap", boot, "--config", cfgPath)
		for name, data := range want {
			got, err := os.ReadFile(filepath.Join(d2.mnt, name))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("round %d, after kill -9 at %v and restart: %s: %v\n%s", round, delay, name, err, d2.log)
			}
		}
		d2.cmd.Process.Kill()
		d2.cmd.Wait()
		unixUnmount(d2.mnt)
	}
}
