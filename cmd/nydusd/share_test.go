package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nydus-go/nydus/internal/roottest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/converter"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

// TestSharedChunksAcrossImages: two images converted on their own (no
// chunk dictionary: their blobs differ) that hold the same file, served
// by two daemons on one node's cache directory. Once the first has read
// the file, the second copies its chunks from the cache instead of
// fetching them, even after the first was killed with SIGKILL: the
// registry serves none of the file's bytes, and the bytes are right. An image hashed with sha256 instead of blake3 shares
// nothing and fetches the file; so does an image whose shared copies
// were changed on disk (they fail verification).
func TestSharedChunksAcrossImages(t *testing.T) {
	roottest.RequireFUSE(t)
	r := registrytest.Start(t, registrytest.Options{})
	common := treetest.Random(41, 4<<20)
	layer := func(other string) []byte {
		return treetest.Tar([]treetest.File{
			treetest.Reg("app/"+other, 0o644, []byte("only in "+other+"\n")),
			treetest.Reg("lib/common.bin", 0o644, common),
		})
	}
	bootA, imgA := convertImage(t, r, "sa", layer("a.txt"), converter.Options{})
	bootB, imgB := convertImage(t, r, "sb", layer("b.txt"), converter.Options{})
	bootC, _ := convertImage(t, r, "sc", layer("c.txt"), converter.Options{Digester: digester.Sha256})
	bootD, _ := convertImage(t, r, "sd", layer("d.txt"), converter.Options{})
	la, _ := imgA.Layers()
	lb, _ := imgB.Layers()
	if da, _ := la[0].Digest(); func() bool { db, _ := lb[0].Digest(); return da == db }() {
		t.Fatal("the two images share their blob: the test needs independent blobs")
	}
	work := t.TempDir() // the node's cache directory
	daemon := func(boot, repo string) *daemonProc {
		cfg := fmt.Sprintf(`{"device":{"backend":{"type":"registry","config":{"host":%q,"repo":%q,"scheme":"http"}},
			"cache":{"type":"blobcache","config":{"work_dir":%q}}},"mode":"direct","digest_validate":false,"fs_prefetch":{"enable":false}}`, r.Host, repo, work)
		p := filepath.Join(t.TempDir(), "config.json")
		os.WriteFile(p, []byte(cfg), 0o600)
		// No passthrough: whole-file copies, shared by content already,
		// would serve the second read without chunks.
		return start(t, "--bootstrap", boot, "--config", p, "--passthrough=false", "--dependency-prefetch=false", "--sibling-prefetch=false")
	}
	read := func(d *daemonProc) {
		t.Helper()
		f, err := os.Open(filepath.Join(d.mnt, "lib/common.bin"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		got, err := io.ReadAll(f)
		if err != nil || !bytes.Equal(got, common) {
			t.Fatalf("lib/common.bin: %v (%d bytes)", err, len(got))
		}
	}
	shared := func(d *daemonProc) int64 {
		_, body := d.do("GET", "/metrics", nil)
		m := regexp.MustCompile(`(?m)^nydusd_shared_bytes_total\{[^}]*\} (\S+)$`).FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("no nydusd_shared_bytes_total in /metrics:\n%s", body)
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return int64(v)
	}

	a := daemon(bootA, "sa")
	read(a)
	// The first daemon dies without a clean stop: the index is built
	// from what it left on disk.
	a.cmd.Process.Kill()
	a.cmd.Wait()
	b := daemon(bootB, "sb")
	r.ResetStats()
	read(b)
	if got := r.Stats().BlobBytesServed; got > 512<<10 {
		t.Fatalf("the second image fetched %d bytes for a 4 MiB file the node's cache holds", got)
	}
	if n := shared(b); n < int64(len(common)) {
		t.Fatalf("nydusd_shared_bytes_total %d, want at least %d", n, len(common))
	}

	// fetches reads the file through a new daemon and fails unless it
	// came from the registry, not from the cache.
	fetches := func(boot, repo, what string) {
		t.Helper()
		d := daemon(boot, repo)
		r.ResetStats()
		read(d)
		if got := r.Stats().BlobBytesServed; got < int64(len(common))/2 {
			t.Fatalf("%s fetched only %d bytes", what, got)
		}
		if n := shared(d); n != 0 {
			t.Fatalf("%s shared %d bytes", what, n)
		}
	}
	fetches(bootC, "sc", "the sha256 image (it cannot share blake3 chunks)")

	// The cached copies changed on disk: a fourth image's read finds them
	// in the index, fails to verify them, and fetches instead.
	ents, _ := os.ReadDir(work)
	for _, e := range ents {
		if name := e.Name(); strings.HasSuffix(name, ".blob.data") {
			f, err := os.OpenFile(filepath.Join(work, name), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			st, _ := f.Stat()
			for off := int64(0); off < st.Size(); off += 256 << 10 {
				f.WriteAt([]byte("tampered"), off+100)
			}
			f.Close()
		}
	}
	fetches(bootD, "sd", "with the cached copies changed on disk, the fourth image")
}
