package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nydus-go/nydus/internal/roottest"
	"github.com/nydus-go/nydus/pkg/blobcache"
	"github.com/nydus-go/nydus/pkg/converter"
	"github.com/nydus-go/nydus/pkg/daemon/api"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

// BenchmarkShare is the node side of dedup across images: two images
// converted on their own (h1 the Debian curl image with nydusify's
// defaults into one repository, h2 the Debian python image with
// --dedup-scope none into another) that hold some of the same files in
// different blobs. In one shared nydusd (the snapshotter's default
// configuration), h1's workload (`curl --version`) runs, then h2's
// (`python3 -c "import ssl, json, urllib.request"`).
//
// Reported: the bytes the registry served for h2 (shared), and the
// reference: the compressed bytes of the chunks h2's workload fetches
// on its own (a fresh cache) whose content h1's run did not leave in the
// cache; their ratio (target ≤ 1.1), h2's bytes on its own, and the
// uncompressed bytes h2 copied from h1's blobs by content (the rest of
// what it shares with h1 is the same blob).
func BenchmarkShare(b *testing.B) {
	roottest.RequireFUSE(b)
	origin := registrytest.Start(b, registrytest.Options{})
	boot1 := convertBenchImage(b, origin, "curl", "h1:nydus", converter.Options{})
	boot2 := convertBenchImage(b, origin, "python", "h2:nydus", converter.Options{NoDedupScope: true})
	h1 := shareImage{boot: boot1, repo: "h1", argv: []string{"/usr/bin/curl", "--version"}}
	h2 := shareImage{boot: boot2, repo: "h2", argv: []string{"/usr/bin/python3", "-c", "import ssl, json, urllib.request"}}

	// h2 alone: what it fetches, by chunk.
	alone := b.TempDir()
	d := start(b)
	origin.ResetStats()
	h2.run(b, d, origin.Host, alone, "alone")
	quiesce(origin)
	aloneBytes := origin.Stats().BlobBytesServed
	fetched := cachedChunks(b, alone)

	// h1, then h2, one daemon and one cache.
	shared := b.TempDir()
	d2 := start(b)
	h1.run(b, d2, origin.Host, shared, "h1")
	quiesce(origin)
	held := map[[32]byte]bool{}
	for _, c := range cachedChunks(b, shared) {
		held[c.digest] = true
	}
	origin.ResetStats()
	b.ResetTimer()
	h2.run(b, d2, origin.Host, shared, "h2")
	quiesce(origin)
	b.StopTimer()
	got := origin.Stats().BlobBytesServed

	// The reference: compressed sizes from h2's bootstrap.
	rd := openBoot(b, boot2)
	idx, err := rd.ChunkIndex(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	blobIdx := map[string]uint32{}
	for i, bi := range rd.Blobs {
		blobIdx[bi.BlobID] = uint32(i)
	}
	var ref, all int64
	for _, c := range fetched {
		ci, ok := idx.Lookup(blobIdx[c.blob], c.ci)
		if !ok {
			continue
		}
		all += int64(ci.CompressedSize)
		if !held[c.digest] {
			ref += int64(ci.CompressedSize)
		}
	}
	b.ReportMetric(float64(got)/1e6, "h2-MB")
	b.ReportMetric(float64(ref)/1e6, "ref-MB")
	if ref > 0 {
		b.ReportMetric(float64(got)/float64(ref), "x-ref")
	}
	b.ReportMetric(float64(aloneBytes)/1e6, "h2-alone-MB")
	_, metrics := d2.do("GET", "/metrics", nil)
	if m := regexp.MustCompile(`(?m)^nydusd_shared_bytes_total\{mountpoint="/h2"\} (\S+)$`).FindStringSubmatch(metrics); m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		b.ReportMetric(v/1e6, "h2-copied-MB") // from other blobs of the cache
	}
	b.Logf("h2 alone fetched %d chunks (%d compressed bytes, %d served); after h1 the registry served %d bytes against %d of chunks h1 left no copy of",
		len(fetched), all, aloneBytes, got, ref)
}

// shareImage is an image of BenchmarkShare and its workload.
type shareImage struct {
	boot, repo string
	argv       []string
}

// run mounts the image in the shared daemon under name, with its cache
// in work, and runs the workload in the mount.
func (s shareImage) run(b *testing.B, d *daemonProc, host, work, name string) {
	b.Helper()
	code, body := d.do("POST", "/api/v1/mount?mountpoint=/"+name, api.MountRequest{FsType: "rafs", Source: s.boot,
		Config: nodeConfig(host, s.repo, "", work)})
	if code != 204 {
		b.Fatalf("mount %s: %d %s", name, code, body)
	}
	out, err := exec.Command("chroot", append([]string{filepath.Join(d.mnt, name)}, s.argv...)...).CombinedOutput()
	if err != nil {
		b.Fatalf("%s in %s: %v\n%s\nnydusd:\n%s", strings.Join(s.argv, " "), name, err, out, d.log)
	}
}

// cachedChunk is a chunk a cache directory holds, from its journals.
type cachedChunk struct {
	blob   string
	ci     uint32
	digest [32]byte
}

// cachedChunks reads the content journals of a cache directory (the
// format of pkg/blobcache's index.go).
func cachedChunks(b *testing.B, dir string) []cachedChunk {
	ents, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	var out []cachedChunk
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), blobcache.DigestsSuffix)
		if !ok {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			b.Fatal(err)
		}
		for rec := raw[min(64, len(raw)):]; len(rec) >= 64; rec = rec[64:] {
			var c cachedChunk
			c.blob, c.ci = id, binary.LittleEndian.Uint32(rec)
			copy(c.digest[:], rec[32:64])
			out = append(out, c)
		}
	}
	return out
}

func openBoot(b *testing.B, path string) *rafs.Reader {
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	rd, err := rafs.Open(context.Background(), bytes.NewReader(data), int64(len(data)))
	if err != nil {
		b.Fatal(fmt.Errorf("%s: %w", path, err))
	}
	return rd
}
