package imageref

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nydus-go/nydus/pkg/errdefs"
)

// RefNameAnnotation tags the images of an OCI layout's index.json.
const RefNameAnnotation = "org.opencontainers.image.ref.name"

// Image is an opened reference: an index or a single image.
type Image struct {
	// Ref is the reference as parsed.
	Ref Ref
	// Name is the registry reference used, nil for a layout. It differs
	// from Ref.Name after a retry over plain HTTP.
	Name name.Reference
	// Index is set for an image index, Image for a single image.
	Index v1.ImageIndex
	Image v1.Image
	// Digest and MediaType are the manifest's.
	Digest    v1.Hash
	MediaType types.MediaType
	// Dir is the OCI layout directory (an archive's extraction), "" for
	// a registry.
	Dir string
	// What names the image in messages, e.g. `source "REF"`.
	What string
	tmp  string
}

// OpenOptions tune Open.
type OpenOptions struct {
	// Role names the image in messages ("source", "target"); the
	// default is "image".
	Role string
	// TempDir is where an archive is extracted (default os.TempDir()).
	TempDir string
	// Log, if set, reports a retry over plain HTTP.
	Log *slog.Logger
}

// Open resolves ref to an image or an index: from the registry through
// c, from an OCI layout directory, or from an OCI layout archive
// (extracted under TempDir until Close). An insecure registry
// (SkipTLSVerify) that speaks plain HTTP is retried over HTTP. Errors
// are one line, name the image, and wrap an errdefs kind
// (ErrNotFound, ErrPermission, ErrUnavailable, ErrUnsupported).
func Open(ctx context.Context, ref Ref, c *Client, o OpenOptions) (*Image, error) {
	role := o.Role
	if role == "" {
		role = "image"
	}
	im := &Image{Ref: ref, What: fmt.Sprintf("%s %q", role, ref.String())}
	switch {
	case ref.Name != nil:
		im.Name = ref.Name
		desc, err := remote.Get(im.Name, c.Options(ctx)...)
		ro := c.RegistryOptions()
		if err != nil && !ro.PlainHTTP && ro.SkipTLSVerify && speaksPlainHTTP(err) {
			// Like upstream's nydusify, an insecure registry is retried
			// over plain HTTP.
			if plain, perr := name.ParseReference(ref.Name.String(), name.Insecure); perr == nil {
				if o.Log != nil {
					o.Log.Info("retrying over plain HTTP", "ref", ref.String(), "err", err)
				}
				if d, err2 := remote.Get(plain, c.Options(ctx)...); err2 == nil {
					im.Name, desc, err = plain, d, nil
				}
			}
		}
		if err != nil {
			return nil, Describe(im.What, im.Host(), err)
		}
		im.Digest, im.MediaType = desc.Digest, desc.MediaType
		switch {
		case desc.MediaType.IsIndex():
			im.Index, err = desc.ImageIndex()
		case desc.MediaType.IsImage():
			im.Image, err = desc.Image()
		default:
			return nil, Errorf(errdefs.ErrUnsupported, nil, "%s: unsupported manifest media type %q", im.What, desc.MediaType)
		}
		if err != nil {
			return nil, Describe(im.What, im.Host(), err)
		}
		return im, nil
	case ref.Dir != "":
		im.Dir = ref.Dir
	case ref.Archive != "":
		tmp, err := os.MkdirTemp(o.TempDir, "oci-archive-")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", im.What, err)
		}
		im.tmp, im.Dir = tmp, tmp
		if err := untar(ref.Archive, tmp); err != nil {
			im.Close()
			return nil, Errorf(nil, err, "%s: OCI layout archive %s: %v", im.What, ref.Archive, err)
		}
	default:
		return nil, Errorf(errdefs.ErrInvalid, nil, "%s: empty image reference", role)
	}
	if err := im.openLayout(); err != nil {
		im.Close()
		return nil, err
	}
	return im, nil
}

// Close removes an extracted archive.
func (im *Image) Close() error {
	if im == nil || im.tmp == "" {
		return nil
	}
	err := os.RemoveAll(im.tmp)
	im.tmp = ""
	return err
}

// Host returns the registry host, "" for a layout.
func (im *Image) Host() string {
	if im.Name != nil {
		return im.Name.Context().RegistryStr()
	}
	return ""
}

// Repository returns the registry repository, if the image is in one.
func (im *Image) Repository() (name.Repository, bool) {
	if im.Name == nil {
		return name.Repository{}, false
	}
	return im.Name.Context(), true
}

// speaksPlainHTTP reports errors after which upstream retries over HTTP.
func speaksPlainHTTP(err error) bool {
	return errors.Is(err, http.ErrSchemeMismatch) || errors.Is(err, syscall.ECONNREFUSED) ||
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}

func (im *Image) openLayout() error {
	p, err := layout.FromPath(im.Dir)
	if err != nil {
		return Errorf(errdefs.ErrNotFound, err, "%s: OCI layout %s: %v", im.What, im.Dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return Errorf(nil, err, "%s: OCI layout %s: %v", im.What, im.Dir, err)
	}
	mf, err := idx.IndexManifest()
	if err != nil {
		return Errorf(nil, err, "%s: OCI layout %s: %v", im.What, im.Dir, err)
	}
	var pick *v1.Descriptor
	var tags []string
	for i, d := range mf.Manifests {
		tag := d.Annotations[RefNameAnnotation]
		if tag != "" {
			tags = append(tags, tag)
		}
		if im.Ref.Tag != "" && tag != im.Ref.Tag {
			continue
		}
		if pick != nil && im.Ref.Tag == "" {
			return Errorf(errdefs.ErrInvalid, nil, "%s: OCI layout %s holds several images; name one with oci:%s:TAG (tags: %s)", im.What, im.Dir, im.Dir, strings.Join(tags, ", "))
		}
		pick = &mf.Manifests[i]
	}
	if pick == nil {
		if im.Ref.Tag == "" {
			return Errorf(errdefs.ErrNotFound, nil, "%s: OCI layout %s holds no image", im.What, im.Dir)
		}
		return Errorf(errdefs.ErrNotFound, nil, "%s: OCI layout %s has no image tagged %q", im.What, im.Dir, im.Ref.Tag)
	}
	im.Digest, im.MediaType = pick.Digest, pick.MediaType
	switch {
	case pick.MediaType.IsIndex():
		im.Index, err = idx.ImageIndex(pick.Digest)
	case pick.MediaType.IsImage():
		im.Image, err = idx.Image(pick.Digest)
	default:
		return Errorf(errdefs.ErrUnsupported, nil, "%s: unsupported manifest media type %q", im.What, pick.MediaType)
	}
	if err != nil {
		return Errorf(nil, err, "%s: OCI layout %s: %v", im.What, im.Dir, err)
	}
	return nil
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
