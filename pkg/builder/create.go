package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"runtime"

	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// Options configure a layer build.
type Options struct {
	// ChunkSize is the chunk size (default 1 MiB).
	ChunkSize uint32
	// BatchSize, when non-zero, packs files smaller than half of it
	// into batches compressed together (upstream's --batch-size, blob
	// features BATCH and CHUNK_INFO_V2).
	BatchSize uint32
	// BatchLimit, when non-zero (and batches are on), is the most bytes
	// a batch may store compressed: a batch whose compressed form is
	// larger is split into smaller batches, since a lazy read of one of
	// its files fetches the whole batch. 0: no limit (upstream's
	// builder; batches are bounded by BatchSize alone).
	BatchLimit uint32
	// Compressor compresses chunks (default zstd).
	Compressor compress.Algorithm
	// CompressionLevel is the zstd level, 1–22 (0: 3, libzstd's default
	// and upstream's). Level 1 is about 30% faster for about 6% larger
	// output.
	CompressionLevel int
	// Digester hashes chunks (blake3 or sha256).
	Digester digester.Algorithm
	// Whiteout selects how whiteout entries are interpreted.
	Whiteout WhiteoutSpec
	// InlineMeta embeds the bootstrap in the blob (`--blob-inline-meta`).
	InlineMeta bool
	// TOC appends a table of contents to the blob (`--features blob-toc`).
	TOC bool
	// Parent is a bootstrap the layer is built on top of; its tree is the
	// lower layer and its chunks are reused.
	Parent *rafs.Reader
	// ParentBlobs, when set, opens the parent's blobs by id, so that every
	// chunk they hold is reused, not only the chunks of the files the
	// parent still shows: a file deleted or overwritten in the parent and
	// added again costs no new data. A blob it cannot open (fs.ErrNotExist)
	// is skipped; the chunks of its files still visible are reused anyway.
	ParentBlobs BlobOpener
	// ChunkDict is a bootstrap whose chunks are reused when identical.
	ChunkDict *rafs.Reader
	// ChunkDicts are further chunk dictionaries, e.g. the layers below
	// this one in the same image (their blob ids must be real).
	ChunkDicts []*rafs.Reader
	// Prefetch lists absolute paths recorded in the prefetch table. The
	// files they name (directories recursively) are also the layer's hot
	// set: their data goes first in the blob, in list order.
	Prefetch []string
	// HotFiles lists more absolute paths of the hot set, after Prefetch's,
	// without entering the prefetch table: nydusify gives every layer the
	// image's prefetch list this way, and the merged bootstrap's table.
	HotFiles []string
	// SpoolDir holds the temporary file that a build with a hot set
	// spools file data to (default: the system's temporary directory).
	SpoolDir string
	// Workers is the number of compression goroutines (default GOMAXPROCS).
	Workers int
	// BlobCache, when set, receives the uncompressed chunk data at its
	// aligned uncompressed offset (the `<blob_id>.blob.data` file).
	BlobCache io.WriterAt
	// Warn receives non-fatal diagnostics (nil: dropped).
	Warn func(msg string)
}

// Result describes a finished build.
type Result struct {
	// Bootstrap is the RAFS v6 bootstrap (also embedded in the blob when
	// InlineMeta is set; there it carries the placeholder blob id).
	Bootstrap []byte
	// BlobID is the sha256 hex of the written blob ("" if none).
	BlobID string
	// BlobSize is the size of the written blob.
	BlobSize uint64
	// HasBlob reports whether the blob is referenced by the bootstrap.
	HasBlob bool
	// Blobs lists the ids of all blobs the bootstrap references.
	Blobs []string
	// BlobMeta is the `<blob_id>.blob.meta` cache file content.
	BlobMeta []byte
	// UncompressedSize is the size of the blob's uncompressed data.
	UncompressedSize uint64
	// Stats counts files, chunks and deduplicated bytes.
	Stats Stats
}

func (o *Options) defaults() error {
	if o.ChunkSize == 0 {
		o.ChunkSize = rafs.DefaultChunkSize
	}
	if err := ValidateSize("chunk size", uint64(o.ChunkSize)); err != nil {
		return err
	}
	if o.BatchSize != 0 {
		if err := ValidateSize("batch size", uint64(o.BatchSize)); err != nil {
			return err
		}
		if o.BatchSize > o.ChunkSize {
			return fmt.Errorf("batch size %#x is larger than the chunk size %#x", o.BatchSize, o.ChunkSize)
		}
	}
	if o.Whiteout == "" {
		o.Whiteout = WhiteoutOCI
	}
	if o.CompressionLevel < 0 || o.CompressionLevel > 22 {
		return fmt.Errorf("invalid compression level %d (want 1–22)", o.CompressionLevel)
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	switch o.Compressor {
	case compress.None, compress.Lz4Block, compress.Zstd:
	default:
		return fmt.Errorf("compressor %s cannot be used to build blobs (use none, lz4_block or zstd)", o.Compressor)
	}
	return nil
}

// ValidateSize checks a chunk or batch size: a power of two in
// [0x1000, 0x1000000].
func ValidateSize(what string, v uint64) error {
	if v < rafs.MinChunkSize || v > rafs.MaxChunkSize || v&(v-1) != 0 {
		return fmt.Errorf("invalid %s %#x: must be a power of two between 0x1000 and 0x1000000", what, v)
	}
	return nil
}

// BlobOpener opens a blob by id: its bytes and size, and a function that
// releases it.
type BlobOpener func(blobID string) (r io.ReaderAt, size int64, release func(), err error)

// addBlobChunks adds every plain chunk of a blob to known, reading its
// chunk-info table and its chunk digests (hashing each chunk when the
// blob has no digest array).
func (b *base) addBlobChunks(bi rafs.BlobInfo, idx uint32, open BlobOpener, dig digester.Algorithm) error {
	r, size, release, err := open(bi.BlobID)
	if err != nil {
		return err
	}
	defer release()
	br, err := blob.Open(r, size)
	if err != nil {
		return fmt.Errorf("parent blob %s: %w", bi.BlobID, err)
	}
	infos := br.ChunkInfos()
	digs, haveDigs := br.ChunkDigests()
	var buf []byte
	for i, ci := range infos {
		if ci.IsZran() || ci.IsBatch() || ci.IsEncrypted() {
			continue
		}
		var d digester.Digest
		if haveDigs && i < len(digs) {
			d = digs[i]
		} else {
			data, err := br.ReadChunk(ci, bi.Compressor, buf)
			if err != nil {
				return fmt.Errorf("parent blob %s chunk %d: %w", bi.BlobID, i, err)
			}
			buf = data[:0]
			d = digester.Sum(dig, data)
		}
		if _, ok := b.known[d]; ok {
			continue
		}
		c := rafs.ChunkInfo{Digest: d, BlobIndex: idx, CompressedSize: ci.CompressedSize, UncompressedSize: ci.UncompressedSize,
			CompressedOffset: ci.CompressedOffset, UncompressedOffset: ci.UncompressedOffset, Index: uint32(i)}
		if ci.Compressed {
			c.Flags |= rafs.ChunkCompressed
		}
		b.known[d] = c
	}
	return nil
}

// base holds what a layer is built against: the lower tree, the blob
// table so far and the digests of reusable chunks.
type base struct {
	tree  *rafs.Node
	blobs []rafs.BlobInfo
	known map[digester.Digest]rafs.ChunkInfo
}

func loadBase(ctx context.Context, o *Options) (*base, error) {
	b := &base{known: map[digester.Digest]rafs.ChunkInfo{}}
	blobIdx := map[string]uint32{}
	add := func(rd *rafs.Reader, what string, keepTree bool) error {
		if rd.ChunkSize() != o.ChunkSize {
			return fmt.Errorf("%s has chunk size %#x, build uses %#x", what, rd.ChunkSize(), o.ChunkSize)
		}
		if rd.Ext.Flags.Digester() != o.Digester {
			return fmt.Errorf("%s uses digester %s, build uses %s", what, rd.Ext.Flags.Digester(), o.Digester)
		}
		tree, err := rd.Load(ctx, rafs.LoadOptions{})
		if err != nil {
			return fmt.Errorf("load %s: %w", what, err)
		}
		remap := make([]uint32, len(rd.Blobs))
		for i, bi := range rd.Blobs {
			idx, ok := blobIdx[bi.BlobID]
			if !ok {
				idx = uint32(len(b.blobs))
				blobIdx[bi.BlobID] = idx
				bi.Index = idx
				b.blobs = append(b.blobs, bi)
			}
			remap[i] = idx
		}
		remapChunks(tree, remap)
		collectChunks(tree, b.known)
		if keepTree {
			b.tree = tree
		}
		return nil
	}
	if o.Parent != nil {
		if err := add(o.Parent, "parent bootstrap", true); err != nil {
			return nil, err
		}
		if o.ParentBlobs != nil {
			for _, bi := range o.Parent.Blobs {
				err := b.addBlobChunks(bi, blobIdx[bi.BlobID], o.ParentBlobs, o.Digester)
				if err != nil && !errors.Is(err, fs.ErrNotExist) {
					return nil, err
				}
			}
		}
	}
	if o.ChunkDict != nil {
		if err := add(o.ChunkDict, "chunk dictionary", false); err != nil {
			return nil, err
		}
	}
	for i, d := range o.ChunkDicts {
		if err := add(d, fmt.Sprintf("chunk dictionary %d", i+1), false); err != nil {
			return nil, err
		}
	}
	if len(b.blobs) >= rafs.MaxBlobs {
		return nil, fmt.Errorf("parent and chunk dictionary reference %d blobs; the limit is %d", len(b.blobs), rafs.MaxBlobs)
	}
	return b, nil
}

// Create builds one layer from an uncompressed tar stream, writing the
// data blob strictly sequentially to blobOut (which may be a pipe).
func Create(ctx context.Context, tarStream io.Reader, blobOut io.Writer, o Options) (*Result, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	b, err := loadBase(ctx, &o)
	if err != nil {
		return nil, err
	}
	newIdx := uint32(len(b.blobs))
	bw, err := blob.NewWriter(blobOut, blob.WriterOptions{
		Compressor:  o.Compressor,
		ChunkInfoV2: o.BatchSize > 0,
		InlineMeta:  o.InlineMeta,
		TOC:         o.TOC,
	})
	if err != nil {
		return nil, err
	}
	pl := newPipeline(o.ChunkSize, o.BatchSize, o.BatchLimit, o.Compressor, o.CompressionLevel, o.Digester, o.Workers, newIdx, b.known, bw, o.BlobCache)
	var sink fileSink = pl
	hot := append(append([]string(nil), o.Prefetch...), o.HotFiles...)
	var sp *spool
	if len(hot) > 0 && !namesRoot(hot) {
		if sp, err = newSpool(o.SpoolDir); err != nil {
			pl.close()
			return nil, err
		}
		defer sp.Close()
		sink = sp
	}
	upper, rerr := readTar(ctx, tarStream, sink, o.Warn)
	if rerr == nil {
		// Read the source to its end, so that a compressed source's
		// checksum trailer is verified.
		if _, err := io.Copy(io.Discard, tarStream); err != nil {
			rerr = fmt.Errorf("after the end of the tar archive: %w", err)
		}
	}
	if rerr == nil && sp != nil {
		rerr = sp.emit(ctx, upper, hot, pl)
	}
	cerr := pl.close()
	if rerr != nil {
		return nil, rerr
	}
	if cerr != nil {
		return nil, cerr
	}
	// Complete this layer's chunks with their compressed locations.
	for _, ino := range bfs(upper) {
		for i := range ino.Chunks {
			ino.Chunks[i] = pl.chunkInfo(ino.Chunks[i])
		}
	}

	var tree *rafs.Node
	if b.tree != nil || o.Whiteout != WhiteoutNone {
		tree = applyLayer(b.tree, upper, o.Whiteout)
	} else {
		tree = upper
	}

	hasOwn := len(pl.cis) > 0 || o.InlineMeta
	ownInfo := func(r blob.Result, id string) rafs.BlobInfo {
		return rafs.BlobInfo{
			BlobID:             id,
			Index:              newIdx,
			ChunkSize:          o.ChunkSize,
			ChunkCount:         uint32(len(pl.cis)),
			Compressor:         o.Compressor,
			Digester:           o.Digester,
			Features:           r.Features,
			CompressedSize:     uint64(r.Size),
			UncompressedSize:   pl.uncompOff,
			TOCSize:            r.TOCSize,
			TOCDigest:          r.TOCDigest,
			CICompressor:       r.CICompressor,
			CIOffset:           r.CIOffset,
			CICompressedSize:   r.CICompressedSize,
			CIUncompressedSize: r.CIUncompressedSize,
		}
	}
	withOwn := func(own rafs.BlobInfo) []rafs.BlobInfo {
		if !hasOwn {
			return b.blobs
		}
		return append(append([]rafs.BlobInfo(nil), b.blobs...), own)
	}
	keep := -1
	if o.InlineMeta {
		// An inline-meta blob stays in the table even without chunks:
		// it carries the layer's bootstrap.
		keep = int(newIdx)
	}
	fp := blob.FinishParams{ChunkInfos: pl.cis, BatchContexts: pl.contexts}
	if o.TOC {
		fp.ChunkDigests = pl.digests
	}
	var boot []byte
	var used []string
	if o.InlineMeta {
		fp.BootstrapFunc = func(r blob.Result) ([]byte, error) {
			var err error
			boot, used, err = marshalTree(tree, withOwn(ownInfo(r, rafs.PlaceholderBlobID)), &o, keep)
			return boot, err
		}
	}
	res, err := bw.Finish(fp)
	if err != nil {
		return nil, err
	}
	if !o.InlineMeta {
		// A separate blob is named by the sha256 of its content, known
		// only once it is complete.
		boot, used, err = marshalTree(tree, withOwn(ownInfo(res, res.BlobID())), &o, keep)
		if err != nil {
			return nil, err
		}
	}
	out := &Result{Bootstrap: boot, BlobID: res.BlobID(), BlobSize: uint64(res.Size), HasBlob: hasOwn,
		Blobs: used, UncompressedSize: pl.uncompOff, Stats: pl.stats}
	if len(pl.cis) > 0 {
		var ci []byte
		for _, c := range pl.cis {
			ci = blob.AppendChunkInfo(ci, c, o.BatchSize > 0)
		}
		for _, bc := range pl.contexts {
			if ci, err = bc.AppendBinary(ci); err != nil {
				return nil, err
			}
		}
		if out.BlobMeta, err = blob.MarshalMetaFile(res.MetaHeader, ci); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// marshalTree compacts the blob table to the blobs the tree references
// (plus blob index keep, if >= 0), keeping their original order, so that
// layer blobs stay in layer order, and writes the bootstrap.
func marshalTree(tree *rafs.Node, blobs []rafs.BlobInfo, o *Options, keep int) ([]byte, []string, error) {
	order := bfs(tree)
	used := make([]bool, len(blobs))
	if keep >= 0 && keep < len(blobs) {
		used[keep] = true
	}
	for _, ino := range order {
		for _, c := range ino.Chunks {
			if int(c.BlobIndex) >= len(blobs) {
				return nil, nil, fmt.Errorf("chunk refers to unknown blob %d", c.BlobIndex)
			}
			used[c.BlobIndex] = true
		}
	}
	remap := make([]uint32, len(blobs))
	var out []rafs.BlobInfo
	for i, bi := range blobs {
		if used[i] {
			remap[i] = uint32(len(out))
			bi.Index = uint32(len(out))
			out = append(out, bi)
		}
	}
	for _, ino := range order {
		for i := range ino.Chunks {
			ino.Chunks[i].BlobIndex = remap[ino.Chunks[i].BlobIndex]
		}
	}
	var prefetch []*rafs.Inode
	for _, p := range o.Prefetch {
		n := resolve(tree, p)
		if n == nil {
			if o.Warn != nil {
				o.Warn(fmt.Sprintf("prefetch path %s does not exist in the image; ignored", p))
			}
			continue
		}
		prefetch = append(prefetch, n.Inode)
	}
	boot, err := rafs.Marshal(tree, rafs.WriterOptions{
		ChunkSize: o.ChunkSize,
		Flags:     rafs.FlagsFor(o.Compressor, o.Digester) | rafs.FlagExplicitUIDGID,
		Blobs:     out,
		Prefetch:  prefetch,
	})
	if err != nil {
		return nil, nil, err
	}
	ids := make([]string, len(out))
	for i, bi := range out {
		ids[i] = bi.BlobID
	}
	return boot, ids, nil
}

// bfs returns the unique inodes of a tree in breadth-first order.
func bfs(root *rafs.Node) []*rafs.Inode {
	var out []*rafs.Inode
	seen := map[*rafs.Inode]bool{}
	q := []*rafs.Node{root}
	for len(q) > 0 {
		n := q[0]
		q = q[1:]
		if seen[n.Inode] {
			continue
		}
		seen[n.Inode] = true
		out = append(out, n.Inode)
		q = append(q, n.Children...)
	}
	return out
}
