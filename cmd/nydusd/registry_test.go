package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/roottest"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/converter"
	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

// TestLazyRegistryMount converts a 100+ MB image with nydusify's library
// into Debian's docker-registry, mounts it with nydusd's registry
// backend and reads one small file: only a few MiB are fetched.
func TestLazyRegistryMount(t *testing.T) {
	roottest.RequireFUSE(t)
	r := registrytest.Start(t, registrytest.Options{})
	var files []treetest.File
	for i := 0; i < 52; i++ {
		files = append(files, treetest.Reg(fmt.Sprintf("data/blob%02d.bin", i), 0o644, treetest.Random(int64(i), 2<<20)))
	}
	files = append(files, treetest.Reg("etc/small.conf", 0o644, []byte("small file\n")))
	layer := treetest.Tar(files)
	bootPath, img := convertImage(t, r, "big", layer, converter.Options{BatchSize: 0x100000})
	mf, _ := img.Manifest()
	var blobBytes int64
	for _, l := range mf.Layers[:len(mf.Layers)-1] {
		blobBytes += l.Size
	}
	cacheDir := t.TempDir()
	cfg := fmt.Sprintf(`{"device":{"id":"/1","backend":{"type":"registry","config":{"readahead":false,"host":%q,"repo":"big","scheme":"http","proxy":{"fallback":false},"timeout":5,"connect_timeout":5,"retry_limit":2}},"cache":{"type":"blobcache","config":{"work_dir":%q,"disable_indexed_map":false}}},"mode":"direct","digest_validate":true,"enable_xattr":true,"iostats_files":true,"amplify_io":1048576,"fs_prefetch":{"enable":false,"prefetch_all":false,"threads_count":8,"merging_size":1048576}}`, r.Host, cacheDir)
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	r.ResetStats()
	d := start(t, "--bootstrap", bootPath, "--config", cfgPath)
	b, err := os.ReadFile(filepath.Join(d.mnt, "etc", "small.conf"))
	if err != nil || string(b) != "small file\n" {
		t.Fatalf("small file: %q %v\n%s", b, err, d.log)
	}
	st := r.Stats()
	t.Logf("image blobs %d bytes; fetched %d bytes in %d GETs to read one small file", blobBytes, st.BlobBytesServed, st.BlobGets)
	if blobBytes < 100<<20 {
		t.Fatalf("image is only %d bytes", blobBytes)
	}
	if st.BlobBytesServed > 2<<20+1<<20 {
		t.Fatalf("fetched %d bytes to read one small file", st.BlobBytesServed)
	}
	// A big file reads correctly too.
	got, err := os.ReadFile(filepath.Join(d.mnt, "data", "blob07.bin"))
	if err != nil || string(got) != string(treetest.Random(7, 2<<20)) {
		t.Fatalf("blob07: %v", err)
	}
	if !strings.Contains(d.log.String(), "nydusd running") {
		t.Fatalf("log:\n%s", d.log)
	}
	// The snapshotter's cache GC relies on underlying_files.
	if code, body := d.do("GET", "/api/v1/metrics/blobcache", nil); code != 200 || !strings.Contains(body, ".blob.data") || !strings.Contains(body, ".chunk_map") {
		t.Fatalf("blobcache metrics: %d %s", code, body)
	}
	// kill -9, restart on the same cache: cached data is served without
	// touching the registry, and verified (digest_validate).
	d.cmd.Process.Kill()
	d.cmd.Wait()
	unixUnmount(d.mnt)
	r.ResetStats()
	d2 := start(t, "--bootstrap", bootPath, "--config", cfgPath)
	for name, want := range map[string][]byte{"etc/small.conf": []byte("small file\n"), "data/blob07.bin": treetest.Random(7, 2<<20)} {
		got, err := os.ReadFile(filepath.Join(d2.mnt, name))
		if err != nil || string(got) != string(want) {
			t.Fatalf("after restart, %s: %v", name, err)
		}
	}
	if st := r.Stats(); st.BlobBytesServed != 0 {
		t.Fatalf("after restart, %d bytes fetched for cached files", st.BlobBytesServed)
	}
}

// TestPrefetchAll: with fs_prefetch.prefetch_all, the daemon fetches the
// whole image in the background; afterwards reads touch no backend.
func TestPrefetchAll(t *testing.T) {
	roottest.RequireFUSE(t)
	r := registrytest.Start(t, registrytest.Options{})
	layer := treetest.Tar(treetest.Sample())
	bootPath, _ := convertImage(t, r, "pf", layer, converter.Options{BatchSize: 0x40000, Prefetch: []string{"/etc"}})
	cfg := fmt.Sprintf(`{"device":{"backend":{"type":"registry","config":{"host":%q,"repo":"pf","scheme":"http"}},"cache":{"type":"blobcache","config":{"work_dir":%q}}},"fs_prefetch":{"enable":true,"prefetch_all":true,"threads_count":4}}`, r.Host, t.TempDir())
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	d := start(t, "--bootstrap", bootPath, "--config", cfgPath)
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, body := d.do("GET", "/api/v1/metrics/blobcache", nil)
		if strings.Contains(body, `"data_all_ready":true`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("prefetch did not finish: %s\n%s", body, d.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.ResetStats()
	got, err := treetest.FromDir(d.mnt, treetest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := treetest.FromTar(bytes.NewReader(layer), treetest.Options{})
	for p := range want {
		if strings.Contains(p, "/.wh.") {
			delete(want, p) // whiteouts of the only layer hide nothing
		}
	}
	if diff := treetest.Diff(want, got); diff != "" {
		t.Fatalf("tree differs:\n%s", diff)
	}
	if st := r.Stats(); st.BlobGets != 0 {
		t.Fatalf("%d blob GETs after prefetch", st.BlobGets)
	}
}

// TestHotSetStreamedFromRegistry: an image converted with a prefetch list
// has its hot files first in the blob; nydusd, with fs_prefetch on,
// streams them at mount from Debian's docker-registry in a couple of
// ranged GETs, after which reading them touches no backend, while a
// cold file still needs a request.
func TestHotSetStreamedFromRegistry(t *testing.T) {
	roottest.RequireFUSE(t)
	r := registrytest.Start(t, registrytest.Options{})
	want := map[string][]byte{}
	var files []treetest.File
	for i := 0; i < 40; i++ {
		name := fmt.Sprintf("usr/lib/lib%02d.so", i)
		want["/"+name] = treetest.Random(int64(300+i), 150_000)
		files = append(files, treetest.Reg(name, 0o644, want["/"+name]))
	}
	want["/etc/app.conf"] = []byte("hot = true\n")
	files = append(files, treetest.Reg("etc/app.conf", 0o644, want["/etc/app.conf"]))
	hot := []string{"/usr/lib/lib33.so", "/usr/lib/lib07.so", "/etc/app.conf", "/usr/lib/lib21.so", "/usr/lib/lib02.so"}
	bootPath, _ := convertImage(t, r, "hot", treetest.Tar(files), converter.Options{BatchSize: 0x10000, Prefetch: hot})
	cfg := fmt.Sprintf(`{"device":{"backend":{"type":"registry","config":{"host":%q,"repo":"hot","scheme":"http"}},"cache":{"type":"blobcache","config":{"work_dir":%q}}},"access_pattern":true,"fs_prefetch":{"enable":true,"prefetch_all":false}}`, r.Host, t.TempDir())
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	r.ResetStats()
	d := start(t, "--bootstrap", bootPath, "--config", cfgPath)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, body := d.do("GET", "/api/v1/metrics/blobcache", nil); strings.Contains(body, `"data_all_ready":true`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hot set did not arrive:\n%s", d.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	hotBytes := 4*150_000 + 64<<10
	st := r.Stats()
	t.Logf("hot set: %d GETs, %d bytes", st.BlobGets, st.BlobBytesServed)
	// Two stream segments (256 KiB, then the rest) and the blob's
	// chunk-info table.
	if st.BlobGets > 3 || st.BlobBytesServed > int64(hotBytes)+256<<10 {
		t.Fatalf("the hot set (about %d bytes) took %d GETs and %d bytes", hotBytes, st.BlobGets, st.BlobBytesServed)
	}
	r.ResetStats()
	for _, p := range hot {
		got, err := os.ReadFile(filepath.Join(d.mnt, p))
		if err != nil || !bytes.Equal(got, want[p]) {
			t.Fatalf("%s: %v", p, err)
		}
	}
	if st := r.Stats(); st.BlobGets != 0 {
		t.Fatalf("reading the hot files after the stream sent %d GETs", st.BlobGets)
	}
	if got, err := os.ReadFile(filepath.Join(d.mnt, "usr/lib/lib10.so")); err != nil || !bytes.Equal(got, want["/usr/lib/lib10.so"]) {
		t.Fatalf("cold file: %v", err)
	}
	if st := r.Stats(); st.BlobGets == 0 {
		t.Fatal("a cold file was read without a GET: the stream fetched more than the hot set")
	}
	if _, body := d.do("GET", "/api/v1/metrics/fetches", nil); !strings.Contains(body, `"kind":"hotset"`) {
		t.Fatalf("the fetch log has no hotset fetch: %s", body)
	}
}

// convertImage pushes a one-layer OCI image to REPO:1 of r, converts it
// with nydusify's library (o, with the registry, plain-HTTP and work-dir
// fields filled in) to REPO:nydus, and returns the Nydus image and its
// bootstrap, written to a file.
func convertImage(t *testing.T, r *registrytest.Registry, repo string, layer []byte, o converter.Options) (string, v1.Image) {
	t.Helper()
	return convertImageAs(t, r, repo, layer, o, authn.Anonymous)
}

// staticKeychain gives one authenticator for every registry.
type staticKeychain struct{ a authn.Authenticator }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return k.a, nil }

// convertImageAs is convertImage on a registry that wants credentials.
func convertImageAs(t *testing.T, r *registrytest.Registry, repo string, layer []byte, o converter.Options, auth authn.Authenticator) (string, v1.Image) {
	t.Helper()
	registrytest.PushImage(t, r.Host+"/"+repo+":1", [][]byte{layer}, registrytest.WithAuth(auth))
	ro := imageref.RegistryOptions{PlainHTTP: true, Keychain: staticKeychain{auth}}
	src, _ := imageref.Parse(r.Host+"/"+repo+":1", false, ro)
	dst, _ := imageref.Parse(r.Host+"/"+repo+":nydus", false, ro)
	img, boot := convertInto(t, src, dst, ro, o)
	bootPath := filepath.Join(t.TempDir(), "image.boot")
	if err := os.WriteFile(bootPath, boot, 0o644); err != nil {
		t.Fatal(err)
	}
	return bootPath, img
}
