package builder

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/storage"
)

// MergeSource is one per-layer bootstrap, lowest layer first.
type MergeSource struct {
	// Reader is the opened layer bootstrap.
	Reader *rafs.Reader
	// Path is the bootstrap's file path; its name up to the first "."
	// is the layer's blob id when it is 64 hex characters.
	Path string
	// BlobDigest, BlobSize, TOCDigest and TOCSize override the layer
	// blob's id, compressed size and ToC fields when set
	// (`--blob-digests`, `--blob-sizes`, `--blob-toc-digests`,
	// `--blob-toc-sizes`). For a zran layer (a SEPARATE blob) BlobDigest
	// and BlobSize are its ref blob's, recorded as blob_meta_digest and
	// blob_meta_size, as upstream does.
	BlobDigest string
	BlobSize   uint64
	TOCDigest  string
	TOCSize    uint32
	// OriginalBlobID overrides the blob id (`--original-blob-ids`).
	OriginalBlobID string
}

// MergeOptions configure Merge.
type MergeOptions struct {
	// Parent is an existing image bootstrap the layers go on top of.
	Parent *rafs.Reader
	// ParentBlobs, with Parent, opens the parent's blobs by id: a layer's
	// chunk that any of them holds (a file the parent shows, deleted or
	// overwrote) is taken from there, so a layer blob whose every chunk
	// the parent holds drops out of the merged image.
	ParentBlobs BlobOpener
	// ChunkDict is the chunk dictionary the layers were built with; its
	// blobs are not counted as a layer's own blob.
	ChunkDict *rafs.Reader
	// KnownBlobs are ids of blobs that layers may reference besides
	// their own (e.g. the blobs of lower layers they were deduplicated
	// against); like chunk dictionary blobs they are not a layer's own.
	KnownBlobs []string
	// Prefetch lists absolute paths for the prefetch table.
	Prefetch []string
	// Warn receives non-fatal diagnostics.
	Warn func(msg string)
}

// MergeResult is the merged bootstrap and the blobs it references.
type MergeResult struct {
	Bootstrap []byte
	// Blobs are the referenced blob ids, in blob table order.
	Blobs []string
	// ChunkSize, Compressor and Digester describe the merged image.
	Options Options
}

// BlobIDFromPath returns the file name of p up to its first ".".
func BlobIDFromPath(p string) string {
	name := filepath.Base(p)
	if i := strings.IndexByte(name, '.'); i >= 0 {
		name = name[:i]
	}
	return name
}

// Merge overlays per-layer bootstraps (lowest first) into one flattened
// bootstrap, applying OCI and overlayfs whiteouts.
func Merge(ctx context.Context, sources []MergeSource, o MergeOptions) (*MergeResult, error) {
	if len(sources) == 0 {
		return nil, fmt.Errorf("merge needs at least one source bootstrap")
	}
	dictBlobs := map[string]bool{}
	for _, id := range o.KnownBlobs {
		dictBlobs[id] = true
	}
	if o.ChunkDict != nil {
		for _, b := range o.ChunkDict.Blobs {
			dictBlobs[b.BlobID] = true
		}
	}
	var tree *rafs.Node
	var parentChunks *base // with ParentBlobs: every chunk the parent holds
	var blobs []rafs.BlobInfo
	blobIdx := map[string]uint32{}
	var opts Options
	first := true
	addBlob := func(bi rafs.BlobInfo) uint32 {
		if idx, ok := blobIdx[bi.BlobID]; ok {
			return idx
		}
		idx := uint32(len(blobs))
		bi.Index = idx
		blobIdx[bi.BlobID] = idx
		blobs = append(blobs, bi)
		return idx
	}
	check := func(rd *rafs.Reader, what string) error {
		if first {
			opts.ChunkSize = rd.ChunkSize()
			opts.Compressor = rd.Ext.Flags.Compressor()
			opts.Digester = rd.Ext.Flags.Digester()
			first = false
			return nil
		}
		if rd.ChunkSize() != opts.ChunkSize {
			return fmt.Errorf("%s: chunk size %#x differs from %#x of the other layers", what, rd.ChunkSize(), opts.ChunkSize)
		}
		if rd.Ext.Flags.Digester() != opts.Digester {
			return fmt.Errorf("%s: digester %s differs from %s of the other layers", what, rd.Ext.Flags.Digester(), opts.Digester)
		}
		return nil
	}
	if o.Parent != nil {
		if err := check(o.Parent, "parent bootstrap"); err != nil {
			return nil, err
		}
		t, err := o.Parent.Load(ctx, rafs.LoadOptions{})
		if err != nil {
			return nil, fmt.Errorf("load parent bootstrap: %w", err)
		}
		remap := make([]uint32, len(o.Parent.Blobs))
		for i, bi := range o.Parent.Blobs {
			remap[i] = addBlob(bi)
		}
		remapChunks(t, remap)
		tree = t
		if o.ParentBlobs != nil {
			parentChunks = &base{known: map[digester.Digest]rafs.ChunkInfo{}}
			collectChunks(t, parentChunks.known)
			for _, bi := range o.Parent.Blobs {
				err := parentChunks.addBlobChunks(bi, blobIdx[bi.BlobID], o.ParentBlobs, opts.Digester)
				if err != nil && !errors.Is(err, fs.ErrNotExist) {
					return nil, err
				}
			}
		}
	}
	for li, src := range sources {
		what := fmt.Sprintf("layer %d (%s)", li, src.Path)
		rd := src.Reader
		if err := check(rd, what); err != nil {
			return nil, err
		}
		// Later layers decide the compressor recorded for the image.
		opts.Compressor = rd.Ext.Flags.Compressor()
		remap := make([]uint32, len(rd.Blobs))
		ownSeen := false
		own := BlobIDFromPath(src.Path)
		if src.OriginalBlobID != "" {
			own = src.OriginalBlobID
		}
		for i, bi := range rd.Blobs {
			if !dictBlobs[bi.BlobID] || bi.BlobID == own {
				if ownSeen {
					return nil, fmt.Errorf("%s: bootstrap references more than one blob that is not in the chunk dictionary", what)
				}
				ownSeen = true
				id := bi.BlobID
				switch {
				case src.OriginalBlobID != "":
					id = src.OriginalBlobID
				case storage.IsBlobID(BlobIDFromPath(src.Path)):
					id = BlobIDFromPath(src.Path)
				}
				separate := bi.Features.Has(blob.FeatureSeparate)
				if src.BlobDigest != "" {
					d := strings.TrimPrefix(src.BlobDigest, "sha256:")
					if !separate {
						id = d
					} else {
						// A zran layer: the digest is its ref blob's,
						// which holds the chunk-info table (upstream
						// sets blob_meta_digest); the blob id stays the
						// original layer's.
						md, err := hex.DecodeString(d)
						if err != nil || len(md) != 32 {
							return nil, fmt.Errorf("%s: invalid blob digest %q", what, src.BlobDigest)
						}
						copy(bi.MetaDigest[:], md)
					}
				}
				if !storage.IsBlobID(id) || id == rafs.PlaceholderBlobID {
					return nil, fmt.Errorf("%s: cannot determine the layer blob id: name the bootstrap file after the blob digest or pass --blob-digests", what)
				}
				bi.BlobID = id
				if separate {
					// The merged bootstrap names the ref blob by digest:
					// upstream's nydusd takes a SEPARATE blob's meta id
					// from its file name while INLINED_FS_META is set.
					bi.Features &^= blob.FeatureInlinedFSMeta
					if src.BlobSize != 0 {
						bi.MetaSize = src.BlobSize
					}
				} else if src.BlobSize != 0 {
					bi.CompressedSize = src.BlobSize
				}
				if src.TOCDigest != "" {
					d, err := hex.DecodeString(strings.TrimPrefix(src.TOCDigest, "sha256:"))
					if err != nil || len(d) != 32 {
						return nil, fmt.Errorf("%s: invalid ToC digest %q", what, src.TOCDigest)
					}
					copy(bi.TOCDigest[:], d)
				}
				if src.TOCSize != 0 {
					bi.TOCSize = src.TOCSize
				}
			}
			remap[i] = addBlob(bi)
		}
		upper, err := rd.Load(ctx, rafs.LoadOptions{})
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", what, err)
		}
		remapChunks(upper, remap)
		if parentChunks != nil {
			reuseChunks(upper, parentChunks.known)
		}
		tree = applyLayer(tree, upper, whiteoutBoth)
	}

	opts.Prefetch = o.Prefetch
	opts.Warn = o.Warn
	boot, used, err := marshalTree(tree, blobs, &opts, -1)
	if err != nil {
		return nil, err
	}
	return &MergeResult{Bootstrap: boot, Blobs: used, Options: opts}, nil
}

// collectChunks adds the chunks of a tree's files to known.
func collectChunks(t *rafs.Node, known map[digester.Digest]rafs.ChunkInfo) {
	eachChunk(t, func(c *rafs.ChunkInfo) {
		if _, ok := known[c.Digest]; !ok {
			known[c.Digest] = *c
		}
	})
}

// eachChunk calls fn with every chunk of a tree's files, once per inode
// (hard links share theirs).
func eachChunk(t *rafs.Node, fn func(c *rafs.ChunkInfo)) {
	seen := map[*rafs.Inode]bool{}
	t.Walk(func(_ string, n *rafs.Node) error {
		if seen[n.Inode] {
			return nil
		}
		seen[n.Inode] = true
		for i := range n.Inode.Chunks {
			fn(&n.Inode.Chunks[i])
		}
		return nil
	})
}

// reuseChunks points the chunks of a tree's files that known holds at
// known's copy (keeping their file offsets).
func reuseChunks(t *rafs.Node, known map[digester.Digest]rafs.ChunkInfo) {
	eachChunk(t, func(c *rafs.ChunkInfo) {
		if k, ok := known[c.Digest]; ok && k.UncompressedSize == c.UncompressedSize {
			fo := c.FileOffset
			*c = k
			c.FileOffset = fo
		}
	})
}

func remapChunks(t *rafs.Node, remap []uint32) {
	eachChunk(t, func(c *rafs.ChunkInfo) { c.BlobIndex = remap[c.BlobIndex] })
}
