package converter

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/registry"
)

// Build cache annotations. The cache image (docs/build-cache.md) is an OCI
// index with one manifest whose layers are converted blobs, most
// recently used first.
const (
	AnnotationCacheVersion = "containerd.io/snapshot/nydus-cache-version"
	AnnotationCacheChainID = "io.nydus-go.cache.chain-id"
	AnnotationCacheOptions = "io.nydus-go.cache.options"
	cacheVersion           = "nydus-go-v1"
	// MaxCacheRecords is the largest number of cache entries.
	MaxCacheRecords = 200
	emptyConfig     = "{}"
)

// BuildCache maps (layer ChainID, build options) to converted blobs kept
// in a registry repository, so conversions on any machine reuse them.
// Keys use the ChainID because a layer's blob depends on the layers
// below it (they are its deduplication dictionary). A BuildCache is only
// where the cache lives: each conversion reads it at its start and
// writes it back at its end, so one BuildCache serves any number of
// conversions, also at once (the last to write wins, as upstream).
type BuildCache struct {
	ref name.Reference
	c   *imageref.Client
	max int
}

// cacheRun is one conversion's copy of the build cache: the entries read
// at its start, reordered and extended as it goes.
type cacheRun struct {
	bc *BuildCache
	mu sync.Mutex // guards ents, fresh and dirty
	// ents are the entries, most recently used first.
	ents []cacheEntry
	// fresh holds entries added in this run, with their blob layers.
	fresh map[string]v1.Layer
	dirty bool
}

type cacheEntry struct {
	desc    v1.Descriptor
	chainID string
	options string
}

// cacheHit is a usable entry.
type cacheHit struct {
	desc v1.Descriptor
}

// NewBuildCache returns a cache stored at ref with at most maxRecords
// entries (1–200; 0 means 200).
func NewBuildCache(ref name.Reference, ro imageref.RegistryOptions, maxRecords int) (*BuildCache, error) {
	if maxRecords == 0 {
		maxRecords = MaxCacheRecords
	}
	if maxRecords < 1 || maxRecords > MaxCacheRecords {
		return nil, fmt.Errorf("invalid build cache size %d (want 1–%d)", maxRecords, MaxCacheRecords)
	}
	c, err := imageref.NewClient(ro)
	if err != nil {
		return nil, err
	}
	return &BuildCache{ref: ref, c: c, max: maxRecords}, nil
}

// open reads the cache image for one conversion; a missing one is an
// empty cache.
func (bc *BuildCache) open(ctx context.Context) (*cacheRun, error) {
	r := &cacheRun{bc: bc, fresh: map[string]v1.Layer{}}
	idx, err := remote.Index(bc.ref, bc.c.Options(ctx)...)
	if err != nil {
		var te *transport.Error
		if errors.As(err, &te) && (te.StatusCode == 404) {
			return r, nil
		}
		return nil, fmt.Errorf("build cache %s: %w", bc.ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("build cache %s: %w", bc.ref, err)
	}
	for _, d := range im.Manifests {
		if d.Annotations[AnnotationCacheVersion] != cacheVersion {
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("build cache %s: %w", bc.ref, err)
		}
		mf, err := img.Manifest()
		if err != nil {
			return nil, fmt.Errorf("build cache %s: %w", bc.ref, err)
		}
		for _, l := range mf.Layers {
			if l.MediaType != imageref.MediaTypeNydusBlob || l.Annotations[AnnotationCacheChainID] == "" {
				continue
			}
			r.ents = append(r.ents, cacheEntry{desc: l, chainID: l.Annotations[AnnotationCacheChainID], options: l.Annotations[AnnotationCacheOptions]})
		}
	}
	return r, nil
}

// lookup finds an entry and marks it most recently used.
func (r *cacheRun) lookup(chainID, options string) *cacheHit {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, e := range r.ents {
		if e.chainID == chainID && e.options == options {
			r.ents = append([]cacheEntry{e}, append(r.ents[:i:i], r.ents[i+1:]...)...)
			r.dirty = true
			return &cacheHit{desc: e.desc}
		}
	}
	return nil
}

// add records a newly converted layer.
func (r *cacheRun) add(chainID, options string, b *built) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := v1.Hash{Algorithm: "sha256", Hex: b.res.BlobDigest}
	d := v1.Descriptor{MediaType: imageref.MediaTypeNydusBlob, Digest: h, Size: b.res.BlobSize, Annotations: map[string]string{
		imageref.AnnotationNydusBlob:    "true",
		imageref.AnnotationSourceDigest: b.res.SourceDigest,
		AnnotationCacheChainID:          chainID,
		AnnotationCacheOptions:          options,
	}}
	for i, e := range r.ents {
		if e.chainID == chainID && e.options == options {
			r.ents = append(r.ents[:i], r.ents[i+1:]...)
			break
		}
	}
	r.ents = append([]cacheEntry{{desc: d, chainID: chainID, options: options}}, r.ents...)
	r.fresh[h.Hex] = b.blob
	r.dirty = true
}

// save writes the cache image back, keeping the most recent entries.
// pushedTo, if not nil, is the registry repository the conversion pushed
// its image to, and pushed the digests of the blobs that image lists:
// those the cache mounts from there instead of uploading them.
func (r *cacheRun) save(ctx context.Context, pushedTo *name.Repository, pushed map[string]bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	bc := r.bc
	if !r.dirty {
		return nil
	}
	if len(r.ents) > bc.max {
		r.ents = r.ents[:bc.max]
	}
	repo := bc.ref.Context()
	var layers []v1.Layer
	var descs []v1.Descriptor
	seen := map[v1.Hash]bool{}
	for _, e := range r.ents {
		if seen[e.desc.Digest] {
			continue
		}
		seen[e.desc.Digest] = true
		l, ok := r.fresh[e.desc.Digest.Hex]
		if ok && pushedTo != nil && pushed[e.desc.Digest.Hex] && pushedTo.RegistryStr() == repo.RegistryStr() {
			if rl, err := remote.Layer(pushedTo.Digest(e.desc.Digest.String()), bc.c.Options(ctx)...); err == nil {
				l = rl
			}
		}
		if !ok {
			rl, err := remote.Layer(repo.Digest(e.desc.Digest.String()), bc.c.Options(ctx)...)
			if err != nil {
				return err
			}
			l = rl
		}
		layers = append(layers, l)
		descs = append(descs, e.desc)
	}
	cfg := []byte(emptyConfig)
	man := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: v1.Hash{Algorithm: "sha256", Hex: sha256Hex(cfg)}, Size: int64(len(cfg))},
		Layers: descs, Annotations: map[string]string{AnnotationCacheVersion: cacheVersion}}
	raw, err := json.Marshal(man)
	if err != nil {
		return err
	}
	img := &nydusImage{manifest: raw, config: cfg, mt: types.OCIManifestSchema1, layers: layers}
	if err := remote.Write(repo.Digest("sha256:"+sha256Hex(raw)), img, bc.c.Options(ctx)...); err != nil {
		return fmt.Errorf("build cache %s: %w", bc.ref, err)
	}
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{{
		MediaType: types.OCIManifestSchema1, Digest: v1.Hash{Algorithm: "sha256", Hex: sha256Hex(raw)}, Size: int64(len(raw)),
		Annotations: map[string]string{AnnotationCacheVersion: cacheVersion},
	}}}
	rawIdx, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	if err := remote.Put(bc.ref, rawManifest{rawIdx, types.OCIImageIndex}, bc.c.Options(ctx)...); err != nil {
		return fmt.Errorf("build cache %s: %w", bc.ref, err)
	}
	r.dirty = false
	return nil
}

// useCached turns a cache entry into a converted layer: the blob is
// mounted from the cache repository, and its inline bootstrap and chunk
// info are read with a few range requests.
func (c *conv) useCached(ctx context.Context, hit *cacheHit, src v1.Layer, chainID string) (*built, error) {
	bc := c.cache.bc
	repo := bc.ref.Context()
	rl, err := remote.Layer(repo.Digest(hit.desc.Digest.String()), bc.c.Options(ctx)...)
	if err != nil {
		return nil, err
	}
	rr, err := registry.NewForRepository(ctx, repo, bc.c.RegistryOptions().Keychain, bc.c.Transport())
	if err != nil {
		return nil, err
	}
	br, err := blob.Open(rr.ReaderAt(ctx, hit.desc.Digest.String(), hit.desc.Size), hit.desc.Size)
	if err != nil {
		return nil, fmt.Errorf("cached blob %s: %w", hit.desc.Digest, err)
	}
	rawBoot, err := br.Bootstrap()
	if err != nil {
		return nil, fmt.Errorf("cached blob %s: %w", hit.desc.Digest, err)
	}
	boot, err := openLayerBootstrap(ctx, rawBoot, hit.desc.Digest.Hex)
	if err != nil {
		return nil, err
	}
	var meta []byte
	if len(br.ChunkInfos()) > 0 {
		if meta, err = br.MetaFile(); err != nil {
			return nil, fmt.Errorf("cached blob %s: %w", hit.desc.Digest, err)
		}
	}
	sd, _ := src.Digest()
	ss, _ := src.Size()
	return &built{
		res:  LayerResult{SourceDigest: sd.String(), SourceSize: ss, ChainID: chainID, BlobDigest: hit.desc.Digest.Hex, BlobSize: hit.desc.Size, Cached: true},
		blob: rl, boot: boot, meta: meta, chunked: meta != nil,
	}, nil
}

var _ = bytes.MinRead
