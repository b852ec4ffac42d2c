package daemon

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nydus-go/nydus/pkg/daemon/api"
	"github.com/nydus-go/nydus/pkg/errdefs"
	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// MountImageOptions tune MountImage. The zero value mounts the
// linux/GOARCH image of a registry reference over HTTPS with Docker's
// credentials, with a chunk cache in a temporary directory.
type MountImageOptions struct {
	// Registry configures registry access (PlainHTTP for a registry on
	// 127.0.0.1, credentials, TLS).
	Registry imageref.RegistryOptions
	// Platform selects the manifest of an index (default linux/GOARCH).
	Platform v1.Platform
	// WorkDir keeps the bootstrap and the chunk cache. Empty: a new
	// temporary directory, removed by Close.
	WorkDir string
	// Daemon configures the daemon (log, events, caches); its
	// Mountpoint is MountImage's.
	Daemon Options
}

// MountedImage is an image mounted by MountImage: its daemon, serving
// the image at the mountpoint until Close.
type MountedImage struct {
	*Daemon
	// Bootstrap is the path of the image's bootstrap file.
	Bootstrap string
	tmp       string
}

// Close unmounts the image, stops its daemon and removes a temporary
// work directory.
func (m *MountedImage) Close() error {
	err := m.Daemon.Close()
	if m.tmp != "" {
		err = errors.Join(err, os.RemoveAll(m.tmp))
	}
	return err
}

// MountImage mounts the Nydus image ref, in a registry, read-only at
// mountpoint: it reads the image's bootstrap from the registry and
// serves the files through FUSE in a dedicated daemon, fetching each
// chunk from the registry when it is first read and verifying it against
// its digest. It needs root (or FUSE rights) like nydusd.
func MountImage(ctx context.Context, ref, mountpoint string, o MountImageOptions) (*MountedImage, error) {
	r, err := imageref.Parse(ref, false, o.Registry)
	if err != nil {
		return nil, err
	}
	if !r.IsRegistry() {
		return nil, errdefs.Errorf(errdefs.ErrInvalid, "mount %s: a registry reference is needed (the blobs are read from the registry)", ref)
	}
	c, err := imageref.NewClient(o.Registry)
	if err != nil {
		return nil, err
	}
	im, err := imageref.Open(ctx, r, c, imageref.OpenOptions{Log: o.Daemon.Log})
	if err != nil {
		return nil, err
	}
	defer im.Close()
	plat := o.Platform
	if plat.OS == "" {
		plat = v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	}
	img, err := nydusManifest(im, plat)
	if err != nil {
		return nil, err
	}
	boot, err := imageref.ReadBootstrap(ctx, img, rafs.MaxMetadataSize)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", im.What, err)
	}
	m := &MountedImage{}
	dir := o.WorkDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "nydus-mount-"); err != nil {
			return nil, err
		}
		m.tmp = dir
	}
	fail := func(err error) (*MountedImage, error) {
		if m.tmp != "" {
			os.RemoveAll(m.tmp)
		}
		return nil, err
	}
	m.Bootstrap = filepath.Join(dir, "image.boot")
	if err := os.WriteFile(m.Bootstrap, boot, 0o600); err != nil {
		return fail(err)
	}
	cfg, err := registryConfig(im, o.Registry, filepath.Join(dir, "cache"))
	if err != nil {
		return fail(err)
	}
	do := o.Daemon
	do.Mountpoint = mountpoint
	d := New(do)
	if err := d.MountDedicated(ctx, m.Bootstrap, cfg, nil); err != nil {
		d.Close()
		return fail(err)
	}
	m.Daemon = d
	return m, nil
}

// nydusManifest picks the Nydus image for plat: the image itself, or the
// index entry for plat marked (or shaped) as a Nydus manifest.
func nydusManifest(im *imageref.Image, plat v1.Platform) (v1.Image, error) {
	if im.Image != nil {
		mf, err := im.Image.Manifest()
		if err != nil {
			return nil, imageref.Describe(im.What, im.Host(), err)
		}
		if !imageref.IsNydusManifest(mf) {
			return nil, errdefs.Errorf(errdefs.ErrInvalid, "%s is not a Nydus image (no Nydus blob or bootstrap layer)", im.What)
		}
		return im.Image, nil
	}
	idx, err := im.Index.IndexManifest()
	if err != nil {
		return nil, imageref.Describe(im.What, im.Host(), err)
	}
	for _, d := range idx.Manifests {
		p := d.Platform
		if p == nil || p.OS != plat.OS || p.Architecture != plat.Architecture || (plat.Variant != "" && p.Variant != plat.Variant) {
			continue
		}
		img, err := im.Index.Image(d.Digest)
		if err != nil {
			return nil, imageref.Describe(im.What, im.Host(), err)
		}
		if imageref.IsNydusDesc(d) {
			return img, nil
		}
		if mf, err := img.Manifest(); err == nil && imageref.IsNydusManifest(mf) {
			return img, nil
		}
	}
	return nil, errdefs.Errorf(errdefs.ErrNotFound, "%s has no Nydus manifest for %s/%s", im.What, plat.OS, plat.Architecture)
}

// registryConfig is the configuration nydus-snapshotter would write for
// the image: its registry as the backend (with the keychain's
// credentials for it, if any) and a blob cache in cacheDir.
func registryConfig(im *imageref.Image, ro imageref.RegistryOptions, cacheDir string) (*api.ConfigV1, error) {
	repo, _ := im.Repository()
	scheme := repo.Scheme()
	backend := map[string]any{"host": repo.RegistryStr(), "repo": repo.RepositoryStr(), "scheme": scheme, "skip_verify": ro.SkipTLSVerify}
	kc := ro.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	if a, err := kc.Resolve(repo); err == nil && a != authn.Anonymous {
		if cfg, err := a.Authorization(); err == nil && cfg.Username != "" {
			backend["auth"] = base64.StdEncoding.EncodeToString([]byte(cfg.Username + ":" + cfg.Password))
		}
	}
	raw, err := json.Marshal(map[string]any{
		"device": map[string]any{
			"backend": map[string]any{"type": "registry", "config": backend},
			"cache":   map[string]any{"type": "blobcache", "config": map[string]any{"work_dir": cacheDir}},
		},
		"mode":            "direct",
		"digest_validate": true,
	})
	if err != nil {
		return nil, err
	}
	cfg, unknown, err := api.ParseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("registry configuration: %w", err)
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("registry configuration: unknown fields %v", unknown)
	}
	return cfg, nil
}
