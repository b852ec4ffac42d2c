package checker

import (
	"archive/tar"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nydus-go/nydus/pkg/converter"
	"github.com/nydus-go/nydus/pkg/registry"
	"github.com/nydus-go/nydus/pkg/storage"
)

// refNameAnnotation tags the images of an OCI layout's index.json.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// opened is a resolved reference: an index or a single image, in a
// registry or an OCI layout directory.
type opened struct {
	role string // "target" or "source"
	ref  converter.Ref
	ro   converter.RegistryOptions

	index  v1.ImageIndex // set for an index
	image  v1.Image      // set for a single image
	digest v1.Hash

	rname name.Reference // registry reference (possibly switched to plain HTTP)
	dir   string
	tmp   string // extracted archive, removed by close
}

func (o *opened) close() {
	if o != nil && o.tmp != "" {
		os.RemoveAll(o.tmp)
	}
}

// what names the image in messages: `target "REF"`.
func (o *opened) what() string { return fmt.Sprintf("%s %q", o.role, o.ref.String()) }

func (o *opened) host() string {
	if o.rname != nil {
		return o.rname.Context().RegistryStr()
	}
	return ""
}

// openRef resolves ref.
func openRef(ctx context.Context, role string, ref converter.Ref, ro converter.RegistryOptions, log *slog.Logger) (*opened, error) {
	o := &opened{role: role, ref: ref, ro: ro}
	switch {
	case ref.Name != nil:
		o.rname = ref.Name
		desc, err := remote.Get(o.rname, ro.Remote(ctx)...)
		if err != nil && !ro.PlainHTTP && ro.SkipTLSVerify && retryPlainHTTP(err) {
			// Like upstream's check, an insecure registry is retried
			// over plain HTTP.
			if plain, perr := name.ParseReference(ref.Name.String(), name.Insecure); perr == nil {
				log.Info("retrying over plain HTTP", "ref", ref.String(), "err", err)
				if d, err2 := remote.Get(plain, ro.Remote(ctx)...); err2 == nil {
					o.rname, desc, err = plain, d, nil
					o.ro.PlainHTTP = true
				}
			}
		}
		if err != nil {
			return nil, describeRemote(o.what(), o.host(), err)
		}
		o.digest = desc.Digest
		switch {
		case desc.MediaType.IsIndex():
			o.index, err = desc.ImageIndex()
		case desc.MediaType.IsImage():
			o.image, err = desc.Image()
		default:
			return nil, newError(nil, nil, "%s: unsupported manifest media type %q", o.what(), desc.MediaType)
		}
		if err != nil {
			return nil, describeRemote(o.what(), o.host(), err)
		}
		return o, nil
	case ref.Dir != "":
		o.dir = ref.Dir
	case ref.Archive != "":
		tmp, err := os.MkdirTemp("", "nydus-check-")
		if err != nil {
			return nil, err
		}
		o.tmp, o.dir = tmp, tmp
		if err := untar(ref.Archive, tmp); err != nil {
			o.close()
			return nil, newError(nil, err, "%s: OCI layout archive %s: %v", o.what(), ref.Archive, err)
		}
	default:
		return nil, newError(nil, nil, "%s: empty image reference", role)
	}
	if err := o.openLayout(); err != nil {
		o.close()
		return nil, err
	}
	return o, nil
}

// retryPlainHTTP reports errors after which upstream retries over HTTP.
func retryPlainHTTP(err error) bool {
	return errors.Is(err, http.ErrSchemeMismatch) || errors.Is(err, syscall.ECONNREFUSED) ||
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}

func (o *opened) openLayout() error {
	p, err := layout.FromPath(o.dir)
	if err != nil {
		return newError(ErrNotFound, err, "%s: OCI layout %s: %v", o.what(), o.dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return newError(nil, err, "%s: OCI layout %s: %v", o.what(), o.dir, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return newError(nil, err, "%s: OCI layout %s: %v", o.what(), o.dir, err)
	}
	var pick *v1.Descriptor
	var tags []string
	for i, d := range im.Manifests {
		tag := d.Annotations[refNameAnnotation]
		if tag != "" {
			tags = append(tags, tag)
		}
		if o.ref.Tag != "" && tag != o.ref.Tag {
			continue
		}
		if pick != nil && o.ref.Tag == "" {
			return newError(nil, nil, "%s: OCI layout %s holds several images; name one with oci:%s:TAG (tags: %s)", o.what(), o.dir, o.dir, strings.Join(tags, ", "))
		}
		pick = &im.Manifests[i]
	}
	if pick == nil {
		if o.ref.Tag == "" {
			return newError(ErrNotFound, nil, "%s: OCI layout %s holds no image", o.what(), o.dir)
		}
		return newError(ErrNotFound, nil, "%s: OCI layout %s has no image tagged %q", o.what(), o.dir, o.ref.Tag)
	}
	o.digest = pick.Digest
	switch {
	case pick.MediaType.IsIndex():
		o.index, err = idx.ImageIndex(pick.Digest)
	case pick.MediaType.IsImage():
		o.image, err = idx.Image(pick.Digest)
	default:
		return newError(nil, nil, "%s: unsupported manifest media type %q", o.what(), pick.MediaType)
	}
	if err != nil {
		return newError(nil, err, "%s: OCI layout %s: %v", o.what(), o.dir, err)
	}
	return nil
}

// rangeReader returns a reader of the image's blobs by id.
func (o *opened) rangeReader(ctx context.Context) (storage.RangeReader, func(), error) {
	if o.rname == nil {
		fs := &storage.FileSource{Dir: filepath.Join(o.dir, "blobs", "sha256")}
		return fs, func() { fs.Close() }, nil
	}
	var base http.RoundTripper = o.ro.Transport
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		if o.ro.SkipTLSVerify {
			t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
		}
		base = t
	}
	c, err := registry.NewForRepository(ctx, o.rname.Context(), o.ro.Keychain, base)
	if err != nil {
		return nil, nil, describeRemote(o.what(), o.host(), err)
	}
	return c, func() {}, nil
}

// untar extracts an OCI layout archive (directories and regular files),
// refusing names that leave dir.
func untar(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		rel := filepath.Clean("/" + h.Name)
		if rel == "/" {
			continue
		}
		p := filepath.Join(dir, rel)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		}
	}
}

// isNydusDesc reports whether an index entry is marked as a Nydus
// manifest (artifactType, or the older os.features marker).
func isNydusDesc(d v1.Descriptor) bool {
	if d.ArtifactType == converter.ArtifactTypeNydus {
		return true
	}
	return d.Platform != nil && slices.Contains(d.Platform.OSFeatures, converter.OSFeatureNydus)
}

// isNydusManifest reports whether a manifest looks like a Nydus image:
// it has a Nydus blob or bootstrap layer, or the Nydus config type.
func isNydusManifest(mf *v1.Manifest) bool {
	if mf.Config.MediaType == converter.ManifestConfigNydus {
		return true
	}
	for _, l := range mf.Layers {
		if l.MediaType == converter.MediaTypeNydusBlob || l.Annotations[converter.AnnotationNydusBlob] == "true" ||
			l.Annotations[converter.AnnotationNydusBootstrap] == "true" {
			return true
		}
	}
	return false
}

// platformMatches reports whether p satisfies want; a want without a
// variant matches every variant.
func platformMatches(want v1.Platform, p *v1.Platform) bool {
	if p == nil {
		return false
	}
	return want.OS == p.OS && want.Architecture == p.Architecture && (want.Variant == "" || want.Variant == p.Variant)
}

func platformOfImage(img v1.Image) *v1.Platform {
	cf, err := img.ConfigFile()
	if err != nil || cf == nil {
		return nil
	}
	return cf.Platform()
}

// samePlatform compares os/arch/variant.
func samePlatform(a, b *v1.Platform) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.OS == b.OS && a.Architecture == b.Architecture && a.Variant == b.Variant
}

// isLayerMediaType reports the media types of ordinary OCI/Docker layers.
func isLayerMediaType(mt types.MediaType) bool {
	switch mt {
	case types.DockerLayer, types.DockerUncompressedLayer, types.OCILayer, types.OCILayerZStd,
		types.OCIUncompressedLayer, types.OCIRestrictedLayer, types.OCIUncompressedRestrictedLayer:
		return true
	}
	return false
}
