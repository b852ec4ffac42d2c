package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/nydus-go/nydus/internal/roottest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/daemon/api"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/storage"
)

// poisonImage builds two 1 MiB files (one 1 MiB chunk each) and a
// crafted copy of the bootstrap in which the two chunk records swap
// their uncompressed offsets (80-byte records, the offset at +56): the
// blob is the honest one, so check and digests still agree with the
// records, but the records no longer say where the chunks live.
func poisonImage(t *testing.T) (honest, crafted, blobs string, files map[string][]byte) {
	t.Helper()
	files = map[string][]byte{"f0": treetest.Random(10, 1<<20), "f1": treetest.Random(11, 1<<20)}
	dir := t.TempDir()
	blobs = filepath.Join(dir, "blobs")
	os.MkdirAll(blobs, 0o755)
	var b bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(treetest.Tar([]treetest.File{
		treetest.Reg("f0", 0o644, files["f0"]), treetest.Reg("f1", 0o644, files["f1"]),
	})), &b, builder.Options{Whiteout: builder.WhiteoutNone, ChunkSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(blobs, res.BlobID), b.Bytes(), 0o644)
	honest = filepath.Join(dir, "honest.boot")
	os.WriteFile(honest, res.Bootstrap, 0o644)

	rd, err := rafs.Open(context.Background(), bytes.NewReader(res.Bootstrap), int64(len(res.Bootstrap)))
	if err != nil {
		t.Fatal(err)
	}
	table, _ := rd.ChunkTable(context.Background())
	if len(table) != 2 {
		t.Fatalf("%d chunks, want 2", len(table))
	}
	boot := append([]byte(nil), res.Bootstrap...)
	var recs [2]int
	for i, c := range table {
		if recs[i] = bytes.Index(boot, c.Digest[:]); recs[i] < 0 {
			t.Fatal("chunk record not found")
		}
	}
	o0, o1 := boot[recs[0]+56:recs[0]+64], boot[recs[1]+56:recs[1]+64]
	v0, v1 := binary.LittleEndian.Uint64(o0), binary.LittleEndian.Uint64(o1)
	if v0 == v1 {
		t.Fatal("the two chunks share an offset")
	}
	binary.LittleEndian.PutUint64(o0, v1)
	binary.LittleEndian.PutUint64(o1, v0)
	crafted = filepath.Join(dir, "crafted.boot")
	os.WriteFile(crafted, boot, 0o644)

	// nydus-image check (builder.Check) reports the disagreement.
	crd, _ := rafs.Open(context.Background(), bytes.NewReader(boot), int64(len(boot)))
	if _, err := builder.Check(context.Background(), crd, &storage.FileSource{Dir: blobs}); !errors.Is(err, storage.ErrChunkRecordMismatch) {
		t.Fatalf("check of the crafted bootstrap: %v, want a chunk record mismatch", err)
	}
	return honest, crafted, blobs, files
}

func sharedCacheConfig(blobs, workDir string) string {
	return fmt.Sprintf(`{"device":{"backend":{"type":"localfs","config":{"dir":%q}},"cache":{"type":"blobcache","config":{"work_dir":%q}}},"digest_validate":false}`, blobs, workDir)
}

// readHeads reads 4 KiB of each file under dir and returns the errors.
func readHeads(dir string, names ...string) []error {
	var errs []error
	for _, n := range names {
		f, err := os.Open(filepath.Join(dir, n))
		if err == nil {
			_, err = f.Read(make([]byte, 4096))
			f.Close()
		}
		errs = append(errs, err)
	}
	return errs
}

// checkHonest reads every file of the honest image in full and compares.
func checkHonest(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for n, want := range files {
		got, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatalf("honest image: %s: %v", n, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("honest image: %s: wrong bytes from the shared cache", n)
		}
	}
}

// TestCachePoisoningRefused: a crafted bootstrap that references an
// honest blob with two chunks' offsets swapped gets EIO, writes nothing
// into another chunk's slot, and the honest bootstrap of the same blob,
// sharing the cache work_dir, reads the right bytes: with two dedicated
// daemons, and with one shared daemon and two API mounts.
func TestCachePoisoningRefused(t *testing.T) {
	roottest.RequireFUSE(t)
	honest, crafted, blobs, files := poisonImage(t)
	var metricsOf func() (int, string)
	check := func(t *testing.T, evilMnt, goodMnt string, evilLog func() string) {
		for i, err := range readHeads(evilMnt, "f0", "f1") {
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("crafted image: reading f%d: %v, want EIO", i, err)
			}
		}
		if l := evilLog(); !strings.Contains(l, "chunk record disagrees") || !strings.Contains(l, "uncompressed offset") {
			t.Errorf("the daemon does not log the mismatch:\n%s", l)
		}
		checkHonest(t, goodMnt, files)
		if code, body := metricsOf(); code != 200 || !regexp.MustCompile(`nydusd_chunk_record_mismatches_total\{mountpoint="/(evil)?"\} [1-9]`).MatchString(body) {
			t.Errorf("prometheus metrics do not count the mismatches: %d\n%s", code, body)
		}
		// And after the honest image filled the cache, the crafted one
		// still gets EIO, not another chunk's bytes.
		for i, err := range readHeads(evilMnt, "f0", "f1") {
			if !errors.Is(err, syscall.EIO) {
				t.Errorf("crafted image over a warm cache: reading f%d: %v, want EIO", i, err)
			}
		}
	}
	t.Run("dedicated", func(t *testing.T) {
		work := t.TempDir()
		cfg := filepath.Join(t.TempDir(), "config.json")
		os.WriteFile(cfg, []byte(sharedCacheConfig(blobs, work)), 0o600)
		evil := start(t, "--bootstrap", crafted, "--config", cfg)
		good := start(t, "--bootstrap", honest, "--config", cfg)
		metricsOf = func() (int, string) { return evil.do("GET", "/metrics", nil) }
		check(t, evil.mnt, good.mnt, evil.log.String)
		// A third daemon on the warm cache, after both.
		again := start(t, "--bootstrap", honest, "--config", cfg)
		checkHonest(t, again.mnt, files)
	})
	t.Run("shared", func(t *testing.T) {
		work := t.TempDir()
		d := start(t)
		for _, m := range []struct{ name, boot string }{{"evil", crafted}, {"good", honest}} {
			if code, body := d.do("POST", "/api/v1/mount?mountpoint=/"+m.name, api.MountRequest{FsType: "rafs", Source: m.boot, Config: sharedCacheConfig(blobs, work)}); code != 204 {
				t.Fatalf("mount %s: %d %s", m.name, code, body)
			}
		}
		metricsOf = func() (int, string) { return d.do("GET", "/metrics", nil) }
		check(t, filepath.Join(d.mnt, "evil"), filepath.Join(d.mnt, "good"), d.log.String)
	})
}
