package converter

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nydus-go/nydus/internal/atomicfile"
	"github.com/nydus-go/nydus/pkg/imageref"
)

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// indexEntry is one manifest of a written index.
type indexEntry struct {
	desc   v1.Descriptor
	source bool // the source manifest (merge-platform)
	nydus  bool
}

// writer stores converted images in a registry, an OCI layout directory
// or an OCI layout archive.
type writer struct {
	ref     imageref.Ref
	c       *imageref.Client
	ctx     context.Context
	lp      layout.Path
	archDir string
}

func newWriter(ctx context.Context, ref imageref.Ref, c *imageref.Client, work string) (*writer, error) {
	w := &writer{ref: ref, c: c, ctx: ctx}
	dir := ref.Dir
	if ref.Archive != "" {
		d, err := os.MkdirTemp(work, "target-archive-")
		if err != nil {
			return nil, err
		}
		w.archDir, dir = d, d
	}
	if dir != "" {
		p, err := layout.FromPath(dir)
		if err != nil {
			if p, err = layout.Write(dir, empty.Index); err != nil {
				return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
			}
		}
		w.lp = p
	}
	return w, nil
}

func (w *writer) tagAnnotations() map[string]string {
	if w.ref.Tag == "" && w.ref.Archive == "" {
		return nil
	}
	tag := w.ref.Tag
	if tag == "" {
		tag = "latest"
	}
	return map[string]string{"org.opencontainers.image.ref.name": tag}
}

// writeImage stores an image under the target's tag and returns its
// manifest digest.
func (w *writer) writeImage(ctx context.Context, img *nydusImage) (v1.Hash, error) {
	d, err := img.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	if w.ref.Name != nil {
		if err := remote.Write(w.ref.Name, img, w.c.Options(ctx)...); err != nil {
			return v1.Hash{}, fmt.Errorf("push %s: %w", w.ref, err)
		}
		return d, nil
	}
	if err := w.lp.AppendImage(img, layout.WithAnnotations(w.tagAnnotations())); err != nil {
		return v1.Hash{}, fmt.Errorf("write %s: %w", w.ref, err)
	}
	return d, nil
}

// writeManifestOnly stores an image by digest (for an index).
func (w *writer) writeManifestOnly(ctx context.Context, img v1.Image) (v1.Descriptor, error) {
	d, err := img.Digest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	raw, _ := img.RawManifest()
	mt, _ := img.MediaType()
	desc := v1.Descriptor{MediaType: mt, Digest: d, Size: int64(len(raw))}
	if w.ref.Name != nil {
		if err := remote.Write(w.ref.Name.Context().Digest(d.String()), img, w.c.Options(ctx)...); err != nil {
			return desc, fmt.Errorf("push %s@%s: %w", w.ref.Name.Context(), d, err)
		}
		return desc, nil
	}
	if err := w.lp.WriteImage(img); err != nil {
		return desc, fmt.Errorf("write %s: %w", w.ref, err)
	}
	return desc, nil
}

// rawManifest is a manifest or index to push as is.
type rawManifest struct {
	b  []byte
	mt types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.b, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// writeIndex writes an index of the entries under the target's tag.
// Source entries (merge-platform) are copied to the target first.
func (w *writer) writeIndex(ctx context.Context, entries []indexEntry, s *imageref.Image) (v1.Hash, error) {
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for _, e := range entries {
		d := e.desc
		if e.source {
			img, err := sourceImage(s, d.Digest)
			if err != nil {
				return v1.Hash{}, err
			}
			if _, err := w.writeManifestOnly(ctx, img); err != nil {
				return v1.Hash{}, err
			}
		}
		if e.nydus {
			d.ArtifactType = imageref.ArtifactTypeNydus
			if d.Platform != nil {
				p := *d.Platform
				p.OSFeatures = append(append([]string(nil), p.OSFeatures...), imageref.OSFeatureNydus)
				d.Platform = &p
			}
		}
		idx.Manifests = append(idx.Manifests, d)
	}
	raw, err := json.Marshal(idx)
	if err != nil {
		return v1.Hash{}, err
	}
	h := v1.Hash{Algorithm: "sha256", Hex: sha256Hex(raw)}
	if w.ref.Name != nil {
		if err := remote.Put(w.ref.Name, rawManifest{raw, types.OCIImageIndex}, w.c.Options(ctx)...); err != nil {
			return v1.Hash{}, fmt.Errorf("push index %s: %w", w.ref, err)
		}
		return h, nil
	}
	if err := w.lp.WriteBlob(h, io.NopCloser(bytes.NewReader(raw))); err != nil {
		return v1.Hash{}, err
	}
	desc := v1.Descriptor{MediaType: types.OCIImageIndex, Digest: h, Size: int64(len(raw)), Annotations: w.tagAnnotations()}
	if err := w.lp.AppendDescriptor(desc); err != nil {
		return v1.Hash{}, err
	}
	return h, nil
}

func sourceImage(s *imageref.Image, d v1.Hash) (v1.Image, error) {
	if s.Index != nil {
		return s.Index.Image(d)
	}
	return s.Image, nil
}

// finish packs an archive target.
func (w *writer) finish() error {
	if w.archDir == "" {
		return nil
	}
	f, err := atomicfile.Create(w.ref.Archive, 0o644)
	if err != nil {
		return err
	}
	defer f.Abort()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(w.archDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(w.archDir, p)
		if rel == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			in, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, in)
			in.Close()
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		return fmt.Errorf("write archive %s: %w", w.ref.Archive, err)
	}
	return f.Commit()
}

// writeLayers makes sure the target holds layers that an image reads
// without listing them (a zran image's original gzip layers): a
// registry gets each one it lacks mounted from the source repository
// when both are on the same registry, else copied; a layout gets the
// blobs written.
func (w *writer) writeLayers(ctx context.Context, layers []v1.Layer) error {
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		if w.ref.Name != nil {
			if err := remote.WriteLayer(w.ref.Name.Context(), l, w.c.Options(ctx)...); err != nil {
				return fmt.Errorf("push the original layer %s to %s: %w", d, w.ref.Name.Context(), err)
			}
			continue
		}
		if rc, err := w.lp.Blob(d); err == nil {
			rc.Close()
			continue
		}
		rc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("original layer %s: %w", d, err)
		}
		err = w.lp.WriteBlob(d, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("write the original layer %s to %s: %w", d, w.ref, err)
		}
	}
	return nil
}
