package converter

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/nydus-go/nydus/internal/version"
	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/chunkdict"
	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/registry"
)

// Options configure a conversion. The zero value converts the image for
// the running platform with upstream's defaults.
type Options struct {
	// Platforms selects manifests of an index (default linux/GOARCH).
	Platforms []v1.Platform
	// AllPlatforms converts every manifest of an index.
	AllPlatforms bool
	// MergePlatform writes an index holding the source manifests and
	// the Nydus ones (marked with artifactType and os.features).
	MergePlatform bool
	// OCI writes OCI media types for Docker sources.
	OCI bool
	// Compressor, CompressionLevel, ChunkSize, BatchSize and BatchLimit
	// are passed to the builder (defaults: zstd, level 3, 1 MiB, no
	// batches; see builder.Options).
	Compressor       compress.Algorithm
	CompressionLevel int
	ChunkSize        uint32
	BatchSize        uint32
	BatchLimit       uint32
	// Digester hashes chunks (default blake3).
	Digester digester.Algorithm
	// Prefetch lists absolute paths for the prefetch table; their files
	// also go first in each layer's blob, in list order (the hot set).
	Prefetch []string
	// Independent packs every layer on its own, like upstream, instead
	// of against the chunks of the layers below it.
	Independent bool
	// OCIRef builds a zran image (upstream nydusify --oci-ref): the
	// source's gzip layers are not recompressed or copied; each gets a
	// small ref blob (its zran chunk-info table and bootstrap) and the
	// image reads the original layers, which must be in the target's
	// repository: they are mounted or copied there when they are not.
	// Chunk dictionaries, the dedup scope and batches do not apply.
	OCIRef bool
	// ZranSpan is the zran checkpoint spacing in compressed bytes (0:
	// zran.DefaultSpan); a context holds about half of it.
	ZranSpan int64
	// ChunkDict is another Nydus image whose chunks are reused. When set,
	// the dedup scope's dictionary is not read (it is still updated).
	ChunkDict *ChunkDict
	// DedupScope lists the repositories whose chunk dictionaries the
	// conversion dedups against (default: the target repository). The
	// target repository's dictionary gets the converted image's chunks.
	DedupScope []name.Repository
	// NoDedupScope turns the dedup scope off: no dictionary is read or
	// updated (nydusify --dedup-scope none).
	NoDedupScope bool
	// MaxDictChunks bounds a merged dictionary (default
	// chunkdict.DefaultMaxChunks): the most referenced chunks stay.
	MaxDictChunks int
	// Cache is the build cache (nil: none).
	Cache *BuildCache
	// WorkDir holds temporary blobs (default: the OS temp dir).
	WorkDir string
	// Source and Target configure registry access.
	Source, Target imageref.RegistryOptions
	// Concurrency bounds layer downloads in flight (default 3).
	Concurrency int
	// Events receives progress events (nil: none).
	Events func(Event)
	// Log receives diagnostics (nil: discarded).
	Log *slog.Logger
}

// Event reports conversion progress.
type Event struct {
	// Kind is "layer-start", "layer-progress", "layer-done",
	// "layer-cached", "push-start", "push-done".
	Kind     string
	Platform string
	Layer    int
	Layers   int
	Digest   string
	Bytes    int64
	Total    int64
}

// LayerResult describes one converted layer.
type LayerResult struct {
	SourceDigest string        `json:"source_digest"`
	SourceSize   int64         `json:"source_size"`
	ChainID      string        `json:"chain_id"`
	BlobDigest   string        `json:"blob_digest"`
	BlobSize     int64         `json:"blob_size"`
	Cached       bool          `json:"cached"`
	InImage      bool          `json:"in_image"`
	Stats        builder.Stats `json:"stats"`
}

// ImageResult describes one converted platform image.
type ImageResult struct {
	Platform       string        `json:"platform"`
	SourceDigest   string        `json:"source_digest"`
	TargetDigest   string        `json:"target_digest"`
	Layers         []LayerResult `json:"layers"`
	SourceSize     int64         `json:"source_size"`
	NydusSize      int64         `json:"nydus_size"`
	BootstrapSize  int64         `json:"bootstrap_size"`
	DedupBytes     uint64        `json:"dedup_bytes"`
	DictBlobs      []string      `json:"chunk_dict_blobs,omitempty"`
	ConvertSeconds float64       `json:"convert_seconds"`
}

// Result describes a conversion.
type Result struct {
	Source       string        `json:"source"`
	Target       string        `json:"target"`
	SourceDigest string        `json:"source_digest"`
	TargetDigest string        `json:"target_digest"`
	Images       []ImageResult `json:"images"`
	Seconds      float64       `json:"seconds"`
}

func (o *Options) defaults() {
	if o.ChunkSize == 0 {
		o.ChunkSize = rafs.DefaultChunkSize
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 3
	}
	if o.MaxDictChunks <= 0 {
		o.MaxDictChunks = chunkdict.DefaultMaxChunks
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Events == nil {
		o.Events = func(Event) {}
	}
	if len(o.Platforms) == 0 && !o.AllPlatforms {
		o.Platforms = []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}}
	}
}

func (o *Options) wants(p *v1.Platform) bool {
	if o.AllPlatforms {
		return true
	}
	if p == nil {
		return false
	}
	for _, w := range o.Platforms {
		if imageref.PlatformMatches(w, p) {
			return true
		}
	}
	return false
}

// Convert converts the image at src into a Nydus image at dst.
func Convert(ctx context.Context, src, dst imageref.Ref, o Options) (*Result, error) {
	start := time.Now()
	o.defaults()
	work, err := os.MkdirTemp(o.WorkDir, "nydus-convert-")
	if err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	defer os.RemoveAll(work)
	srcC, err := imageref.NewClient(o.Source)
	if err != nil {
		return nil, err
	}
	dstC, err := imageref.NewClient(o.Target)
	if err != nil {
		return nil, err
	}
	s, err := imageref.Open(ctx, src, srcC, imageref.OpenOptions{Role: "source", TempDir: work, Log: o.Log})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	res := &Result{Source: src.String(), Target: dst.String(), SourceDigest: s.Digest.String()}
	c := &conv{o: &o, work: work, src: s, srcC: srcC, dst: dst, dstC: dstC}
	if o.Cache != nil {
		if c.cache, err = o.Cache.open(ctx); err != nil {
			return nil, err
		}
	}
	if o.OCIRef && (o.ChunkDict != nil || o.Cache != nil || o.BatchSize != 0) {
		return nil, errors.New("--oci-ref reads the original gzip layers: it takes no chunk dictionary, build cache or batch size")
	}
	var scope *scopeDict
	if !o.NoDedupScope && !o.OCIRef && dst.Name != nil {
		scope = &scopeDict{}
		if o.ChunkDict == nil {
			if scope, err = c.loadScope(ctx); err != nil {
				return nil, err
			}
		}
	}

	type target struct {
		srcDesc v1.Descriptor
		img     *nydusImage
		res     ImageResult
	}
	var targets []target
	if s.Index != nil {
		im, err := s.Index.IndexManifest()
		if err != nil {
			return nil, fmt.Errorf("%s: index: %w", src, err)
		}
		var avail []string
		for _, d := range im.Manifests {
			avail = append(avail, imageref.PlatformString(d.Platform))
			if !d.MediaType.IsImage() || !o.wants(d.Platform) {
				continue
			}
			img, err := s.Index.Image(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("%s: manifest %s: %w", src, d.Digest, err)
			}
			ni, ir, err := c.convertImage(ctx, img, d.Platform)
			if err != nil {
				return nil, err
			}
			targets = append(targets, target{d, ni, *ir})
		}
		if len(targets) == 0 {
			var want []string
			for i := range o.Platforms {
				want = append(want, imageref.PlatformString(&o.Platforms[i]))
			}
			return nil, fmt.Errorf("%s: index has no manifest for %s (it has %s)", src, strings.Join(want, ","), strings.Join(avail, ", "))
		}
	} else {
		cf, err := s.Image.ConfigFile()
		if err != nil {
			return nil, fmt.Errorf("%s: config: %w", src, err)
		}
		p := cf.Platform()
		ni, ir, err := c.convertImage(ctx, s.Image, p)
		if err != nil {
			return nil, err
		}
		size, _ := s.Image.Size()
		targets = append(targets, target{v1.Descriptor{MediaType: s.MediaType, Digest: s.Digest, Size: size, Platform: p}, ni, *ir})
	}

	// Write the target.
	w, err := newWriter(ctx, dst, dstC, work)
	if err != nil {
		return nil, err
	}
	for _, t := range targets {
		if err := w.writeLayers(ctx, t.img.refs); err != nil {
			return nil, err
		}
	}
	if s.Index == nil && !o.MergePlatform {
		d, err := w.writeImage(ctx, targets[0].img)
		if err != nil {
			return nil, err
		}
		targets[0].res.TargetDigest = d.String()
		res.TargetDigest = d.String()
	} else {
		var entries []indexEntry
		if o.MergePlatform {
			for _, t := range targets {
				entries = append(entries, indexEntry{desc: t.srcDesc, source: true})
			}
		}
		for i, t := range targets {
			d, err := w.writeManifestOnly(ctx, t.img)
			if err != nil {
				return nil, err
			}
			targets[i].res.TargetDigest = d.Digest.String()
			d.Platform = t.srcDesc.Platform
			entries = append(entries, indexEntry{desc: d, nydus: true})
		}
		dgst, err := w.writeIndex(ctx, entries, s)
		if err != nil {
			return nil, err
		}
		res.TargetDigest = dgst.String()
	}
	if err := w.finish(); err != nil {
		return nil, err
	}
	for _, t := range targets {
		res.Images = append(res.Images, t.res)
	}
	if scope != nil {
		var boots [][]byte
		for _, t := range targets {
			boots = append(boots, t.img.boot)
		}
		c.contribute(ctx, scope, boots)
	}
	if c.cache != nil {
		var pushedTo *name.Repository
		pushed := map[string]bool{}
		if dst.Name != nil {
			repo := dst.Name.Context()
			pushedTo = &repo
			for _, t := range targets {
				for _, l := range t.img.layers {
					if d, err := l.Digest(); err == nil {
						pushed[d.Hex] = true
					}
				}
			}
		}
		if err := c.cache.save(ctx, pushedTo, pushed); err != nil {
			return nil, fmt.Errorf("update build cache: %w", err)
		}
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// conv holds the state of one conversion.
type conv struct {
	o    *Options
	work string
	src  *imageref.Image
	srcC *imageref.Client
	dst  imageref.Ref
	dstC *imageref.Client
	// cache is this conversion's copy of the build cache (nil: none).
	cache *cacheRun
}

// built is one layer after conversion.
type built struct {
	res     LayerResult
	blob    v1.Layer // the blob to push
	boot    *rafs.Reader
	meta    []byte // <id>.blob.meta cache file (nil if no chunks)
	chunked bool
	// For a zran layer (OCIRef): the original gzip layer the bootstrap
	// reads (blob id dataID), blob is its ref blob.
	orig   v1.Layer
	dataID string
	toc    builder.MergeSource // the ref blob's ToC digest and size
}

// platformImage is one platform image of the source, checked: its
// manifest, config and layers, and each layer's ChainID.
type platformImage struct {
	plat   string
	digest v1.Hash
	mf     *v1.Manifest
	rawCfg []byte
	layers []v1.Layer
	chains []v1.Hash
}

// convertImage converts one platform image in four stages: inspect the
// source, fetch and build its layers (fetching ahead while building in
// order), merge their bootstraps, and assemble the Nydus image.
func (c *conv) convertImage(ctx context.Context, img v1.Image, p *v1.Platform) (*nydusImage, *ImageResult, error) {
	start := time.Now()
	si, err := c.inspect(img, p)
	if err != nil {
		return nil, nil, err
	}
	done, err := c.buildLayers(ctx, si)
	if err != nil {
		return nil, nil, err
	}
	merged, err := c.merge(ctx, si, done)
	if err != nil {
		return nil, nil, err
	}
	ni, ir, err := c.assemble(si, done, merged)
	if err != nil {
		return nil, nil, err
	}
	ir.ConvertSeconds = time.Since(start).Seconds()
	return ni, ir, nil
}

// inspect reads and checks one platform image of the source: ordinary
// OCI or Docker layers, one diff_id each.
func (c *conv) inspect(img v1.Image, p *v1.Platform) (*platformImage, error) {
	si := &platformImage{plat: imageref.PlatformString(p)}
	var err error
	if si.digest, err = img.Digest(); err != nil {
		return nil, err
	}
	if si.mf, err = img.Manifest(); err != nil {
		return nil, fmt.Errorf("%s (%s): manifest: %w", c.src.Ref, si.plat, err)
	}
	if si.rawCfg, err = img.RawConfigFile(); err != nil {
		return nil, fmt.Errorf("%s (%s): config: %w", c.src.Ref, si.plat, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("%s (%s): config: %w", c.src.Ref, si.plat, err)
	}
	if si.layers, err = img.Layers(); err != nil {
		return nil, fmt.Errorf("%s (%s): layers: %w", c.src.Ref, si.plat, err)
	}
	for i, l := range si.layers {
		mt, err := l.MediaType()
		if err != nil {
			return nil, err
		}
		switch mt {
		case types.DockerLayer, types.OCILayer:
		case types.OCIUncompressedLayer, types.OCILayerZStd, types.DockerUncompressedLayer:
			if c.o.OCIRef {
				return nil, fmt.Errorf("%s (%s): layer %d is %s: --oci-ref reads gzip layers in place (zran), other layers cannot be read at random; convert without --oci-ref", c.src.Ref, si.plat, i, mt)
			}
		case imageref.MediaTypeNydusBlob:
			return nil, fmt.Errorf("%s (%s): layer %d is already a Nydus blob: the source is a Nydus image", c.src.Ref, si.plat, i)
		default:
			return nil, fmt.Errorf("%s (%s): layer %d has unsupported media type %q", c.src.Ref, si.plat, i, mt)
		}
	}
	if len(cf.RootFS.DiffIDs) != len(si.layers) {
		return nil, fmt.Errorf("%s (%s): config lists %d diff_ids for %d layers", c.src.Ref, si.plat, len(cf.RootFS.DiffIDs), len(si.layers))
	}
	si.chains = chainIDs(cf.RootFS.DiffIDs)
	return si, nil
}

// buildLayers converts the layers in order, each against the chunks of
// those below it (unless Independent) and of the chunk dictionary; it
// downloads layers ahead, Concurrency at a time, and takes the ones the
// build cache has from there.
func (c *conv) buildLayers(ctx context.Context, si *platformImage) ([]*built, error) {
	o := c.o
	n := len(si.layers)
	var dictRd *rafs.Reader
	if o.ChunkDict != nil {
		dictRd = o.ChunkDict.boot
	}
	fetched := make([]chan fetchResult, n)
	for i := range fetched {
		fetched[i] = make(chan fetchResult, 1)
	}
	sem := make(chan struct{}, o.Concurrency)
	var fwg sync.WaitGroup
	defer fwg.Wait() // on return: cancel the downloads, then wait for them
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cachedHits := make([]*cacheHit, n)
	for i, l := range si.layers {
		if c.cache != nil {
			cachedHits[i] = c.cache.lookup(si.chains[i].String(), c.optionsKey())
		}
		if cachedHits[i] != nil {
			fetched[i] <- fetchResult{}
			continue
		}
		fwg.Add(1)
		go func(i int, l v1.Layer) {
			defer fwg.Done()
			select {
			case sem <- struct{}{}:
			case <-fctx.Done():
				fetched[i] <- fetchResult{err: fctx.Err()}
				return
			}
			defer func() { <-sem }()
			fetched[i] <- c.fetch(fctx, l, i, n, si.plat)
		}(i, l)
	}

	if o.OCIRef {
		return c.buildZranLayers(ctx, si, fetched)
	}
	var done []*built
	var below []*rafs.Reader
	for i, l := range si.layers {
		var b *built
		var err error
		fr := <-fetched[i]
		if fr.err != nil {
			return nil, fr.err
		}
		if hit := cachedHits[i]; hit != nil {
			b, err = c.useCached(ctx, hit, l, si.chains[i].String())
			if err != nil {
				o.Log.Warn("build cache entry unusable; converting the layer", "layer", i, "err", err)
				b = nil
				if fr = c.fetch(ctx, l, i, n, si.plat); fr.err != nil {
					return nil, fr.err
				}
			} else {
				o.Events(Event{Kind: "layer-cached", Platform: si.plat, Layer: i, Layers: n, Digest: b.res.BlobDigest})
			}
		}
		if b == nil {
			var layerDicts []*rafs.Reader
			if !o.Independent {
				layerDicts = below
			}
			if b, err = c.build(ctx, fr, l, i, n, si.plat, dictRd, layerDicts); err != nil {
				return nil, err
			}
			b.res.ChainID = si.chains[i].String()
			if c.cache != nil && b.blob != nil {
				c.cache.add(b.res.ChainID, c.optionsKey(), b)
			}
		}
		b.res.ChainID = si.chains[i].String()
		done = append(done, b)
		below = append(below, b.boot)
	}
	return done, nil
}

// buildZranLayers builds the ref blobs of a zran image's layers (OCIRef)
// as their downloads arrive, on every core at once: unlike converted
// layers, they do not depend on the layers below them.
func (c *conv) buildZranLayers(ctx context.Context, si *platformImage, fetched []chan fetchResult) ([]*built, error) {
	n := len(si.layers)
	done := make([]*built, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(runtime.GOMAXPROCS(0))
	for i, l := range si.layers {
		var fr fetchResult
		select {
		case fr = <-fetched[i]:
		case <-gctx.Done():
			return nil, g.Wait()
		}
		if fr.err != nil {
			g.Wait()
			return nil, fr.err
		}
		g.Go(func() error {
			b, err := c.build(gctx, fr, l, i, n, si.plat, nil, nil)
			if err != nil {
				return err
			}
			b.res.ChainID = si.chains[i].String()
			done[i] = b
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return done, nil
}

// merge merges the layers' bootstraps into the image's.
func (c *conv) merge(ctx context.Context, si *platformImage, done []*built) (*builder.MergeResult, error) {
	o := c.o
	var srcs []builder.MergeSource
	var known []string
	for _, b := range done {
		if b.orig != nil {
			// A zran layer: its blob is the original layer; the ref
			// blob is recorded as the home of its chunk-info table.
			srcs = append(srcs, builder.MergeSource{Reader: b.boot, Path: b.dataID, BlobDigest: b.res.BlobDigest,
				BlobSize: uint64(b.res.BlobSize), TOCDigest: b.toc.TOCDigest, TOCSize: b.toc.TOCSize})
			known = append(known, b.dataID)
			continue
		}
		srcs = append(srcs, builder.MergeSource{Reader: b.boot, Path: b.res.BlobDigest})
		known = append(known, b.res.BlobDigest)
	}
	mopts := builder.MergeOptions{KnownBlobs: known, Prefetch: o.Prefetch, Warn: func(m string) { o.Log.Warn(m) }}
	if o.ChunkDict != nil {
		mopts.ChunkDict = o.ChunkDict.boot
	}
	merged, err := builder.Merge(ctx, srcs, mopts)
	if err != nil {
		return nil, fmt.Errorf("%s (%s): merge layers: %w", c.src.Ref, si.plat, err)
	}
	return merged, nil
}

// assemble makes the Nydus image: one blob layer per blob of the merged
// bootstrap (the layers' own, or the chunk dictionary's), the bootstrap
// layer, the config and the manifest.
func (c *conv) assemble(si *platformImage, done []*built, merged *builder.MergeResult) (*nydusImage, *ImageResult, error) {
	o := c.o
	byID := map[string]*built{}
	for _, b := range done {
		if b.orig != nil {
			byID[b.dataID] = b
			continue
		}
		byID[b.res.BlobDigest] = b
	}
	var refs []v1.Layer
	ir := &ImageResult{Platform: si.plat, SourceDigest: si.digest.String()}
	var blobLayers []v1.Layer
	var diffIDs []string
	metas := map[string][]byte{}
	var layerDescs []v1.Descriptor
	for _, id := range merged.Blobs {
		var l v1.Layer
		var meta []byte
		var size int64
		if b, ok := byID[id]; ok {
			b.res.InImage = true
			l, meta, size = b.blob, b.meta, b.res.BlobSize
		} else if o.ChunkDict != nil {
			dl, ok := o.ChunkDict.blobs[id]
			if !ok {
				return nil, nil, fmt.Errorf("merged image refers to blob %s, which no layer or chunk dictionary provides", id)
			}
			l, meta, size = dl.layer, dl.meta, dl.size
			if meta == nil && dl.loadMeta != nil {
				meta = dl.loadMeta()
			}
			ir.DictBlobs = append(ir.DictBlobs, id)
		} else {
			return nil, nil, fmt.Errorf("merged image refers to unknown blob %s", id)
		}
		h := v1.Hash{Algorithm: "sha256", Hex: id}
		ann := map[string]string{imageref.AnnotationNydusBlob: "true"}
		if b, ok := byID[id]; ok && b.orig != nil {
			// The manifest lists the ref blob and names the original
			// layer (upstream's layout); the chunk-info table with its
			// windows stays in the ref blob only.
			h = v1.Hash{Algorithm: "sha256", Hex: b.res.BlobDigest}
			ann[imageref.AnnotationNydusRef] = "sha256:" + id
			refs = append(refs, b.orig)
			meta = nil
		}
		blobLayers = append(blobLayers, l)
		diffIDs = append(diffIDs, h.String())
		if meta != nil {
			metas[id] = meta
		}
		layerDescs = append(layerDescs, v1.Descriptor{MediaType: imageref.MediaTypeNydusBlob, Digest: h, Size: size, Annotations: ann})
		ir.NydusSize += size
	}
	bl, err := makeBootstrapLayer(merged.Bootstrap, metas)
	if err != nil {
		return nil, nil, err
	}
	bootDigest := v1.Hash{Algorithm: "sha256", Hex: sha256Hex(bl.gz)}
	bootDiff, _ := v1.NewHash(bl.diffID)
	docker := (si.mf.MediaType == types.DockerManifestSchema2) && !o.OCI
	bootMT := types.MediaType(imageref.MediaTypeOCILayerGzip)
	if docker {
		bootMT = imageref.MediaTypeDockerLayerGzip
	}
	bootLayer := &blobLayer{data: bl.gz, digest: bootDigest, diffID: bootDiff, size: int64(len(bl.gz)), mt: bootMT}
	layerDescs = append(layerDescs, v1.Descriptor{MediaType: bootMT, Digest: bootDigest, Size: int64(len(bl.gz)),
		Annotations: map[string]string{imageref.AnnotationNydusBootstrap: "true", imageref.AnnotationFSVersion: "6"}})
	diffIDs = append(diffIDs, bl.diffID)
	ir.BootstrapSize = int64(len(bl.gz))
	ir.NydusSize += int64(len(bl.gz))

	// Config: the source's, with Nydus diff_ids and a history entry.
	cfgJSON, err := nydusConfig(si.rawCfg, diffIDs)
	if err != nil {
		return nil, nil, fmt.Errorf("%s (%s): config: %w", c.src.Ref, si.plat, err)
	}
	cfgMT := types.OCIConfigJSON
	manMT := types.OCIManifestSchema1
	if docker {
		cfgMT, manMT = types.DockerConfigJSON, types.DockerManifestSchema2
	}
	if o.MergePlatform {
		cfgMT = imageref.ManifestConfigNydus
	}
	man := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     manMT,
		Config:        v1.Descriptor{MediaType: cfgMT, Digest: v1.Hash{Algorithm: "sha256", Hex: sha256Hex(cfgJSON)}, Size: int64(len(cfgJSON))},
		Layers:        layerDescs,
		Annotations: map[string]string{
			imageref.AnnotationSourceDigest:   si.digest.String(),
			imageref.AnnotationSourceRef:      c.src.Ref.String(),
			imageref.AnnotationFSVersion:      "6",
			imageref.AnnotationBuilderVersion: version.Version,
		},
	}
	rawMan, err := json.Marshal(man)
	if err != nil {
		return nil, nil, err
	}
	for _, b := range done {
		ir.Layers = append(ir.Layers, b.res)
		ir.SourceSize += b.res.SourceSize
		ir.DedupBytes += b.res.Stats.DedupBytes
	}
	return &nydusImage{manifest: rawMan, config: cfgJSON, mt: manMT, layers: append(blobLayers, bootLayer), boot: merged.Bootstrap, refs: refs}, ir, nil
}

// nydusConfig rewrites the image config: diff_ids become the blob
// digests plus the bootstrap layer's, and a history entry is appended.
// Unknown fields are kept.
func nydusConfig(raw []byte, diffIDs []string) ([]byte, error) {
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, err
	}
	cfg["rootfs"] = map[string]any{"type": "layers", "diff_ids": diffIDs}
	hist, _ := cfg["history"].([]any)
	hist = append(hist, map[string]any{"created_by": "Nydus Converter", "comment": "Nydus Bootstrap Layer"})
	cfg["history"] = hist
	return json.Marshal(cfg)
}

// chainIDs computes the OCI ChainIDs of a layer stack.
func chainIDs(diffIDs []v1.Hash) []v1.Hash {
	out := make([]v1.Hash, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		out[i] = v1.Hash{Algorithm: "sha256", Hex: sha256Hex([]byte(out[i-1].String() + " " + d.String()))}
	}
	return out
}

// optionsKey identifies the build options that change a layer's blob.
func (c *conv) optionsKey() string {
	o := c.o
	mode := "chained"
	if o.Independent {
		mode = "independent"
	}
	dict := ""
	if o.ChunkDict != nil {
		dict = o.ChunkDict.id
	}
	k := fmt.Sprintf("v1;%s;%s;l%d;c%#x;b%#x;%s;%s", mode, o.Compressor, o.CompressionLevel, o.ChunkSize, o.BatchSize, o.Digester, dict)
	if o.BatchLimit != 0 && o.BatchSize != 0 {
		k += fmt.Sprintf(";bl%#x", o.BatchLimit)
	}
	if len(o.Prefetch) > 0 {
		// The prefetch list orders each layer's blob (its hot set).
		h := sha256.Sum256([]byte(strings.Join(o.Prefetch, "\x00")))
		k += ";hot" + hex.EncodeToString(h[:8])
	}
	return k
}

// fetchResult is a downloaded (or local) compressed layer.
type fetchResult struct {
	path string // temp file; "" when the layer is read directly
	err  error
}

// fetch copies a layer (downloaded, or from a local layout) to a
// temporary file, verifying its digest and size.
func (c *conv) fetch(ctx context.Context, l v1.Layer, i, n int, plat string) fetchResult {
	d, _ := l.Digest()
	size, _ := l.Size()
	// Local layers (oci: layouts, archives) are copied and verified like
	// downloaded ones: a substituted file must not convert under the
	// original's name (the nydus-source-digest annotation), and the copy
	// is what was verified.
	rc, err := l.Compressed()
	if err != nil {
		return fetchResult{err: fmt.Errorf("layer %d %s: %w", i, d, imageref.Describe(c.src.What, c.src.Host(), err))}
	}
	defer rc.Close()
	f, err := os.CreateTemp(c.work, "layer-*.src")
	if err != nil {
		return fetchResult{err: err}
	}
	cr := &countingReader{r: rc, report: func(b int64) {
		c.o.Events(Event{Kind: "layer-progress", Platform: plat, Layer: i, Layers: n, Digest: d.String(), Bytes: b, Total: size * 2})
	}}
	if err := verifyLayer(cr, f, d, size); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fetchResult{err: fmt.Errorf("download layer %d from %s: %w", i, c.src.Ref, imageref.Describe(c.src.What, c.src.Host(), err))}
	}
	if err := f.Close(); err != nil {
		return fetchResult{err: err}
	}
	return fetchResult{path: f.Name()}
}

// verifyLayer copies a layer's compressed bytes from r to w and checks
// that they have digest d and size bytes.
func verifyLayer(r io.Reader, w io.Writer, d v1.Hash, size int64) error {
	if d.Algorithm != "sha256" {
		return fmt.Errorf("layer %s: unsupported digest algorithm %q", d, d.Algorithm)
	}
	h := sha256.New()
	got, err := io.Copy(io.MultiWriter(w, h), r)
	if err != nil {
		return fmt.Errorf("layer %s: %w", d, err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != d.Hex || (size > 0 && got != size) {
		return fmt.Errorf("layer %s: content has digest sha256:%s and %d bytes, the manifest says %s and %d bytes", d, sum, got, d, size)
	}
	return nil
}

// build converts one layer.
func (c *conv) build(ctx context.Context, fr fetchResult, l v1.Layer, i, n int, plat string, dict *rafs.Reader, dicts []*rafs.Reader) (*built, error) {
	o := c.o
	d, _ := l.Digest()
	size, _ := l.Size()
	o.Events(Event{Kind: "layer-start", Platform: plat, Layer: i, Layers: n, Digest: d.String(), Total: size})
	var rc io.ReadCloser
	var err error
	if fr.path != "" {
		rc, err = os.Open(fr.path)
		defer os.Remove(fr.path)
	} else {
		rc, err = l.Compressed()
	}
	if err != nil {
		return nil, fmt.Errorf("layer %d %s: %w", i, d, err)
	}
	defer rc.Close()
	counted := &countingReader{r: rc, report: func(b int64) {
		o.Events(Event{Kind: "layer-progress", Platform: plat, Layer: i, Layers: n, Digest: d.String(), Bytes: size + b, Total: size * 2})
	}}
	if fr.path == "" {
		counted.report = func(b int64) {
			o.Events(Event{Kind: "layer-progress", Platform: plat, Layer: i, Layers: n, Digest: d.String(), Bytes: b, Total: size})
		}
	}
	if o.OCIRef {
		return c.buildZran(ctx, counted, l, i, n, plat)
	}
	tarStream, closeDec, err := decompress(counted)
	if err != nil {
		return nil, fmt.Errorf("layer %d %s: %w", i, d, err)
	}
	defer closeDec()
	var res *builder.Result
	path, err := c.writeBlob("blob-*", func(bw io.Writer) (string, error) {
		var err error
		res, err = builder.Create(ctx, tarStream, bw, builder.Options{
			ChunkSize:        o.ChunkSize,
			BatchSize:        o.BatchSize,
			BatchLimit:       o.BatchLimit,
			Compressor:       o.Compressor,
			CompressionLevel: o.CompressionLevel,
			Digester:         o.Digester,
			Whiteout:         builder.WhiteoutNone,
			InlineMeta:       true,
			TOC:              true,
			ChunkDict:        dict,
			ChunkDicts:       dicts,
			// The image's prefetch list is every layer's hot set: its files
			// go first in their layer's blob, so nydusd streams them in a few
			// requests; the merged bootstrap's prefetch table names them.
			HotFiles: o.Prefetch,
			SpoolDir: c.work,
			Warn:     func(m string) { o.Log.Warn(m, "layer", i) },
		})
		if err != nil {
			return "", err
		}
		return res.BlobID, nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer %d %s: %w", i, d, err)
	}
	id := res.BlobID
	boot, err := openLayerBootstrap(ctx, res.Bootstrap, id)
	if err != nil {
		return nil, fmt.Errorf("layer %d: %w", i, err)
	}
	h := v1.Hash{Algorithm: "sha256", Hex: id}
	b := &built{
		res:  LayerResult{SourceDigest: d.String(), SourceSize: size, BlobDigest: id, BlobSize: int64(res.BlobSize), Stats: res.Stats},
		blob: &blobLayer{path: path, digest: h, diffID: h, size: int64(res.BlobSize), mt: imageref.MediaTypeNydusBlob},
		boot: boot, meta: res.BlobMeta, chunked: res.Stats.UniqueChunks > 0,
	}
	o.Events(Event{Kind: "layer-done", Platform: plat, Layer: i, Layers: n, Digest: id, Bytes: int64(res.BlobSize)})
	return b, nil
}

// writeBlob has write produce a blob into a temporary file of the work
// directory (buffered), then names the file after the blob id write
// returns and gives its path; on failure nothing is left.
func (c *conv) writeBlob(pattern string, write func(w io.Writer) (id string, err error)) (string, error) {
	f, err := os.CreateTemp(c.work, pattern)
	if err != nil {
		return "", err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	id, err := write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	path := filepath.Join(c.work, id)
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return path, nil
}

// buildZran builds the ref blob of a gzip layer (OCIRef).
func (c *conv) buildZran(ctx context.Context, gz io.Reader, l v1.Layer, i, n int, plat string) (*built, error) {
	o := c.o
	d, _ := l.Digest()
	size, _ := l.Size()
	var res *builder.ZranResult
	path, err := c.writeBlob("ref-*", func(bw io.Writer) (string, error) {
		var err error
		res, err = builder.CreateZranRef(ctx, gz, bw, o.ZranSpan, builder.Options{
			ChunkSize:  o.ChunkSize,
			Whiteout:   builder.WhiteoutNone,
			InlineMeta: true,
			TOC:        true,
			Warn:       func(m string) { o.Log.Warn(m, "layer", i) },
		})
		if err == nil && res.DataBlobID != d.Hex {
			err = fmt.Errorf("the layer read has digest sha256:%s, the manifest says %s", res.DataBlobID, d)
		}
		if err != nil {
			return "", err
		}
		return res.BlobID, nil
	})
	if err != nil {
		return nil, fmt.Errorf("layer %d %s: %w", i, d, err)
	}
	id := res.BlobID
	boot, err := openLayerBootstrap(ctx, res.Bootstrap, res.DataBlobID)
	if err != nil {
		return nil, fmt.Errorf("layer %d: %w", i, err)
	}
	h := v1.Hash{Algorithm: "sha256", Hex: id}
	b := &built{
		res:  LayerResult{SourceDigest: d.String(), SourceSize: size, BlobDigest: id, BlobSize: int64(res.BlobSize), Stats: res.Stats},
		blob: &blobLayer{path: path, digest: h, diffID: h, size: int64(res.BlobSize), mt: imageref.MediaTypeNydusBlob},
		boot: boot, meta: res.BlobMeta, chunked: res.Stats.UniqueChunks > 0,
		orig: l, dataID: res.DataBlobID,
		toc: builder.MergeSource{TOCDigest: res.TOCDigest.String(), TOCSize: res.TOCSize},
	}
	o.Log.Debug("zran layer", "layer", i, "contexts", res.Contexts, "windows", res.DictBytes, "ref_blob", res.BlobSize, "layer_size", size)
	o.Events(Event{Kind: "layer-done", Platform: plat, Layer: i, Layers: n, Digest: id, Bytes: int64(res.BlobSize)})
	return b, nil
}

// openLayerBootstrap opens a layer's inline bootstrap and gives its own
// blob (named by the placeholder) its real id.
func openLayerBootstrap(ctx context.Context, boot []byte, id string) (*rafs.Reader, error) {
	rd, err := rafs.Open(ctx, bytes.NewReader(boot), int64(len(boot)))
	if err != nil {
		return nil, fmt.Errorf("layer bootstrap: %w", err)
	}
	for i := range rd.Blobs {
		if rd.Blobs[i].BlobID == rafs.PlaceholderBlobID {
			rd.Blobs[i].BlobID = id
		}
	}
	return rd, nil
}

// decompress detects gzip or zstd by magic; anything else is a tar.
func decompress(r io.Reader) (io.Reader, func(), error) {
	rd, _, closeFn, err := compress.NewStreamReader(r)
	return rd, closeFn, err
}

// countingReader reports the bytes read so far, at most every 4 MiB.
type countingReader struct {
	r      io.Reader
	n      int64
	last   int64
	report func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.report != nil && (c.n-c.last >= 4<<20 || err == io.EOF) {
		c.last = c.n
		c.report(c.n)
	}
	return n, err
}

// ChunkDict is a Nydus image whose chunks conversions reuse.
type ChunkDict struct {
	boot  *rafs.Reader
	id    string
	blobs map[string]dictBlob
}

type dictBlob struct {
	layer v1.Layer
	meta  []byte
	// loadMeta, when set, reads meta when the blob is used.
	loadMeta func() []byte
	size     int64
}

// OpenChunkDict loads a chunk dictionary: `bootstrap:registry:REF` (a
// Nydus image in a registry) or `bootstrap:local:PATH` (a bootstrap
// file whose blobs must then already be in the target registry).
func OpenChunkDict(ctx context.Context, spec string, ro imageref.RegistryOptions) (*ChunkDict, error) {
	kind, rest, ok := strings.Cut(spec, ":")
	if !ok || kind != "bootstrap" {
		return nil, fmt.Errorf("invalid --chunk-dict %q (want bootstrap:registry:REF or bootstrap:local:PATH)", spec)
	}
	where, loc, ok := strings.Cut(rest, ":")
	if !ok || loc == "" {
		return nil, fmt.Errorf("invalid --chunk-dict %q (want bootstrap:registry:REF or bootstrap:local:PATH)", spec)
	}
	switch where {
	case "local":
		b, err := os.ReadFile(loc)
		if err != nil {
			return nil, fmt.Errorf("chunk dict: %w", err)
		}
		rd, err := rafs.Open(ctx, bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return nil, fmt.Errorf("chunk dict %s: %w", loc, err)
		}
		return &ChunkDict{boot: rd, id: "local:" + sha256Hex(b), blobs: map[string]dictBlob{}}, nil
	case "registry":
		ref, err := imageref.Parse(loc, false, ro)
		if err != nil || ref.Name == nil {
			return nil, fmt.Errorf("chunk dict: invalid reference %q", loc)
		}
		c, err := imageref.NewClient(ro)
		if err != nil {
			return nil, err
		}
		return openRegistryDict(ctx, ref, c)
	}
	return nil, fmt.Errorf("invalid --chunk-dict %q (want bootstrap:registry:REF or bootstrap:local:PATH)", spec)
}

func openRegistryDict(ctx context.Context, ref imageref.Ref, c *imageref.Client) (*ChunkDict, error) {
	img, err := remote.Image(ref.Name, c.Options(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("chunk dict: %w", imageref.Describe(fmt.Sprintf("image %q", ref), ref.Name.Context().RegistryStr(), err))
	}
	mf, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("chunk dict %s: %w", ref, err)
	}
	cd := &ChunkDict{blobs: map[string]dictBlob{}}
	repo := ref.Name.Context()
	var bootDesc *v1.Descriptor
	for i, l := range mf.Layers {
		if l.Annotations[imageref.AnnotationNydusBootstrap] == "true" {
			bootDesc = &mf.Layers[i]
		}
	}
	if bootDesc == nil {
		return nil, fmt.Errorf("chunk dict %s is not a Nydus image (no bootstrap layer)", ref)
	}
	bl, err := remote.Layer(repo.Digest(bootDesc.Digest.String()), c.Options(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("chunk dict %s: %w", ref, err)
	}
	rc, err := bl.Compressed()
	if err != nil {
		return nil, fmt.Errorf("chunk dict %s: bootstrap layer: %w", ref, err)
	}
	boot, err := imageref.ExtractBootstrap(rc, rafs.MaxMetadataSize)
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("chunk dict %s: %w", ref, err)
	}
	rd, err := rafs.Open(ctx, bytes.NewReader(boot), int64(len(boot)))
	if err != nil {
		return nil, fmt.Errorf("chunk dict %s: %w", ref, err)
	}
	cd.boot, cd.id = rd, "registry:"+sha256Hex(boot)
	rr, err := registry.NewForRepository(ctx, repo, c.RegistryOptions().Keychain, c.Transport())
	if err != nil {
		return nil, err
	}
	for _, l := range mf.Layers {
		if l.MediaType != imageref.MediaTypeNydusBlob {
			continue
		}
		rl, err := remote.Layer(repo.Digest(l.Digest.String()), c.Options(ctx)...)
		if err != nil {
			return nil, err
		}
		meta, _ := blobMetaFile(ctx, rr, l.Digest.String(), l.Size)
		cd.blobs[l.Digest.Hex] = dictBlob{layer: rl, meta: meta, size: l.Size}
	}
	return cd, nil
}

// blobMetaFile reads a remote blob's `.blob.meta` through range reads.
func blobMetaFile(ctx context.Context, rr *registry.Client, digest string, size int64) ([]byte, error) {
	br, err := blob.Open(rr.ReaderAt(ctx, digest, size), size)
	if err != nil {
		return nil, err
	}
	return br.MetaFile()
}
