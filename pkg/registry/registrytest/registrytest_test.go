package registrytest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// makeTar returns an uncompressed tar of regular files, in the given order.
func makeTar(t testing.TB, files ...file) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg,
			ModTime: Created, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type file struct {
	name string
	data []byte
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// testLayers returns two layers: mostly incompressible data, so that the
// compressed sizes are large and distinct.
func testLayers(t testing.TB) [][]byte {
	return [][]byte{
		makeTar(t, file{"etc/hostname", []byte("registrytest\n")}, file{"usr/lib/blob.bin", randomBytes(t, 300<<10)}),
		makeTar(t, file{"usr/bin/tool", randomBytes(t, 70<<10)}),
	}
}

func ref(t testing.TB, r *Registry, repo string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(r.Host+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func readAll(t testing.TB, rc io.ReadCloser, err error) []byte {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gunzip(t testing.TB, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return readAll(t, zr, nil)
}

// pushedSizes returns the sum of the compressed layer sizes and the config
// size from the image's manifest.
func pushedSizes(m *v1.Manifest) (layers, config int64) {
	for _, l := range m.Layers {
		layers += l.Size
	}
	return layers, m.Config.Size
}

func TestPushPullStats(t *testing.T) {
	r := Start(t, Options{})
	layers := testLayers(t)
	d := PushImage(t, r.Host+"/test/image:v1", layers)

	st := r.Stats()
	img, err := remote.Image(ref(t, r, "test/image:v1"))
	if err != nil {
		t.Fatalf("pull: %v\n%s", err, r.Log())
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	layerBytes, configBytes := pushedSizes(m)
	if got, want := st.UploadBytes, layerBytes+configBytes; got != want {
		t.Errorf("UploadBytes = %d, want %d (layers %d + config %d)", got, want, layerBytes, configBytes)
	}
	if got, want := st.UploadsCompleted, int64(len(layers)+1); got != want {
		t.Errorf("UploadsCompleted = %d, want %d", got, want)
	}
	if st.Mounts != 0 || st.MountRequests != 0 || st.BlobGets != 0 || st.BlobBytesServed != 0 {
		t.Errorf("unexpected counters after a push: %+v", st)
	}
	t.Logf("push: %+v", st)

	// The manifest.
	if got, err := img.Digest(); err != nil || got != d {
		t.Errorf("pulled digest %v (%v), pushed %v", got, err, d)
	}
	if m.MediaType != types.OCIManifestSchema1 || m.Config.MediaType != types.OCIConfigJSON {
		t.Errorf("media types %q / %q, want OCI", m.MediaType, m.Config.MediaType)
	}
	if len(m.Layers) != len(layers) {
		t.Fatalf("%d layers, want %d", len(m.Layers), len(layers))
	}

	// Pull everything back and count.
	r.ResetStats()
	if s := r.Stats(); s != (Stats{}) {
		t.Fatalf("stats after ResetStats: %+v", s)
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(rawCfg))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" || len(cfg.Config.Cmd) == 0 || len(cfg.Config.Env) == 0 {
		t.Errorf("config: os %q arch %q cmd %q env %q", cfg.OS, cfg.Architecture, cfg.Config.Cmd, cfg.Config.Env)
	}
	if len(cfg.History) != len(layers) || len(cfg.RootFS.DiffIDs) != len(layers) {
		t.Errorf("config: %d history entries, %d diff IDs, want %d", len(cfg.History), len(cfg.RootFS.DiffIDs), len(layers))
	}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range ls {
		mt, err := l.MediaType()
		if err != nil || mt != types.OCILayer {
			t.Errorf("layer %d media type %q (%v)", i, mt, err)
		}
		rc, err := l.Compressed()
		gz := readAll(t, rc, err)
		if got := int64(len(gz)); got != m.Layers[i].Size {
			t.Errorf("layer %d: read %d bytes, manifest says %d", i, got, m.Layers[i].Size)
		}
		if !bytes.Equal(gunzip(t, gz), layers[i]) {
			t.Errorf("layer %d: content differs from the pushed tar", i)
		}
	}
	st = r.Stats()
	t.Logf("pull: %+v", st)
	if got, want := st.BlobBytesServed, layerBytes+configBytes; got != want {
		t.Errorf("BlobBytesServed = %d, want %d", got, want)
	}
	if got, want := st.BlobGets, int64(len(layers)+1); got != want {
		t.Errorf("BlobGets = %d, want %d", got, want)
	}
	if st.UploadBytes != 0 || st.UploadsCompleted != 0 {
		t.Errorf("uploads counted during a pull: %+v", st)
	}
	if p := r.proxyLog.String(); p != "" {
		t.Errorf("proxy errors:\n%s", p)
	}
}

func TestRangedGet(t *testing.T) {
	r := Start(t, Options{})
	layers := testLayers(t)
	PushImage(t, r.Host+"/test/range:v1", layers)
	img, err := remote.Image(ref(t, r, "test/range:v1"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	desc := m.Layers[0]
	whole, err := os.ReadFile(r.BlobPath(desc.Digest.String()))
	if err != nil {
		t.Fatal(err)
	}

	r.ResetStats()
	url := fmt.Sprintf("http://%s/v2/test/range/blobs/%s", r.Host, desc.Digest)
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Range", "bytes=100-1123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp.Body, nil)
	if resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("status %s, want 206", resp.Status)
	}
	if got, want := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes 100-1123/%d", desc.Size); got != want {
		t.Errorf("Content-Range %q, want %q", got, want)
	}
	if !bytes.Equal(body, whole[100:1124]) {
		t.Errorf("ranged body differs from bytes 100-1123 of the blob")
	}
	if st := r.Stats(); st.BlobGets != 1 || st.BlobBytesServed != 1024 {
		t.Errorf("stats after a 1024-byte ranged GET: %+v", st)
	}

	// HEAD is counted apart and serves no body.
	resp, err = http.Head(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.ContentLength != desc.Size {
		t.Errorf("HEAD: %s, Content-Length %d, want 200 and %d", resp.Status, resp.ContentLength, desc.Size)
	}
	if st := r.Stats(); st.BlobHeads != 1 || st.BlobGets != 1 || st.BlobBytesServed != 1024 {
		t.Errorf("stats after HEAD: %+v", st)
	}
}

// TestUploadThroughProxy drives the upload protocol by hand: the registry's
// absolute Location URLs must come back pointing at the proxy.
func TestUploadThroughProxy(t *testing.T) {
	r := Start(t, Options{})
	blob := randomBytes(t, 64<<10)
	sum := sha256.Sum256(blob)
	digest := "sha256:" + hex.EncodeToString(sum[:])

	do := func(method, url string, body []byte) *http.Response {
		t.Helper()
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequest(method, url, rd)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	checkLocation := func(resp *http.Response) string {
		t.Helper()
		loc := resp.Header.Get("Location")
		if !strings.HasPrefix(loc, "http://"+r.Host+"/v2/") {
			t.Fatalf("%s %s: Location %q does not point at the proxy %s", resp.Request.Method, resp.Status, loc, r.Host)
		}
		return loc
	}

	resp := do(http.MethodPost, "http://"+r.Host+"/v2/test/upload/blobs/uploads/", nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST: %s", resp.Status)
	}
	loc := checkLocation(resp)
	resp = do(http.MethodPatch, loc, blob)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PATCH: %s", resp.Status)
	}
	loc = checkLocation(resp)
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	resp = do(http.MethodPut, loc+sep+"digest="+digest, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %s\n%s", resp.Status, r.Log())
	}
	checkLocation(resp)
	// The registry saw its own address as Host and answered with absolute
	// URLs on it: the proxy rewrote them.
	if !strings.Contains(r.Log(), `http.request.host="`+r.backend+`"`) {
		t.Errorf("the registry did not see its own address as Host; log:\n%s", r.Log())
	}
	st := r.Stats()
	if st.UploadBytes != int64(len(blob)) || st.UploadsCompleted != 1 {
		t.Errorf("stats: %+v, want %d upload bytes and 1 upload", st, len(blob))
	}

	// A cross-repository mount of that blob, and one of an unknown blob
	// (which opens an ordinary upload session instead).
	resp = do(http.MethodPost, "http://"+r.Host+"/v2/test/other/blobs/uploads/?mount="+digest+"&from=test/upload", nil)
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("mount: %s", resp.Status)
	}
	checkLocation(resp)
	unknown := "sha256:" + strings.Repeat("0", 64)
	resp = do(http.MethodPost, "http://"+r.Host+"/v2/test/other/blobs/uploads/?mount="+unknown+"&from=test/upload", nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("mount of an unknown blob: %s", resp.Status)
	}
	if st := r.Stats(); st.MountRequests != 2 || st.Mounts != 1 || st.UploadsCompleted != 1 {
		t.Errorf("stats after mounts: %+v", st)
	}
}

// TestMountOnCopy copies an image between repositories of the same registry
// with go-containerregistry, which mounts the blobs instead of uploading.
func TestMountOnCopy(t *testing.T) {
	r := Start(t, Options{})
	layers := testLayers(t)
	PushImage(t, r.Host+"/test/src:v1", layers)
	src, err := remote.Image(ref(t, r, "test/src:v1"))
	if err != nil {
		t.Fatal(err)
	}
	r.ResetStats()
	if err := remote.Write(ref(t, r, "test/dst:v1"), src); err != nil {
		t.Fatalf("copy: %v\n%s", err, r.Log())
	}
	st := r.Stats()
	t.Logf("copy: %+v", st)
	if st.Mounts < int64(len(layers)) || st.UploadBytes != 0 || st.BlobGets != 0 {
		t.Errorf("copy within the registry: %+v, want ≥ %d mounts and no blob transfer", st, len(layers))
	}
}

func TestAuth(t *testing.T) {
	const user, pass = "alice", "s3cret:with colon"
	r := Start(t, Options{Htpasswd: map[string]string{user: pass, "bob": "other"}})

	resp, err := http.Get("http://" + r.Host + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v2/ without credentials: %s, want 401", resp.Status)
	}
	if h := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Basic ") {
		t.Errorf("WWW-Authenticate %q, want Basic", h)
	}

	good := authn.FromConfig(authn.AuthConfig{Username: user, Password: pass})
	layers := testLayers(t)[1:]
	d := PushImage(t, r.Host+"/test/private:v1", layers, WithAuth(good))
	rf := ref(t, r, "test/private:v1")

	_, err = remote.Image(rf)
	checkStatus(t, "anonymous pull", err, http.StatusUnauthorized)
	_, err = remote.Image(rf, remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: user, Password: "wrong"})))
	checkStatus(t, "pull with a wrong password", err, http.StatusUnauthorized)

	pull := func(what string, opt remote.Option) {
		t.Helper()
		img, err := remote.Image(rf, opt)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		ls, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		rc, err := ls[0].Uncompressed()
		if got := readAll(t, rc, err); !bytes.Equal(got, layers[0]) {
			t.Errorf("%s: layer content differs", what)
		}
		if got, _ := img.Digest(); got != d {
			t.Errorf("%s: digest %v, want %v", what, got, d)
		}
	}
	pull("authn.FromConfig", remote.WithAuth(good))

	// DefaultKeychain reads $HOME/.docker/config.json first: point HOME at an
	// empty directory so that only DOCKER_CONFIG counts.
	t.Setenv("HOME", t.TempDir())
	t.Setenv("DOCKER_CONFIG", r.DockerConfig(t, user, pass))
	pull("DOCKER_CONFIG + DefaultKeychain", remote.WithAuthFromKeychain(authn.DefaultKeychain))

	t.Setenv("DOCKER_CONFIG", r.DockerConfig(t, user, "wrong"))
	_, err = remote.Image(rf, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	checkStatus(t, "DOCKER_CONFIG with a wrong password", err, http.StatusUnauthorized)
}

func checkStatus(t *testing.T, what string, err error, want int) {
	t.Helper()
	var terr *transport.Error
	if !errors.As(err, &terr) {
		t.Errorf("%s: error %v, want HTTP %d", what, err, want)
		return
	}
	if terr.StatusCode != want {
		t.Errorf("%s: HTTP %d, want %d", what, terr.StatusCode, want)
	}
}

func TestBlobPath(t *testing.T) {
	r := Start(t, Options{})
	layers := testLayers(t)
	PushImage(t, r.Host+"/test/blobs:v1", layers)
	img, err := remote.Image(ref(t, r, "test/blobs:v1"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, desc := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		p := r.BlobPath(desc.Digest.String())
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("BlobPath(%s): %v", desc.Digest, err)
		}
		sum := sha256.Sum256(data)
		if got := "sha256:" + hex.EncodeToString(sum[:]); got != desc.Digest.String() {
			t.Errorf("%s holds %s", p, got)
		}
	}
	if p := r.BlobPath("nodigest"); p != "" {
		t.Errorf("BlobPath of a malformed digest = %q", p)
	}

	// Tampering is visible to clients that verify digests.
	desc := m.Layers[1]
	p := r.BlobPath(desc.Digest.String())
	data, _ := os.ReadFile(p)
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := img.LayerByDigest(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(io.Discard, rc)
	rc.Close()
	if err == nil {
		t.Errorf("reading a tampered blob succeeded")
	}
}

func TestPushIndex(t *testing.T) {
	r := Start(t, Options{})
	amd := [][]byte{makeTar(t, file{"arch", []byte("amd64\n")})}
	arm := [][]byte{makeTar(t, file{"arch", []byte("arm64\n")}), makeTar(t, file{"extra", []byte("x")})}
	d := PushIndex(t, r.Host+"/test/multi:v1", map[string][][]byte{"linux/amd64": amd, "linux/arm64": arm})
	rf := ref(t, r, "test/multi:v1")

	idx, err := remote.Index(rf)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := idx.Digest(); got != d {
		t.Errorf("index digest %v, want %v", got, d)
	}
	if im.MediaType != types.OCIImageIndex || len(im.Manifests) != 2 {
		t.Fatalf("index: media type %q, %d manifests", im.MediaType, len(im.Manifests))
	}
	var plats []string
	for _, m := range im.Manifests {
		plats = append(plats, m.Platform.String())
	}
	if !slices.Equal(plats, []string{"linux/amd64", "linux/arm64"}) {
		t.Errorf("platforms %v", plats)
	}

	for _, tc := range []struct {
		arch   string
		layers [][]byte
	}{{"amd64", amd}, {"arm64", arm}} {
		img, err := remote.Image(rf, remote.WithPlatform(v1.Platform{OS: "linux", Architecture: tc.arch}))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Architecture != tc.arch {
			t.Errorf("platform %s selected an image for %s", tc.arch, cfg.Architecture)
		}
		ls, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		if len(ls) != len(tc.layers) {
			t.Fatalf("%s: %d layers, want %d", tc.arch, len(ls), len(tc.layers))
		}
		rc, err := ls[0].Uncompressed()
		if got := readAll(t, rc, err); !bytes.Equal(got, tc.layers[0]) {
			t.Errorf("%s: first layer differs", tc.arch)
		}
	}
}

// TestCleanupStopsProcess checks that the registry process is gone and its
// port closed once the test that started it has finished.
func TestCleanupStopsProcess(t *testing.T) {
	var pid int
	var backend, proxy string
	t.Run("inner", func(t *testing.T) {
		r := Start(t, Options{})
		pid, backend, proxy = r.PID(), r.backend, r.Host
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("registry pid %d not running: %v", pid, err)
		}
	})
	if pid <= 0 {
		t.Fatal("no pid recorded")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("registry pid %d still exists after cleanup (kill 0: %v)", pid, err)
	}
	client := &http.Client{Timeout: 2 * time.Second}
	for _, addr := range []string{backend, proxy} {
		if resp, err := client.Get("http://" + addr + "/v2/"); err == nil {
			resp.Body.Close()
			t.Errorf("%s still answers after cleanup: %s", addr, resp.Status)
		}
	}
}

func TestRewriteURLs(t *testing.T) {
	r := &Registry{Host: "127.0.0.1:4000", backend: "127.0.0.1:500"}
	for in, want := range map[string]string{
		"http://127.0.0.1:500/v2/a/blobs/uploads/x?_state=y%3D": "http://127.0.0.1:4000/v2/a/blobs/uploads/x?_state=y%3D",
		"http://127.0.0.1:500":                               "http://127.0.0.1:4000",
		"https://127.0.0.1:500/v2/":                          "http://127.0.0.1:4000/v2/",
		"http://127.0.0.1:5000/v2/":                          "http://127.0.0.1:5000/v2/",
		"/v2/a/blobs/uploads/x":                              "/v2/a/blobs/uploads/x",
		"http://example.com/v2/":                             "http://example.com/v2/",
		`<http://127.0.0.1:500/v2/_catalog?n=1>; rel="next"`: `<http://127.0.0.1:4000/v2/_catalog?n=1>; rel="next"`,
	} {
		if got := r.rewriteURLs(in); got != want {
			t.Errorf("rewriteURLs(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSetOffline checks that an offline registry drops requests, including
// those on kept-alive connections, and serves again once back online.
func TestSetOffline(t *testing.T) {
	r := Start(t, Options{})
	url := "http://" + r.Host + "/v2/"
	client := &http.Client{Timeout: 10 * time.Second}
	get := func() error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	}
	if err := get(); err != nil { // leaves a kept-alive connection
		t.Fatalf("online: %v", err)
	}
	r.SetOffline(true)
	for i := 0; i < 2; i++ {
		if err := get(); err == nil {
			t.Fatalf("request %d while offline succeeded", i)
		}
	}
	r.SetOffline(false)
	if err := get(); err != nil {
		t.Fatalf("back online: %v", err)
	}
}

// TestTokenAuth: with TokenAuth the registry answers 401 with a Bearer
// challenge naming the token server; go-containerregistry's token flow
// pushes and pulls with the right password, not with a wrong one.
func TestTokenAuth(t *testing.T) {
	const user, pass = "alice", "t0ken-pass"
	r := Start(t, Options{Htpasswd: map[string]string{user: pass}, TokenAuth: true})
	resp, err := http.Get("http://" + r.Host + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if h := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(h, "Bearer realm=") {
		t.Fatalf("GET /v2/: %s, WWW-Authenticate %q: want 401 with a Bearer challenge", resp.Status, h)
	}
	good := authn.FromConfig(authn.AuthConfig{Username: user, Password: pass})
	layers := testLayers(t)[1:]
	d := PushImage(t, r.Host+"/test/tok:v1", layers, WithAuth(good))
	rf := ref(t, r, "test/tok:v1")
	_, err = remote.Image(rf, remote.WithAuth(authn.FromConfig(authn.AuthConfig{Username: user, Password: "wrong"})))
	checkStatus(t, "pull with a wrong password", err, http.StatusUnauthorized)
	img, err := remote.Image(rf, remote.WithAuth(good))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := img.Digest(); got != d {
		t.Fatalf("digest %v, want %v", got, d)
	}
	if r.TokensIssued() == 0 {
		t.Fatal("no token was issued")
	}
}

// TestPullThroughMirror: a registry started with Remote serves what the
// remote (here with token auth) has, keeps the blobs in its storage,
// and Stop and Restart take it down and back at the same address.
func TestPullThroughMirror(t *testing.T) {
	const user, pass = "mirror", "m1rror-pass"
	origin := Start(t, Options{Htpasswd: map[string]string{user: pass}, TokenAuth: true})
	layers := testLayers(t)[1:]
	PushImage(t, origin.Host+"/test/m:v1", layers, WithAuth(authn.FromConfig(authn.AuthConfig{Username: user, Password: pass})))
	m := Start(t, Options{Remote: "http://" + origin.Host, RemoteUser: user, RemotePassword: pass})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("mirror log:\n%s\norigin log:\n%s", m.Log(), origin.Log())
		}
	})
	pull := func() v1.Image {
		t.Helper()
		img, err := remote.Image(ref(t, m, "test/m:v1"))
		if err != nil {
			t.Fatalf("anonymous pull through the mirror: %v", err)
		}
		ls, _ := img.Layers()
		rc, err := ls[0].Uncompressed()
		if got := readAll(t, rc, err); !bytes.Equal(got, layers[0]) {
			t.Fatal("layer through the mirror differs")
		}
		return img
	}
	img := pull()
	ls, _ := img.Layers()
	dg, _ := ls[0].Digest()
	cfg, _ := img.ConfigName()
	// Every blob the pull fetched (the layer and the config) is kept
	// before the mirror stops: one it is still storing when killed may
	// be left half-committed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if m.Holds("test/m", dg.String()) && m.Holds("test/m", cfg.String()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mirror did not keep blobs %s and %s:\n%s", dg, cfg, m.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.Stop(t)
	if _, err := http.Get("http://" + m.Host + "/v2/"); err == nil {
		t.Fatal("a stopped registry answered")
	}
	m.Restart(t)
	origin.ResetStats()
	pull()
	if n := origin.Stats().BlobGets; n != 0 {
		t.Fatalf("the restarted mirror fetched %d blobs from the origin again", n)
	}
}
