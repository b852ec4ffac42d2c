//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/nydus-go/nydus/internal/treetest"
)

// layoutImage returns the image tagged tag in the OCI layout dir.
func layoutImage(t *testing.T, dir, tag string) v1.Image {
	t.Helper()
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range m.Manifests {
		if d.Annotations["org.opencontainers.image.ref.name"] == tag {
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			return img
		}
	}
	t.Fatalf("no image %q in %s", tag, dir)
	return nil
}

// appliedTree applies an image's layers in order, as a container runtime
// does, and returns the tree with mtimes rounded to whole seconds (what
// an eStargz TOC keeps).
func appliedTree(t *testing.T, img v1.Image) treetest.Tree {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var tree treetest.Tree
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		up, err := treetest.FromTar(rc, treetest.Options{IgnoreRootAttrs: true})
		rc.Close()
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		if tree == nil {
			tree = up
			continue
		}
		delete(up, "/")
		tree = treetest.ApplyOCI(tree, up)
	}
	return roundMtimes(tree)
}

func roundMtimes(tr treetest.Tree) treetest.Tree {
	for _, e := range tr {
		e.Mtime = time.Unix(0, e.Mtime).Round(time.Second).UnixNano()
	}
	return tr
}

// TestEStargzByReference: the Debian curl image converted to eStargz by
// ctr-remote (stargz-snapshotter's converter) and pushed; a bootstrap
// built by our nydus-image from each eStargz layer (-t estargztoc-ref)
// and merged is all that is new: our nydusd mounts it with the registry
// backend, reading the eStargz layers themselves lazily (every chunk
// checked against the TOC's digest and record), its tree equals the
// source image's applied layers, and curl runs from it.
func TestEStargzByReference(t *testing.T) {
	e := newEnv(t, nil)
	src := e.reg.Host + "/debian:curl-oci"
	dst := e.reg.Host + "/debian:curl-esgz"
	srcImg := layoutImage(t, e.b.layout, "curl")
	sref, err := name.ParseReference(src, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(sref, srcImg); err != nil {
		t.Fatal(err)
	}
	e.mustCtr("image", "pull", "--plain-http", src)
	if _, err := run("ctr-remote", "-a", e.ctdSock, "image", "convert", "--estargz", "--oci", src, dst); err != nil {
		t.Fatal(err)
	}
	e.mustCtr("image", "push", "--plain-http", dst)

	dref, err := name.ParseReference(dst, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(dref)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(e.dir, "esgz")
	for _, d := range []string{"layers", "boots", "cache", "mnt"} {
		if err := os.MkdirAll(filepath.Join(work, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var boots []string
	var layerBytes int64
	for i, l := range layers {
		dg, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		// The layer is read here only to build its bootstrap; nydusd
		// reads it from the registry.
		lp := filepath.Join(work, "layers", dg.Hex)
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(lp)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(f, rc)
		rc.Close()
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		layerBytes += n
		boot := filepath.Join(work, "boots", dg.Hex)
		out, err := run(e.b.nydusImage, "create", "-t", "estargztoc-ref", "-B", boot, "-J", boot+".json", lp)
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		_ = out
		boots = append(boots, boot)
	}
	merged := filepath.Join(work, "image.boot")
	if _, err := run(e.b.nydusImage, append([]string{"merge", "-B", merged}, boots...)...); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(merged)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d eStargz layers, %d bytes; merged bootstrap %d bytes", len(layers), layerBytes, st.Size())
	os.RemoveAll(filepath.Join(work, "layers"))

	cfg := filepath.Join(work, "nydusd.json")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`{"device":{"backend":{"type":"registry","config":{"host":%q,"repo":"debian","scheme":"http","timeout":10,"connect_timeout":5,"retry_limit":2}},"cache":{"type":"blobcache","config":{"work_dir":%q}}},"mode":"direct","digest_validate":false,"enable_xattr":true,"amplify_io":1048576}`,
		e.reg.Host, filepath.Join(work, "cache"))), 0o644); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(work, "mnt")
	d := startProc(t, "nydusd", filepath.Join(work, "nydusd.log"), e.b.nydusd, "fuse", "--bootstrap", merged, "--config", cfg,
		"--mountpoint", mnt, "--apisock", filepath.Join(work, "api.sock"), "--log-level", "info")
	defer func() {
		unmountUnder(t, mnt)
		d.Stop(syscall.SIGTERM)
	}()
	waitFor(t, 20*time.Second, "the eStargz image mounted", func() bool { return len(fuseMountsUnder(mnt)) > 0 })

	got, err := treetest.FromDir(mnt, treetest.Options{IgnoreRootAttrs: true})
	if err != nil {
		t.Fatalf("walk the mount: %v\nnydusd log:\n%s", err, d.Tail())
	}
	want := appliedTree(t, srcImg)
	if diff := treetest.Diff(want, roundMtimes(got)); diff != "" {
		t.Fatalf("the mounted eStargz image differs from the source image:\n%s", diff)
	}
	out, err := exec.Command("chroot", mnt, "/usr/bin/curl", "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), curlVersion) {
		t.Fatalf("curl --version in the mounted image: %v\n%s", err, out)
	}
	t.Logf("curl ran from the eStargz layers: %s", lastLine(strings.SplitN(string(out), "\n", 2)[0]))
}
