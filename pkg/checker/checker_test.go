package checker

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/errdefs"
	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// ---- tar fixtures ----

var mtime = time.Unix(1700000000, 123456789)

type ent struct {
	hdr  tar.Header
	data []byte
}

type opt func(*tar.Header)

func owner(uid, gid int) opt { return func(h *tar.Header) { h.Uid, h.Gid = uid, gid } }

func xattr(k, v string) opt {
	return func(h *tar.Header) {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords["SCHILY.xattr."+k] = v
	}
}

func mk(typ byte, name string, mode int64, data []byte, opts []opt) ent {
	h := tar.Header{Typeflag: typ, Name: name, Mode: mode, ModTime: mtime, Format: tar.FormatPAX, Size: int64(len(data))}
	for _, o := range opts {
		o(&h)
	}
	return ent{h, data}
}

func reg(name string, mode int64, data string, opts ...opt) ent {
	return mk(tar.TypeReg, name, mode, []byte(data), opts)
}
func regb(name string, mode int64, data []byte, opts ...opt) ent {
	return mk(tar.TypeReg, name, mode, data, opts)
}
func dir(name string, mode int64, opts ...opt) ent { return mk(tar.TypeDir, name, mode, nil, opts) }
func symlink(name, target string) ent {
	e := mk(tar.TypeSymlink, name, 0o777, nil, nil)
	e.hdr.Linkname = target
	return e
}
func hardlink(name, target string) ent {
	e := mk(tar.TypeLink, name, 0o644, nil, nil)
	e.hdr.Linkname = target
	return e
}
func chardev(name string, major, minor int64) ent {
	e := mk(tar.TypeChar, name, 0o666, nil, nil)
	e.hdr.Devmajor, e.hdr.Devminor = major, minor
	return e
}
func fifo(name string) ent { return mk(tar.TypeFifo, name, 0o644, nil, nil) }

func tarOf(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range ents {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar %s: %v", h.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

var bigFile = func() []byte {
	b := make([]byte, 3<<20+12345)
	rand.New(rand.NewSource(7)).Read(b)
	return b
}()

// layers returns the three source layers; with changed set, the variant
// that the differences test converts instead.
func layers(t testing.TB, changed bool) [][]byte {
	big := bigFile
	shTarget := "tool"
	foo := "bar"
	devMinor := int64(3)
	tmpMode := int64(0o1777)
	passwdUID := 0
	var l1 []ent
	l1 = append(l1,
		dir("etc/", 0o755),
		reg("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n"),
		dir("etc/conf.d/", 0o750, owner(1000, 1000)),
	)
	if changed {
		big = append([]byte(nil), bigFile...)
		big[2<<20+5] ^= 0xff
		shTarget, foo, devMinor, tmpMode, passwdUID = "busybox", "baz", 5, 0o777, 1
	} else {
		l1 = append(l1, reg("etc/conf.d/a.conf", 0o640, "a=1\n", owner(1000, 1000)))
	}
	l1 = append(l1,
		dir("bin/", 0o755),
		reg("bin/tool", 0o4755, "tool v1\n"),
		hardlink("bin/tool-link", "bin/tool"),
		symlink("bin/sh", shTarget),
		dir("big/", 0o755),
		regb("big/file", 0o644, big),
		dir("opt/", 0o755),
		dir("opt/old/", 0o755),
		reg("opt/old/x", 0o644, "x"),
		dir("opt/old/sub/", 0o700),
		reg("opt/old/sub/y", 0o644, "y"),
		dir("dev/", 0o755),
		chardev("dev/null", 1, devMinor),
		dir("tmp/", tmpMode),
		reg("data/xattr", 0o600, "attributes", xattr("user.foo", foo), xattr("security.capability", "\x01\x00\x00\x02\x20\x00\x00\x00"),
			xattr("trusted.t", "v"), xattr("system.dropped", "not stored by RAFS")),
		reg("data/gone", 0o644, "bye"),
		fifo("run/fifo"),
		dir("lib/", 0o755),
		reg("lib/a", 0o644, "shared"),
	)
	if changed {
		l1 = append(l1, reg("lib/b", 0o644, "shared"), reg("extra/file", 0o644, "extra"))
	} else {
		l1 = append(l1, hardlink("lib/b", "lib/a"))
	}
	l2 := []ent{
		reg("etc/.wh.passwd", 0o644, ""),
		reg("opt/old/.wh..wh..opq", 0o644, ""),
		reg("opt/old/new", 0o644, "new"),
		reg("etc/conf.d/c.conf", 0o644, "c=3\n"), // implicit parents keep 0750 1000:1000
		reg("bin/tool", 0o4755, "tool v2\n"),     // tool-link keeps v1
		reg("data/.wh.gone", 0o644, ""),
		reg("usr/share/doc/readme", 0o644, "read me"),
	}
	l3 := []ent{
		reg("etc/passwd", 0o644, "root:x:0:0::/root:/bin/bash\n", owner(passwdUID, 0)),
		dir("tmp/", tmpMode),
		reg("usr/.wh.share", 0o644, ""),
		reg("usr/bin/env", 0o755, "#!env\n"),
	}
	return [][]byte{tarOf(t, l1...), tarOf(t, l2...), tarOf(t, l3...)}
}

// Expected counts of the final filesystem of layers(false).
const (
	wantFiles = 10 // bin/tool, bin/tool-link, big/file, data/xattr, etc/conf.d/{a,c}.conf, etc/passwd, lib/a=b, opt/old/new, usr/bin/env
	wantDirs  = 14 // /, bin, big, data, dev, etc, etc/conf.d, lib, opt, opt/old, run, tmp, usr, usr/bin
)

var wantBytes = int64(len("tool v2\n") + len("tool v1\n") + len(bigFile) + len("attributes") + len("a=1\n") + len("c=3\n") +
	len("root:x:0:0::/root:/bin/bash\n") + len("shared") + len("new") + len("#!env\n"))

// ---- registry ----

type testRegistry struct {
	handler http.Handler
	host    string
}

func newRegistry(t testing.TB) *testRegistry {
	t.Helper()
	h := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &testRegistry{handler: h, host: strings.TrimPrefix(srv.URL, "http://")}
}

// serve starts another server in front of the same registry, with a
// middleware.
func (r *testRegistry) serve(t testing.TB, wrap func(http.Handler) http.Handler) string {
	srv := httptest.NewServer(wrap(r.handler))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

var ro = imageref.RegistryOptions{PlainHTTP: true, Keychain: authn.NewMultiKeychain(), RetryDelay: 10 * time.Millisecond, Retries: 1}

func parse(t testing.TB, s string) imageref.Ref {
	t.Helper()
	r, err := imageref.Parse(s, false, ro)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func pushOpts() []remote.Option { return []remote.Option{remote.WithAuth(authn.Anonymous)} }

// sourceImage builds the OCI image of tars: gzip layers, or for layer
// i the compression comps[i] ("gzip", "zstd" or "none").
func sourceImage(t testing.TB, tars [][]byte, comps ...string) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for i, tb := range tars {
		opener := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tb)), nil }
		var l v1.Layer
		var err error
		switch {
		case i < len(comps) && comps[i] == "none":
			l = static.NewLayer(tb, types.OCIUncompressedLayer)
		case i < len(comps) && comps[i] == "zstd":
			l, err = tarball.LayerFromOpener(opener, tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd))
		default:
			l, err = tarball.LayerFromOpener(opener, tarball.WithMediaType(types.OCILayer))
		}
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Env = []string{"PATH=/usr/bin:/bin"}
	cf.Config.Cmd = []string{"/bin/sh"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

func pushSource(t testing.TB, reg *testRegistry, repoTag string, tars [][]byte) (v1.Image, string) {
	t.Helper()
	img := sourceImage(t, tars)
	ref := reg.host + "/" + repoTag
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, pushOpts()...); err != nil {
		t.Fatal(err)
	}
	return img, ref
}

// nydusImage is a Nydus image built in the test, with the upstream
// registry layout: blob layers, then the bootstrap layer.
type nydusImage struct {
	manifest v1.Manifest
	config   v1.ConfigFile
	blobs    map[v1.Hash][]byte
}

func sha(b []byte) v1.Hash {
	s := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(s[:])}
}

// buildNydus converts layer tars the way the snapshotter does: one
// inline-meta blob per layer (nydus-image create --blob-inline-meta
// --features blob-toc --whiteout-spec none), then merge.
func buildNydus(t testing.TB, tars [][]byte, srcCfg *v1.ConfigFile) *nydusImage {
	t.Helper()
	ctx := context.Background()
	ni := &nydusImage{blobs: map[v1.Hash][]byte{}}
	var srcs []builder.MergeSource
	for i, tb := range tars {
		var out bytes.Buffer
		res, err := builder.Create(ctx, bytes.NewReader(tb), &out, builder.Options{
			InlineMeta: true, TOC: true, Whiteout: builder.WhiteoutNone, ChunkSize: 0x100000})
		if err != nil {
			t.Fatalf("layer %d: create: %v", i, err)
		}
		rd, err := rafs.Open(ctx, bytes.NewReader(res.Bootstrap), int64(len(res.Bootstrap)))
		if err != nil {
			t.Fatal(err)
		}
		if sha(out.Bytes()).Hex != res.BlobID {
			t.Fatalf("layer %d: blob id %s is not the blob's sha256", i, res.BlobID)
		}
		ni.blobs[sha(out.Bytes())] = out.Bytes()
		srcs = append(srcs, builder.MergeSource{Reader: rd, Path: res.BlobID})
	}
	merged, err := builder.Merge(ctx, srcs, builder.MergeOptions{})
	if err != nil {
		t.Fatalf("merge: %v", err)
	}
	var layers []v1.Descriptor
	var diffIDs []v1.Hash
	for _, id := range merged.Blobs {
		h := v1.Hash{Algorithm: "sha256", Hex: id}
		layers = append(layers, v1.Descriptor{MediaType: imageref.MediaTypeNydusBlob, Digest: h, Size: int64(len(ni.blobs[h])),
			Annotations: map[string]string{imageref.AnnotationNydusBlob: "true"}})
		diffIDs = append(diffIDs, h)
	}
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	tw.WriteHeader(&tar.Header{Name: "image", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: imageref.BootstrapPath, Typeflag: tar.TypeReg, Mode: 0o444, Size: int64(len(merged.Bootstrap))})
	tw.Write(merged.Bootstrap)
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw.Bytes())
	zw.Close()
	bootDigest := sha(gz.Bytes())
	ni.blobs[bootDigest] = gz.Bytes()
	layers = append(layers, v1.Descriptor{MediaType: types.OCILayer, Digest: bootDigest, Size: int64(gz.Len()),
		Annotations: map[string]string{imageref.AnnotationNydusBootstrap: "true", imageref.AnnotationFSVersion: "6"}})
	diffIDs = append(diffIDs, sha(raw.Bytes()))
	ni.config = *srcCfg.DeepCopy()
	ni.config.RootFS = v1.RootFS{Type: "layers", DiffIDs: diffIDs}
	ni.config.History = append(ni.config.History, v1.History{CreatedBy: "Nydus Converter", Comment: "Nydus Bootstrap Layer"})
	ni.manifest = v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Layers: layers}
	return ni
}

// clone deep-copies the manifest and config, for mutation.
func (ni *nydusImage) clone() *nydusImage {
	c := &nydusImage{blobs: ni.blobs, config: *ni.config.DeepCopy()}
	b, _ := json.Marshal(ni.manifest)
	json.Unmarshal(b, &c.manifest)
	return c
}

// raw returns the manifest and config bytes (setting the config
// descriptor).
func (ni *nydusImage) raw(t testing.TB) (man, cfg []byte) {
	t.Helper()
	cfg, err := json.Marshal(ni.config)
	if err != nil {
		t.Fatal(err)
	}
	ni.manifest.Config = v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: sha(cfg), Size: int64(len(cfg))}
	man, err = json.Marshal(ni.manifest)
	if err != nil {
		t.Fatal(err)
	}
	return man, cfg
}

type rawManifest struct {
	b  []byte
	mt types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.b, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

func putManifest(t testing.TB, ref string, b []byte, mt types.MediaType) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(r, rawManifest{b, mt}, pushOpts()...); err != nil {
		t.Fatalf("put %s: %v", ref, err)
	}
}

// push uploads the image's blobs and config and tags its manifest;
// it returns the manifest descriptor.
func (ni *nydusImage) push(t testing.TB, reg *testRegistry, repoTag string) (string, v1.Descriptor) {
	t.Helper()
	ref := reg.host + "/" + repoTag
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	man, cfg := ni.raw(t)
	for _, l := range ni.manifest.Layers {
		if b, ok := ni.blobs[l.Digest]; ok {
			if err := remote.WriteLayer(r.Context(), static.NewLayer(b, l.MediaType), pushOpts()...); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := remote.WriteLayer(r.Context(), static.NewLayer(cfg, types.OCIConfigJSON), pushOpts()...); err != nil {
		t.Fatal(err)
	}
	putManifest(t, ref, man, types.OCIManifestSchema1)
	return ref, v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: sha(man), Size: int64(len(man))}
}

// fixture is a source image and its Nydus conversion in one registry.
type fixture struct {
	reg      *testRegistry
	srcImg   v1.Image
	srcRef   string
	nydus    *nydusImage
	nydusRef string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	reg := newRegistry(t)
	tars := layers(t, false)
	img, srcRef := pushSource(t, reg, "app:oci", tars)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	ni := buildNydus(t, tars, cf)
	nydusRef, _ := ni.push(t, reg, "app:nydus")
	return &fixture{reg: reg, srcImg: img, srcRef: srcRef, nydus: ni, nydusRef: nydusRef}
}

func check(t testing.TB, src *imageref.Ref, tgt imageref.Ref, o Options) []Report {
	t.Helper()
	o.Source, o.Target = ro, ro
	reps, err := Check(context.Background(), src, tgt, o)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return reps
}

func one(t testing.TB, reps []Report) Report {
	t.Helper()
	if len(reps) != 1 {
		t.Fatalf("got %d reports, want 1", len(reps))
	}
	return reps[0]
}

func hasProblem(r Report, sub string) bool {
	for _, p := range r.Problems() {
		if strings.Contains(p, sub) {
			return true
		}
	}
	return false
}

// ---- tests ----

func TestCheckOK(t *testing.T) {
	f := newFixture(t)
	src := parse(t, f.srcRef)
	r := one(t, check(t, &src, parse(t, f.nydusRef), Options{}))
	if !r.OK() {
		t.Fatalf("check failed:\n%s", strings.Join(r.Problems(), "\n"))
	}
	if !r.Compared || len(r.Differences) != 0 {
		t.Fatalf("compared=%v differences=%v", r.Compared, r.Differences)
	}
	if r.Files != wantFiles || r.Dirs != wantDirs || r.Bytes != wantBytes || r.Symlinks != 1 || r.Others != 2 || r.Hardlinks != 1 {
		t.Errorf("counts: files %d dirs %d bytes %d symlinks %d others %d hardlinks %d; want %d %d %d 1 2 1",
			r.Files, r.Dirs, r.Bytes, r.Symlinks, r.Others, r.Hardlinks, wantFiles, wantDirs, wantBytes)
	}
	if r.Blobs != 3 || r.ChunksRead < 4 {
		t.Errorf("blobs %d, chunks read %d", r.Blobs, r.ChunksRead)
	}
	if r.Platform != "linux/"+runtime.GOARCH || r.SourceDigest == "" || r.Digest == "" {
		t.Errorf("report identity: %+v", r)
	}
	if len(r.Warnings) != 0 {
		t.Errorf("warnings: %v", r.Warnings)
	}

	// Without a source: no comparison, same verdict.
	r = one(t, check(t, nil, parse(t, f.nydusRef), Options{}))
	if !r.OK() || r.Compared || r.Files != wantFiles {
		t.Fatalf("check without source: ok=%v compared=%v files=%d: %v", r.OK(), r.Compared, r.Files, r.Problems())
	}
}

func TestTamperedBlob(t *testing.T) {
	f := newFixture(t)
	// The blob of the first layer holds /big/file; flip a byte of every
	// large response for it.
	blob := f.nydus.manifest.Layers[0].Digest.String()
	host := f.reg.serve(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			body := rec.Body.Bytes()
			if req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/blobs/"+blob) && len(body) >= 64<<10 {
				body = append([]byte(nil), body...)
				body[len(body)/2] ^= 0x01
			}
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			w.Write(body)
		})
	})
	src := parse(t, f.srcRef)
	tgt := parse(t, strings.Replace(f.nydusRef, f.reg.host, host, 1))
	r := one(t, check(t, &src, tgt, Options{}))
	if r.OK() {
		t.Fatal("a tampered blob passed the check")
	}
	named := false
	for _, e := range r.ChunkErrors {
		named = named || strings.HasPrefix(e, "/big/file: chunk ")
	}
	if !named {
		t.Fatalf("no chunk error names /big/file: %v", r.ChunkErrors)
	}
	for _, d := range r.Differences {
		if d.Path == "/big/file" {
			t.Errorf("unreadable file also reported as a difference: %v", d)
		}
	}
	t.Logf("chunk errors: %v", r.ChunkErrors)
}

func TestDifferences(t *testing.T) {
	f := newFixture(t)
	cf, _ := f.srcImg.ConfigFile()
	changed := buildNydus(t, layers(t, true), cf)
	ref, _ := changed.push(t, f.reg, "app:changed")
	src := parse(t, f.srcRef)
	r := one(t, check(t, &src, parse(t, ref), Options{}))
	if r.OK() || len(r.ManifestProblems) != 0 || len(r.ChunkErrors) != 0 || r.BootstrapErr != "" {
		t.Fatalf("want only differences, got: %v", r.Problems())
	}
	want := []Difference{
		{"/big/file", "content", "", ""},
		{"/bin/sh", "symlink", `"tool"`, `"busybox"`},
		{"/data/xattr", "xattrs", "", ""},
		{"/dev/null", "rdev", "1:3", "1:5"},
		{"/etc/conf.d/a.conf", "missing in target", "regular file, 4 bytes", ""},
		{"/etc/passwd", "uid", "0", "1"},
		{"/extra", "extra in target", "", "directory with 1 entries below"},
		{"/tmp", "mode", "1777", "0777"},
		{"/lib/a", "hardlinks", "hard-linked with /lib/b", "not hard-linked"},
	}
	if len(r.Differences) != len(want) {
		t.Errorf("got %d differences, want %d:\n%s", len(r.Differences), len(want), strings.Join(r.Problems(), "\n"))
	}
	for _, w := range want {
		found := false
		for _, d := range r.Differences {
			if d.Path == w.Path && d.Field == w.Field && (w.Source == "" || d.Source == w.Source) && (w.Target == "" || d.Target == w.Target) {
				found = true
			}
		}
		if !found {
			t.Errorf("missing difference %+v in:\n%s", w, strings.Join(r.Problems(), "\n"))
		}
	}
}

func TestManifestRules(t *testing.T) {
	f := newFixture(t)
	otherHash := sha([]byte("other"))
	cases := []struct {
		name   string
		mutate func(*nydusImage)
		want   string
	}{
		{"blob media type", func(n *nydusImage) { n.manifest.Layers[0].MediaType = types.OCILayer }, "has media type \"application/vnd.oci.image.layer.v1.tar+gzip\", want \"application/vnd.oci.image.layer.nydus.blob.v1\""},
		{"blob annotation", func(n *nydusImage) { delete(n.manifest.Layers[1].Annotations, imageref.AnnotationNydusBlob) }, "lacks annotation containerd.io/snapshot/nydus-blob"},
		{"bootstrap annotation", func(n *nydusImage) {
			delete(n.manifest.Layers[len(n.manifest.Layers)-1].Annotations, imageref.AnnotationNydusBootstrap)
		}, "is not the bootstrap layer"},
		{"bootstrap media type", func(n *nydusImage) {
			n.manifest.Layers[len(n.manifest.Layers)-1].MediaType = types.OCIUncompressedLayer
		}, `has media type "application/vnd.oci.image.layer.v1.tar", want`},
		{"fs version", func(n *nydusImage) {
			n.manifest.Layers[len(n.manifest.Layers)-1].Annotations[imageref.AnnotationFSVersion] = "5"
		}, "RAFS v5"},
		{"diff_ids count", func(n *nydusImage) { n.config.RootFS.DiffIDs = n.config.RootFS.DiffIDs[1:] }, "config lists 3 rootfs.diff_ids for 4 layers"},
		{"blob diff_id", func(n *nydusImage) { n.config.RootFS.DiffIDs[0] = otherHash }, "rootfs.diff_ids[0] is " + otherHash.String()},
		{"bootstrap diff_id", func(n *nydusImage) { n.config.RootFS.DiffIDs[3] = otherHash }, "its uncompressed tar has digest"},
		{"blob layer not in table", func(n *nydusImage) {
			n.manifest.Layers = append([]v1.Descriptor{n.manifest.Layers[0]}, n.manifest.Layers...)
			n.manifest.Layers[0].Digest = otherHash
			n.config.RootFS.DiffIDs = append([]v1.Hash{otherHash}, n.config.RootFS.DiffIDs...)
			n.blobs = map[v1.Hash][]byte{otherHash: []byte("other")}
			for k, v := range f.nydus.blobs {
				n.blobs[k] = v
			}
		}, "blob layer " + otherHash.String() + " is not referenced by the bootstrap"},
		{"blob missing from manifest", func(n *nydusImage) {
			n.manifest.Layers = n.manifest.Layers[1:]
			n.config.RootFS.DiffIDs = n.config.RootFS.DiffIDs[1:]
		}, "which is not a blob layer of the manifest"},
		{"config", func(n *nydusImage) { n.config.Config.Env = []string{"PATH=/nope"} }, "image config differs from the source's: Env"},
	}
	src := parse(t, f.srcRef)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ni := f.nydus.clone()
			c.mutate(ni)
			ref, _ := ni.push(t, f.reg, "app:rule"+string(rune('a'+i)))
			r := one(t, check(t, &src, parse(t, ref), Options{}))
			if r.OK() {
				t.Fatal("check passed")
			}
			if !hasProblem(r, c.want) {
				t.Fatalf("no problem mentions %q:\n%s", c.want, strings.Join(r.Problems(), "\n"))
			}
			if len(r.ManifestProblems) == 0 {
				t.Fatalf("not reported as a manifest problem: %v", r.Problems())
			}
		})
	}
}

func TestErrors(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	o := Options{Source: ro, Target: ro}
	src := parse(t, f.srcRef)

	expect := func(t *testing.T, err error, kind error, sub string) {
		t.Helper()
		if err == nil {
			t.Fatal("no error")
		}
		if kind != nil && !errors.Is(err, kind) {
			t.Errorf("error %q is not %v", err, kind)
		}
		if !strings.Contains(err.Error(), sub) {
			t.Errorf("error %q does not mention %q", err, sub)
		}
		if strings.ContainsAny(err.Error(), "\n") {
			t.Errorf("error is not one line: %q", err)
		}
		t.Log(err)
	}

	t.Run("not nydus", func(t *testing.T) {
		_, err := Check(ctx, nil, parse(t, f.srcRef), o)
		expect(t, err, ErrNotNydus, "is not a Nydus image")
	})
	t.Run("source is nydus", func(t *testing.T) {
		n := parse(t, f.nydusRef)
		_, err := Check(ctx, &n, n, o)
		expect(t, err, ErrSourceIsNydus, "is a Nydus image")
	})
	t.Run("unknown tag", func(t *testing.T) {
		_, err := Check(ctx, nil, parse(t, f.reg.host+"/app:nope"), o)
		expect(t, err, errdefs.ErrNotFound, "404")
	})
	t.Run("unknown source", func(t *testing.T) {
		s := parse(t, f.reg.host+"/other:latest")
		_, err := Check(ctx, &s, parse(t, f.nydusRef), o)
		expect(t, err, errdefs.ErrNotFound, `source "`)
	})
	t.Run("unreachable", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		_, err = Check(ctx, nil, parse(t, addr+"/app:nydus"), o)
		expect(t, err, errdefs.ErrUnavailable, "unreachable")
	})
	t.Run("unauthorized", func(t *testing.T) {
		host := f.reg.serve(t, func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if u, p, ok := r.BasicAuth(); !ok || u != "user" || p != "secret" {
					w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusUnauthorized)
					w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`))
					return
				}
				h.ServeHTTP(w, r)
			})
		})
		ref := parse(t, host+"/app:nydus")
		_, err := Check(ctx, nil, ref, o)
		expect(t, err, errdefs.ErrPermission, "401")

		// With credentials the same registry works.
		ao := o
		ao.Target.Keychain = staticKeychain{&authn.Basic{Username: "user", Password: "secret"}}
		ao.Source = ao.Target
		reps, err := Check(ctx, nil, ref, ao)
		if err != nil || !one(t, reps).OK() {
			t.Fatalf("with credentials: %v %v", err, reps)
		}
	})
	t.Run("platform", func(t *testing.T) {
		_, desc := f.nydus.push(t, f.reg, "app:nydus")
		desc.Platform = &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
		idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{desc}}
		b, _ := json.Marshal(idx)
		putManifest(t, f.reg.host+"/app:index", b, types.OCIImageIndex)
		po := o
		po.Platforms = []v1.Platform{{OS: "linux", Architecture: "s390x"}}
		_, err := Check(ctx, nil, parse(t, f.reg.host+"/app:index"), po)
		expect(t, err, ErrNoPlatform, "no Nydus manifest for linux/s390x (it has linux/"+runtime.GOARCH+")")
		// The default platform is found in the unmarked index.
		reps, err := Check(ctx, &src, parse(t, f.reg.host+"/app:index"), o)
		if err != nil || !one(t, reps).OK() {
			t.Fatalf("default platform: %v %v", err, reps)
		}
	})
	t.Run("nydusd", func(t *testing.T) {
		no := o
		no.Nydusd = "/usr/bin/nydusd"
		_, err := Check(ctx, nil, parse(t, f.nydusRef), no)
		expect(t, err, errdefs.ErrUnsupported, "not supported yet")
	})
}

type staticKeychain struct{ a authn.Authenticator }

func (k staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) { return k.a, nil }

// TestMergedIndex checks an index holding the OCI and the Nydus manifest
// (nydusify --merge-platform): without --source, the OCI manifest is the
// source.
func TestMergedIndex(t *testing.T) {
	f := newFixture(t)
	plat := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	srcDigest, _ := f.srcImg.Digest()
	srcSize, _ := f.srcImg.Size()
	ociDesc := v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: srcDigest, Size: srcSize, Platform: &plat}
	ni := f.nydus.clone()
	_, nd := ni.push(t, f.reg, "app:nydus-merged")
	nplat := plat
	nplat.OSFeatures = []string{imageref.OSFeatureNydus}
	nd.Platform, nd.ArtifactType = &nplat, imageref.ArtifactTypeNydus
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{ociDesc, nd}}
	b, _ := json.Marshal(idx)
	putManifest(t, f.reg.host+"/app:merged", b, types.OCIImageIndex)

	r := one(t, check(t, nil, parse(t, f.reg.host+"/app:merged"), Options{MultiPlatform: true}))
	if !r.OK() || !r.Compared || !strings.Contains(r.Source, "OCI manifest "+srcDigest.String()) {
		t.Fatalf("ok=%v compared=%v source=%q: %v", r.OK(), r.Compared, r.Source, r.Problems())
	}

	// Every Nydus manifest of the index: the same single one.
	r = one(t, check(t, nil, parse(t, f.reg.host+"/app:merged"), Options{AllPlatforms: true}))
	if !r.OK() || !r.Compared {
		t.Fatalf("all platforms: %v", r.Problems())
	}

	// A Nydus-only index fails the multi-platform rule.
	idx.Manifests = idx.Manifests[1:]
	b, _ = json.Marshal(idx)
	putManifest(t, f.reg.host+"/app:nydus-only", b, types.OCIImageIndex)
	r = one(t, check(t, nil, parse(t, f.reg.host+"/app:nydus-only"), Options{MultiPlatform: true}))
	if r.OK() || !hasProblem(r, "no OCI manifest for linux/"+runtime.GOARCH) || r.Compared {
		t.Fatalf("nydus-only index: %v", r.Problems())
	}
}

// TestOCILayout checks a Nydus image stored in an OCI layout directory
// against a source stored in another.
func TestOCILayout(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	ni := f.nydus.clone()
	man, cfg := ni.raw(t)
	write := func(b []byte) {
		if err := p.WriteBlob(sha(b), io.NopCloser(bytes.NewReader(b))); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range ni.manifest.Layers {
		write(ni.blobs[l.Digest])
	}
	write(cfg)
	write(man)
	if err := p.AppendDescriptor(v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: sha(man), Size: int64(len(man)),
		Annotations: map[string]string{imageref.RefNameAnnotation: "nydus"}}); err != nil {
		t.Fatal(err)
	}
	srcDir := t.TempDir()
	sp, err := layout.Write(srcDir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	// The same layers, uncompressed and zstd-compressed.
	if err := sp.AppendImage(sourceImage(t, layers(t, false), "none", "zstd", "gzip")); err != nil {
		t.Fatal(err)
	}
	src := parse(t, "oci:"+srcDir)
	r := one(t, check(t, &src, parse(t, "oci:"+dir+":nydus"), Options{}))
	if !r.OK() || !r.Compared || r.Files != wantFiles {
		t.Fatalf("ok=%v compared=%v files=%d: %v", r.OK(), r.Compared, r.Files, r.Problems())
	}
	if _, err := Check(context.Background(), nil, parse(t, "oci:"+dir+":missing"), Options{}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("missing tag: %v", err)
	}

	// The same layout as an OCI layout archive (--target-archive).
	archive := filepath.Join(t.TempDir(), "nydus.tar")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if err := tw.WriteHeader(&tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = os.WriteFile(archive, buf.Bytes(), 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
	tgt, err := imageref.Parse(archive, true, ro)
	if err != nil {
		t.Fatal(err)
	}
	r = one(t, check(t, &src, tgt, Options{}))
	if !r.OK() || !r.Compared || r.Files != wantFiles {
		t.Fatalf("archive: ok=%v compared=%v files=%d: %v", r.OK(), r.Compared, r.Files, r.Problems())
	}
}

// TestSourceTree checks the expected tree on its own: whiteouts, opaque
// directories, implicit parents, hard links and attributes.
func TestSourceTree(t *testing.T) {
	img := sourceImage(t, layers(t, false))
	var o Options
	o.defaults()
	root, warns, err := buildSourceTree(context.Background(), img, &o)
	if err == nil && len(warns) != 0 {
		t.Errorf("warnings: %v", warns)
	}
	if err != nil {
		t.Fatal(err)
	}
	get := func(p string) *fsNode {
		parts, _ := splitName(p)
		return find(root, parts)
	}
	for _, p := range []string{"/etc/passwd", "/etc/conf.d/a.conf", "/etc/conf.d/c.conf", "/opt/old/new", "/usr/bin/env", "/bin/tool-link", "/lib/b"} {
		if get(p) == nil {
			t.Errorf("%s is missing", p)
		}
	}
	for _, p := range []string{"/opt/old/x", "/opt/old/sub", "/data/gone", "/usr/share"} {
		if get(p) != nil {
			t.Errorf("%s was not deleted", p)
		}
	}
	if d := get("/etc/conf.d").ino; d.mode != rafs.ModeDir|0o750 || d.uid != 1000 || d.gid != 1000 {
		t.Errorf("implicit parent changed /etc/conf.d: %+v", d)
	}
	if get("/bin/tool").ino == get("/bin/tool-link").ino || get("/lib/a").ino != get("/lib/b").ino {
		t.Error("hard links wrong")
	}
	if d := get("/tmp").ino; d.mode != rafs.ModeDir|0o1777 {
		t.Errorf("/tmp mode %o", d.mode)
	}
	if x := get("/data/xattr").ino.xattrs; len(x) != 3 || x["user.foo"] != "bar" {
		t.Errorf("xattrs %v", x)
	}
	if d := get("/dev/null").ino; d.major != 1 || d.minor != 3 {
		t.Errorf("/dev/null %d:%d", d.major, d.minor)
	}

	// A whiteout never hides an entry of its own layer, whatever the
	// entry order.
	img = sourceImage(t, [][]byte{
		tarOf(t, reg("-x", 0o644, "old"), reg("d/f", 0o644, "old")),
		tarOf(t, reg("-x", 0o600, "new"), reg(".wh.-x", 0o644, ""), reg("d/g", 0o644, "g"), reg(".wh.d", 0o644, "")),
	})
	root, _, err = buildSourceTree(context.Background(), img, &o)
	if err != nil {
		t.Fatal(err)
	}
	if n := get("/-x"); n == nil || n.ino.mode&0o777 != 0o600 {
		t.Errorf("/-x: %+v", n)
	}
	if get("/d/f") != nil || get("/d/g") == nil {
		t.Error("whiteout of /d and re-creation in the same layer")
	}
}
