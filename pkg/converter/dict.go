package converter

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nydus-go/nydus/pkg/chunkdict"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/registry"
)

// The dedup scope's chunk dictionary lives in each scope repository as
// tagged artifacts (docs/format.md, "Chunk dictionary artifact"): an OCI
// manifest whose config has media type MediaTypeDictConfig, whose first
// layer is a Nydus bootstrap layer holding a chunkdict bootstrap (the
// chunks new to the repository's dictionary) and whose optional second
// layer, of media type MediaTypeDictRefs, is a chunkdict reference list
// (one more reference to chunks the dictionary had already). Every
// conversion adds its own artifact under a new tag, so concurrent
// conversions never overwrite each other; when a scope holds more than
// dictCompactAt of them, the converter merges what it read into one
// (trimmed to MaxDictChunks) and deletes those it merged, never one it
// did not read.
const (
	// DictTagPrefix starts the tags of dictionary artifacts.
	DictTagPrefix = "nydus-chunk-dict-"
	// MediaTypeDictConfig is the config media type of a dictionary
	// artifact.
	MediaTypeDictConfig = "application/vnd.nydus-go.chunk-dict.config.v1+json"
	// MediaTypeDictRefs is the media type of a dictionary artifact's
	// reference list layer (uncompressed).
	MediaTypeDictRefs = "application/vnd.nydus-go.chunk-dict.refs.v1"
	// dictCompactAt is how many artifacts a scope repository may hold
	// before a conversion merges them.
	dictCompactAt = 8
)

// scopeDict is what a conversion read of its dedup scope.
type scopeDict struct {
	dict *chunkdict.Dict
	// read are the artifacts read from the target repository, by digest.
	read []v1.Hash
	// have holds the digests of the target repository's dictionary
	// (chunks of live blobs): the conversion adds references to these
	// rather than full entries.
	have map[digester.Digest]bool
}

// dictArtifact is one dictionary artifact as read: its entries and its
// reference list (nil if none).
type dictArtifact struct {
	dict *chunkdict.Dict
	refs []byte
}

// mergeArtifacts merges artifacts' dictionaries, then counts their
// reference lists.
func mergeArtifacts(arts []dictArtifact) (*chunkdict.Dict, error) {
	ds := make([]*chunkdict.Dict, len(arts))
	for i, a := range arts {
		ds[i] = a.dict
	}
	d, err := chunkdict.Merge(ds...)
	if err != nil || d == nil {
		return d, err
	}
	for _, a := range arts {
		if _, err := d.AddRefs(a.refs); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// scopeRepos returns the repositories of the dedup scope: the target's
// by default.
func (c *conv) scopeRepos() []name.Repository {
	if len(c.o.DedupScope) > 0 {
		return c.o.DedupScope
	}
	return []name.Repository{c.dst.Name.Context()}
}

// loadScope reads the dictionaries of the dedup scope into one, keeping
// only chunks of this conversion's digester and chunk size whose blob
// is still in its repository, and sets it as the conversion's chunk
// dictionary. An unreadable artifact is skipped with a warning: a
// dictionary never fails a conversion.
func (c *conv) loadScope(ctx context.Context) (*scopeDict, error) {
	o := c.o
	sd := &scopeDict{have: map[digester.Digest]bool{}}
	var arts []dictArtifact
	var targetDicts []*chunkdict.Dict
	where := map[string]name.Repository{} // blob id → repository holding it
	target := c.dst.Name.Context()
	for _, repo := range c.scopeRepos() {
		tags, err := remote.List(repo, c.dstC.Options(ctx)...)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var te *transport.Error
			if !errors.As(err, &te) || te.StatusCode != http.StatusNotFound { // not found: no repository yet
				o.Log.Warn("dedup scope repository unreadable; its chunk dictionary is not used", "repository", repo.String(), "err", err)
			}
			continue
		}
		sort.Strings(tags)
		for _, tag := range tags {
			if !strings.HasPrefix(tag, DictTagPrefix) {
				continue
			}
			a, digest, err := readDictArtifact(ctx, repo.Tag(tag), c.dstC)
			if err != nil {
				o.Log.Warn("skipping an unreadable chunk dictionary", "repository", repo.String(), "tag", tag, "err", err)
				continue
			}
			if repo.String() == target.String() {
				sd.read = append(sd.read, digest)
			}
			if a.dict.Digester != o.Digester || a.dict.ChunkSize != o.ChunkSize {
				continue
			}
			for _, b := range a.dict.Blobs {
				if _, ok := where[b.BlobID]; !ok {
					where[b.BlobID] = repo
				}
			}
			arts = append(arts, a)
			if repo.String() == target.String() {
				targetDicts = append(targetDicts, a.dict)
			}
		}
	}
	// Blobs deleted since (their images removed, the registry collected)
	// can no longer be referenced; the others' sizes go in the manifest.
	// Each artifact drops its dead blobs' chunks before the merge, so a
	// chunk also recorded at a live location keeps that one.
	layers := map[string]v1.Layer{}
	sizes := map[string]int64{}
	live := map[string]bool{}
	keep := func(id string) bool {
		if ok, done := live[id]; done {
			return ok
		}
		live[id] = false
		l, err := remote.Layer(where[id].Digest("sha256:"+id), c.dstC.Options(ctx)...)
		if err != nil {
			return false
		}
		size, err := l.Size() // HEAD
		if err != nil {
			return false
		}
		layers[id], sizes[id], live[id] = l, size, true
		return true
	}
	for _, a := range arts {
		a.dict.Keep(keep)
	}
	for _, td := range targetDicts {
		for _, c := range td.Chunks {
			sd.have[c.Digest] = true
		}
	}
	d, err := mergeArtifacts(arts)
	if err != nil || d == nil {
		return sd, err
	}
	if len(d.Chunks) == 0 {
		return sd, nil
	}
	sd.dict = d
	cd, err := dictFromScope(ctx, d, where, layers, sizes, c.dstC)
	if err != nil {
		return nil, err
	}
	o.ChunkDict = cd
	o.Log.Info("deduplicating against the dedup scope's chunk dictionary", "chunks", len(d.Chunks), "blobs", len(d.Blobs))
	return sd, nil
}

// dictFromScope turns a scope dictionary into the conversion's chunk
// dictionary: its bootstrap for the builder, and each blob as a layer of
// its repository (pushed by a cross-repository mount when another one).
func dictFromScope(ctx context.Context, d *chunkdict.Dict, where map[string]name.Repository, layers map[string]v1.Layer, sizes map[string]int64, rc *imageref.Client) (*ChunkDict, error) {
	boot, err := d.Bootstrap()
	if err != nil {
		return nil, err
	}
	rd, err := rafs.Open(ctx, bytes.NewReader(boot), int64(len(boot)))
	if err != nil {
		return nil, fmt.Errorf("dedup scope dictionary: %w", err)
	}
	cd := &ChunkDict{boot: rd, id: "scope:" + sha256Hex(boot), blobs: map[string]dictBlob{}}
	rr := map[string]*registry.Client{}
	for _, b := range d.Blobs {
		repo := where[b.BlobID]
		cl := rr[repo.String()]
		if cl == nil {
			if cl, err = registry.NewForRepository(ctx, repo, rc.RegistryOptions().Keychain, rc.Transport()); err != nil {
				return nil, err
			}
			rr[repo.String()] = cl
		}
		id, size := b.BlobID, sizes[b.BlobID]
		// Read only for the blobs an image uses: a range request or two
		// each.
		load := func() []byte {
			meta, _ := blobMetaFile(ctx, cl, "sha256:"+id, size)
			return meta
		}
		cd.blobs[id] = dictBlob{layer: layers[id], loadMeta: load, size: size}
	}
	return cd, nil
}

// readDictArtifact reads one dictionary artifact.
func readDictArtifact(ctx context.Context, ref name.Reference, rc *imageref.Client) (dictArtifact, v1.Hash, error) {
	img, err := remote.Image(ref, rc.Options(ctx)...)
	if err != nil {
		return dictArtifact{}, v1.Hash{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return dictArtifact{}, v1.Hash{}, err
	}
	mf, err := img.Manifest()
	if err != nil {
		return dictArtifact{}, digest, err
	}
	if mf.Config.MediaType != MediaTypeDictConfig || len(mf.Layers) < 1 || len(mf.Layers) > 2 ||
		(len(mf.Layers) == 2 && mf.Layers[1].MediaType != MediaTypeDictRefs) {
		return dictArtifact{}, digest, fmt.Errorf("not a chunk dictionary artifact (config %s, %d layers)", mf.Config.MediaType, len(mf.Layers))
	}
	ls, err := img.Layers()
	if err != nil {
		return dictArtifact{}, digest, err
	}
	lrc, err := ls[0].Compressed()
	if err != nil {
		return dictArtifact{}, digest, err
	}
	defer lrc.Close()
	boot, err := imageref.ExtractBootstrap(lrc, rafs.MaxMetadataSize)
	if err != nil {
		return dictArtifact{}, digest, err
	}
	d, err := chunkdict.Open(ctx, boot)
	if err != nil {
		return dictArtifact{}, digest, err
	}
	a := dictArtifact{dict: d}
	if len(ls) == 2 {
		if a.refs, err = readRefsLayer(ls[1], mf.Layers[1].Size); err != nil {
			return dictArtifact{}, digest, err
		}
	}
	return a, digest, nil
}

// readRefsLayer reads and checks a reference list layer (its digest is
// checked by the registry client as it reads).
func readRefsLayer(l v1.Layer, size int64) ([]byte, error) {
	const max = chunkdict.MaxChunks * chunkdict.RefPrefixSize
	if size < 0 || size > max {
		return nil, fmt.Errorf("chunk dictionary references: layer of %d bytes (at most %d)", size, max)
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, size+1))
	if err != nil {
		return nil, fmt.Errorf("chunk dictionary references: %w", err)
	}
	if int64(len(b)) != size {
		return nil, fmt.Errorf("chunk dictionary references: layer has %d bytes, manifest says %d", len(b), size)
	}
	return b, chunkdict.ValidateRefs(b)
}

// writeDictArtifact pushes a dictionary, and a reference list unless
// refs is empty, under a new tag of repo.
func writeDictArtifact(ctx context.Context, repo name.Repository, d *chunkdict.Dict, refs []byte, rc *imageref.Client) error {
	boot, err := d.Bootstrap()
	if err != nil {
		return err
	}
	bl, err := makeBootstrapLayer(boot, nil)
	if err != nil {
		return err
	}
	layers := []v1.Layer{static.NewLayer(bl.gz, types.OCILayer)}
	if len(refs) > 0 {
		layers = append(layers, static.NewLayer(refs, MediaTypeDictRefs))
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layers...)
	if err != nil {
		return err
	}
	img = mutate.ConfigMediaType(img, MediaTypeDictConfig)
	var rnd [6]byte
	rand.Read(rnd[:])
	tag := fmt.Sprintf("%s%x-%s", DictTagPrefix, time.Now().UnixNano(), hex.EncodeToString(rnd[:]))
	if err := remote.Write(repo.Tag(tag), img, rc.Options(ctx)...); err != nil {
		return fmt.Errorf("push chunk dictionary %s:%s: %w", repo, tag, err)
	}
	return nil
}

// contribute adds the converted images' chunks to the target
// repository's dictionary, and merges its artifacts when there are too
// many. Failures are warnings: the image is converted already.
func (c *conv) contribute(ctx context.Context, sd *scopeDict, boots [][]byte) {
	o := c.o
	repo := c.dst.Name.Context()
	var mine []*chunkdict.Dict
	for _, b := range boots {
		rd, err := rafs.Open(ctx, bytes.NewReader(b), int64(len(b)))
		if err == nil {
			var d *chunkdict.Dict
			if d, err = chunkdict.FromImage(ctx, rd); err == nil {
				mine = append(mine, d)
			}
		}
		if err != nil {
			o.Log.Warn("chunk dictionary not updated", "repository", repo.String(), "err", err)
			return
		}
	}
	d, err := chunkdict.Merge(mine...)
	if err != nil || d == nil || len(d.Chunks) == 0 {
		return
	}
	// The chunks the repository's dictionary has already get one more
	// reference each; only the new ones are recorded in full.
	refs := d.Split(func(dg digester.Digest) bool { return sd.have[dg] })
	if len(sd.read)+1 <= dictCompactAt {
		if err := writeDictArtifact(ctx, repo, d, refs, c.dstC); err != nil {
			o.Log.Warn("chunk dictionary not updated", "repository", repo.String(), "err", err)
		}
		return
	}
	// Merge what was read (of this digester and chunk size, or not:
	// re-read everything) with this conversion's, then delete what was
	// merged.
	all := []dictArtifact{{dict: d, refs: refs}}
	var merged []v1.Hash
	for _, h := range sd.read {
		oa, _, err := readDictArtifact(ctx, repo.Digest(h.String()), c.dstC)
		if err != nil || oa.dict.Digester != d.Digester || oa.dict.ChunkSize != d.ChunkSize {
			continue
		}
		all = append(all, oa)
		merged = append(merged, h)
	}
	m, err := mergeArtifacts(all)
	if err != nil {
		o.Log.Warn("chunk dictionary not updated", "repository", repo.String(), "err", err)
		return
	}
	m.Trim(o.MaxDictChunks)
	// A registry that refuses deletes would keep every merged copy: try
	// one delete first, and merge only if it works (the deleted
	// artifact's entries are in m, pushed next).
	if len(merged) > 0 {
		if err := remote.Delete(repo.Digest(merged[0].String()), c.dstC.Options(ctx)...); err != nil {
			o.Log.Warn("the registry refuses to delete chunk dictionaries: they are not merged, and each conversion adds one", "repository", repo.String(), "err", err)
			if err := writeDictArtifact(ctx, repo, d, refs, c.dstC); err != nil {
				o.Log.Warn("chunk dictionary not updated", "repository", repo.String(), "err", err)
			}
			return
		}
		merged = merged[1:]
	}
	if err := writeDictArtifact(ctx, repo, m, nil, c.dstC); err != nil {
		o.Log.Warn("chunk dictionary not updated", "repository", repo.String(), "err", err)
		return
	}
	for _, h := range merged {
		if err := remote.Delete(repo.Digest(h.String()), c.dstC.Options(ctx)...); err != nil {
			o.Log.Warn("merged chunk dictionary not deleted; it is read again next time", "repository", repo.String(), "digest", h.String(), "err", err)
		}
	}
}
