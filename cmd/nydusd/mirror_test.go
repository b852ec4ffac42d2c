package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/nydus-go/nydus/internal/roottest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/converter"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

// TestRegistryMirror: with upstream's mirrors list, nydusd reads blobs
// through a real registry mirror (Debian's docker-registry as a
// pull-through cache of the origin, which wants credentials), and the
// mirror's storage fills; the mirror stopped in the middle of reading a
// large file, the reads go on from the origin with the right bytes and
// no EIO; the mirror back, traffic returns to it after its next health
// check. Without auth_through the mirror never sees the credentials;
// with it, it does. No credential is in a log or an API answer.
func TestRegistryMirror(t *testing.T) {
	roottest.RequireFUSE(t)
	const user, pass = "puller", "s3cret-mirror"
	secret := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	origin := registrytest.Start(t, registrytest.Options{Htpasswd: map[string]string{user: pass}, TokenAuth: true})
	big := treetest.Random(31, 24<<20)
	other := treetest.Random(32, 8<<20)
	boot, img := convertImageAs(t, origin, "mx", treetest.Tar([]treetest.File{
		treetest.Reg("big.bin", 0o644, big), treetest.Reg("other.bin", 0o644, other),
	}), converter.Options{}, &authn.Basic{Username: user, Password: pass})
	mf, _ := img.Manifest()
	blobDigest := mf.Layers[0].Digest.String()
	mirror := registrytest.Start(t, registrytest.Options{Remote: "http://" + origin.Host, RemoteUser: user, RemotePassword: pass})

	config := func(authThrough bool) string {
		cfg := fmt.Sprintf(`{"device":{"backend":{"type":"registry","config":{"host":%q,"repo":"mx","scheme":"http","auth":%q,"timeout":5,"connect_timeout":2,"retry_limit":2,
			"mirrors":[{"host":"http://%s","auth_through":%t,"health_check_interval":1,"headers":{"X-Dragonfly-Registry":"http://%s"}}]}},
			"cache":{"type":"blobcache","config":{"work_dir":%q}}},
			"mode":"direct","digest_validate":false,"amplify_io":1048576,"fs_prefetch":{"enable":false}}`,
			origin.Host, secret, mirror.Host, authThrough, origin.Host, t.TempDir())
		p := filepath.Join(t.TempDir(), "config.json")
		os.WriteFile(p, []byte(cfg), 0o600)
		return p
	}
	d := start(t, "--bootstrap", boot, "--config", config(false), "--dependency-prefetch=false", "--sibling-prefetch=false")

	// Through the mirror, which fetches from the origin and keeps it.
	f, err := os.Open(filepath.Join(d.mnt, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(big))
	if _, err := io.ReadFull(f, got[:6<<20]); err != nil {
		t.Fatal(err)
	}
	if mirror.Stats().BlobGets == 0 {
		t.Fatalf("no blob request reached the mirror:\n%s", d.log)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if mirror.Holds("mx", blobDigest) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mirror's storage did not fill with blob %s:\n%s", blobDigest, mirror.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The mirror goes down mid-read: the rest comes from the origin.
	mirror.Stop(t)
	origin.ResetStats()
	if _, err := io.ReadFull(f, got[6<<20:]); err != nil {
		t.Fatalf("reading on with the mirror down: %v\n%s", err, d.log)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("big.bin read across the mirror's failure differs from the source")
	}
	if origin.Stats().BlobBytesServed == 0 {
		t.Fatal("nothing was read from the origin while the mirror was down")
	}
	d.waitLog(t, "registry mirror disabled")

	// The mirror back: after its next health check, blobs go to it.
	mirror.Restart(t)
	d.waitLog(t, "registry mirror recovered")
	n0 := mirror.Stats().BlobGets
	origin.ResetStats()
	b, err := os.ReadFile(filepath.Join(d.mnt, "other.bin"))
	if err != nil || !bytes.Equal(b, other) {
		t.Fatalf("other.bin after the mirror's return: %v", err)
	}
	if mirror.Stats().BlobGets == n0 {
		t.Fatalf("no blob request reached the mirror after it came back:\n%s", d.log)
	}
	if n := origin.Stats().BlobGets; n != 0 {
		t.Fatalf("%d blob requests went to the origin with the mirror back (it has the blob):\n%s", n, origin.Log())
	}

	// The mirror's counters, by Prometheus.
	mlabel := fmt.Sprintf(`nydusd_registry_mirror_requests_total{mirror="http://%s",mountpoint="/",result=`, mirror.Host)
	if v, ok := d.metric(t, mlabel+`"served"}`); !ok || v == 0 {
		t.Fatalf("no served requests in /metrics for the mirror (%v)", ok)
	}
	if v, ok := d.metric(t, mlabel+`"failed"}`); !ok || v == 0 {
		t.Fatalf("no failed requests in /metrics for the mirror that went down (%v)", ok)
	}
	if v, ok := d.metric(t, fmt.Sprintf(`nydusd_registry_mirror_up{mirror="http://%s",mountpoint="/"}`, mirror.Host)); !ok || v != 1 {
		t.Fatalf("nydusd_registry_mirror_up %v (%v) for the mirror back in use", v, ok)
	}

	// Credentials: never sent to the mirror without auth_through, never
	// logged.
	if n := mirror.Stats().Authorized; n != 0 {
		t.Fatalf("%d requests reached the mirror with credentials, without auth_through", n)
	}
	seen := map[string]string{"nydusd's log": d.log.String(), "the mirror's log": mirror.Log()}
	for _, path := range []string{"/api/v1/daemon", "/api/v1/metrics", "/api/v1/metrics/backend", "/api/v1/metrics/blobcache", "/api/v1/events"} {
		code, body := d.do("GET", path, nil)
		if code/100 != 2 && code != 501 {
			t.Fatalf("GET %s: %d %s", path, code, body)
		}
		seen["GET "+path] = body
	}
	for name, l := range seen {
		if strings.Contains(l, secret) || strings.Contains(l, pass) {
			t.Fatalf("a credential reached %s", name)
		}
	}

	// auth_through: the mirror gets the requests' credentials.
	d2 := start(t, "--bootstrap", boot, "--config", config(true), "--dependency-prefetch=false", "--sibling-prefetch=false")
	if b, err := os.ReadFile(filepath.Join(d2.mnt, "other.bin")); err != nil || !bytes.Equal(b, other) {
		t.Fatalf("other.bin with auth_through: %v", err)
	}
	if mirror.Stats().Authorized == 0 {
		t.Fatal("with auth_through, no request reached the mirror with credentials")
	}
}
