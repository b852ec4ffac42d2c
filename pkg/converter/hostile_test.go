package converter

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nydus-go/nydus/internal/nettest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

func gzipTar(t *testing.T, files []treetest.File) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(treetest.Tar(files))
	zw.Close()
	return b.Bytes()
}

// tarDir packs dir into an OCI layout archive.
func tarDir(t *testing.T, dir, out string) {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h, _ := tar.FileInfoHeader(fi, "")
		h.Name = rel
		tw.WriteHeader(h)
		if fi.Mode().IsRegular() {
			data, _ := os.ReadFile(p)
			tw.Write(data)
		}
		return nil
	})
	tw.Close()
	if err := os.WriteFile(out, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSubstitutedLayoutLayerRefused: an OCI layout (and the same layout
// as an archive) whose layer file was replaced by another valid gzip tar
// fails to convert, naming the layer, instead of converting and pushing
// with the original's nydus-source-digest.
func TestSubstitutedLayoutLayerRefused(t *testing.T) {
	r := registrytest.Start(t, registrytest.Options{})
	dir := t.TempDir()
	orig := gzipTar(t, []treetest.File{treetest.Reg("app", 0o644, []byte("the real one"))})
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(orig)), nil }, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	writeLayoutImage(t, dir, "v1", l)
	d, _ := l.Digest()
	blobPath := filepath.Join(dir, "blobs", "sha256", d.Hex)
	if _, err := os.Stat(blobPath); err != nil {
		t.Fatal(err)
	}
	// The unchanged layout converts.
	if _, err := Convert(context.Background(), ref(t, "oci:"+dir+":v1"), ref(t, r.Host+"/app:ok"), testOptions(t)); err != nil {
		t.Fatal(err)
	}
	evil := gzipTar(t, []treetest.File{treetest.Reg("app", 0o755, []byte("#!/bin/sh\necho owned\n"))})
	if err := os.WriteFile(blobPath, evil, 0o644); err != nil {
		t.Fatal(err)
	}
	err = convertErr(t, "oci:"+dir+":v1", r.Host+"/app:evil", testOptions(t))
	if !strings.Contains(err.Error(), d.String()) || !strings.Contains(err.Error(), "the manifest says") {
		t.Fatalf("substituted layer: %v", err)
	}
	arch := filepath.Join(t.TempDir(), "layout.tar")
	tarDir(t, dir, arch)
	src, _ := imageref.Parse(arch, true, plain)
	_, err = Convert(context.Background(), src, ref(t, r.Host+"/app:evil2"), testOptions(t))
	if err == nil || !strings.Contains(err.Error(), d.String()) || !strings.Contains(err.Error(), "the manifest says") {
		t.Fatalf("substituted layer in an archive: %v", err)
	}
	for _, tag := range []string{"evil", "evil2"} {
		if _, err := remote.Head(ref(t, r.Host+"/app:"+tag).Name, plainC.Options(context.Background())...); err == nil {
			t.Fatalf("app:%s was pushed from a substituted layer", tag)
		}
	}
}

// TestSilentRegistryTimesOut: a registry that accepts TCP connections and
// never answers fails the conversion after the response-header timeout,
// over HTTPS and over plain HTTP, instead of hanging.
func TestSilentRegistryTimesOut(t *testing.T) {
	host := nettest.Silent(t)
	for _, plainHTTP := range []bool{false, true} {
		o := testOptions(t)
		o.Source = imageref.RegistryOptions{PlainHTTP: plainHTTP, ResponseHeaderTimeout: time.Second, ConnectTimeout: time.Second, Retries: 1, RetryDelay: 10 * time.Millisecond}
		src, err := imageref.Parse(host+"/app:1", false, o.Source)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_, err = Convert(ctx, src, ref(t, "oci:"+t.TempDir()+":x"), o)
		hung := ctx.Err() != nil
		cancel()
		took := time.Since(start)
		if err == nil || hung || took > 30*time.Second {
			t.Fatalf("plain HTTP %v: %v after %s", plainHTTP, err, took)
		}
		if !strings.Contains(err.Error(), host) {
			t.Errorf("the error does not name the registry: %v", err)
		}
		t.Logf("plain HTTP %v: failed after %s: %v", plainHTTP, took.Round(time.Millisecond), err)
	}
}
