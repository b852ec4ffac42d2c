package blob

import (
	"crypto/sha256"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
)

// MaxBootstrapSize is the largest RAFS bootstrap upstream accepts
// (RAFS_MAX_METADATA_SIZE, 2 GiB).
const MaxBootstrapSize = 1 << 31

// maxChunkData is the largest chunk-data area: compressed offsets have 40
// bits.
const maxChunkData = 1 << 40

// InlineMetaBlobID is the placeholder blob id upstream stores in the blob
// table of a bootstrap inlined in its own data blob (64 'x'); merge
// replaces it with the layer digest.
const InlineMetaBlobID = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"

// WriterOptions selects the blob layout, mirroring nydus-image create.
type WriterOptions struct {
	// Compressor is the blob's compressor (--compressor). Chunk data is
	// handed to the Writer already compressed; the Writer uses this
	// algorithm for the CI array, which is stored compressed only if that
	// makes it smaller.
	Compressor compress.Algorithm
	// ChunkInfoV2 selects 24-byte V2 CI entries (upstream uses them for
	// batch and encrypted blobs).
	ChunkInfoV2 bool
	// InlineMeta embeds the RAFS bootstrap in the blob
	// (--blob-inline-meta): sections get tar headers, the features get
	// INLINED_FS_META and HAS_TAR_HEADER, and Finish needs a bootstrap.
	InlineMeta bool
	// TOC appends a ToC (--features blob-toc): sections get tar headers,
	// chunk digests may be stored, the inline bootstrap is zstd
	// compressed, and the features get HAS_TOC and HAS_TAR_HEADER.
	TOC bool
	// Zran writes the "ref" blob of a gzip layer read in place (upstream
	// `create --type targz-ref`): no chunk data, zran chunk infos
	// pointing into the original gzip file, the zran context table after
	// them; features ZRAN, SEPARATE and CHUNK_INFO_V2. Compressor then
	// compresses the CI array only (upstream uses zstd).
	Zran bool
}

// FinishParams carries the metadata written after the chunk data.
type FinishParams struct {
	// ChunkInfos describes every chunk of the blob, in chunk-index order.
	// Offsets refer to data written with WriteChunkData. Zran and
	// encrypted chunks are not supported.
	ChunkInfos []ChunkInfo
	// ChunkDigests are the digests of the uncompressed chunks, one per
	// chunk. They are stored ("blob.digest", INLINED_CHUNK_DIGEST) only
	// with the TOC option, as upstream does; giving them without it is an
	// error.
	ChunkDigests []digester.Digest
	// BatchContexts are appended to the CI array of a BATCH blob (needs
	// ChunkInfoV2); batch chunks refer to them by index.
	BatchContexts []BatchContext
	// ZranContexts and ZranDicts (their dictionaries, which
	// ZranContext.DictOffset indexes) are appended to the CI array of a
	// Zran blob; zran chunks refer to the contexts by index.
	ZranContexts []ZranContext
	ZranDicts    []byte
	// DataSize is the size of the original gzip file of a Zran blob.
	DataSize uint64
	// Bootstrap is the RAFS bootstrap to inline; use it or BootstrapFunc
	// when InlineMeta is set.
	Bootstrap []byte
	// BootstrapFunc is called after the chunk metadata is written and
	// returns the bootstrap to inline. It receives the blob state at that
	// point, which is what upstream records in an inlined bootstrap's blob
	// table: Size (used as compressed_size), chunk count, sizes, features
	// and CI location, with blob id InlineMetaBlobID and no ToC size or
	// digest. Its Digest, BlobHash and TOC fields are zero.
	BootstrapFunc func(Result) ([]byte, error)
}

// Result describes a finished blob, including everything the blob table
// entry needs.
type Result struct {
	// Size is the blob size (the blob table's compressed_size).
	Size int64
	// Digest is the sha256 of the whole blob: the OCI layer digest, which
	// the snapshotter uses as the blob id.
	Digest digester.Digest
	// BlobHash is upstream's blob_hash: the sha256 of the blob without
	// the chunk digest array payload (its tar header is included).
	// nydus-image names the blob file after it and uses it as blob id
	// when neither --blob-id nor --blob-inline-meta is given. It equals
	// Digest when no digest array is written.
	BlobHash digester.Digest
	// ChunkCount is the number of chunks.
	ChunkCount uint32
	// CompressedDataSize is the size of the chunk data at offset 0.
	CompressedDataSize uint64
	// UncompressedSize is the 4 KiB aligned uncompressed size of all
	// chunks (the blob table's uncompressed_size).
	UncompressedSize uint64
	// Features are the blob features for the blob table (the same value
	// as in the MetaHeader).
	Features Features
	// MetaHeader is the header written after the CI array; zero if the
	// blob has no chunks.
	MetaHeader MetaHeader
	// CICompressor is the compressor of the stored CI array (the blob
	// table's ci_compressor; none if compression did not shrink it).
	CICompressor compress.Algorithm
	// CIOffset is the offset of the CI array (ci_offset).
	CIOffset uint64
	// CICompressedSize is the stored size of the CI array
	// (ci_compressed_size).
	CICompressedSize uint64
	// CIUncompressedSize is the size of the uncompressed CI data,
	// including batch contexts (ci_uncompressed_size).
	CIUncompressedSize uint64
	// TOC is the ToC written, if any.
	TOC TOC
	// TOCSize is the blob_toc_size (entries plus tar header); 0 without
	// ToC.
	TOCSize uint32
	// TOCDigest is the blob_toc_digest; zero without ToC.
	TOCDigest digester.Digest
}

// BlobID returns Digest in hex, the id of the blob in a registry.
func (r Result) BlobID() string { return r.Digest.String() }

// Writer writes a blob strictly sequentially to an io.Writer, which may be
// a pipe or FIFO: it never seeks or truncates, and it keeps no chunk data.
// Write the already compressed chunks with WriteChunkData, then call
// Finish once. A Writer is not safe for concurrent use.
type Writer struct {
	w        io.Writer
	opts     WriterOptions
	off      int64
	dataSize int64
	all      hash.Hash
	blobHash hash.Hash
	finished bool
	err      error
}

// NewWriter returns a Writer writing to w.
func NewWriter(w io.Writer, opts WriterOptions) (*Writer, error) {
	if !opts.Compressor.Valid() {
		return nil, fmt.Errorf("new blob writer: compressor %v: %w", opts.Compressor, compress.ErrUnsupported)
	}
	if opts.TOC {
		if _, err := tocFlags(opts.Compressor); err != nil {
			return nil, fmt.Errorf("new blob writer: ToC: %w", err)
		}
	}
	return &Writer{w: w, opts: opts, all: sha256.New()}, nil
}

// Offset returns the number of bytes written so far.
func (w *Writer) Offset() int64 { return w.off }

// write writes p and updates the hashes; the chunk digest array is left
// out of blobHash, as upstream does.
func (w *Writer) write(p []byte, inBlobHash bool) error {
	if w.err != nil {
		return w.err
	}
	n, err := w.w.Write(p)
	// Until the first byte that blobHash leaves out, the two hashes are
	// equal: hash once, and fork the state there.
	if !inBlobHash && w.blobHash == nil {
		w.blobHash = cloneHash(w.all)
	}
	w.all.Write(p[:n])
	if inBlobHash && w.blobHash != nil {
		w.blobHash.Write(p[:n])
	}
	w.off += int64(n)
	if err == nil && n != len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		w.err = fmt.Errorf("write blob at offset %d: %w", w.off, err)
	}
	return w.err
}

func (w *Writer) writeTar(name string, size int64) error {
	h := TarHeader(name, size)
	return w.write(h[:], true)
}

// WriteChunkData appends already compressed chunk data and returns its
// offset in the blob, the CompressedOffset of its ChunkInfo.
func (w *Writer) WriteChunkData(p []byte) (uint64, error) {
	if w.finished {
		return 0, errors.New("write chunk data: blob writer already finished")
	}
	if w.dataSize+int64(len(p)) > maxChunkData {
		return 0, fmt.Errorf("write chunk data: %d bytes at offset %d exceed the 40-bit offset limit", len(p), w.dataSize)
	}
	off := w.dataSize
	if err := w.write(p, true); err != nil {
		return 0, fmt.Errorf("write chunk data: %w", err)
	}
	w.dataSize += int64(len(p))
	return uint64(off), nil
}

// Finish writes everything after the chunk data in upstream's order and
// format and returns the blob description:
//
//   - tar header "image.blob" (with InlineMeta or TOC);
//   - the CI array, compressed with the blob compressor only if that
//     makes it smaller, then the 4096-byte MetaHeader, then tar header
//     "blob.meta" (with InlineMeta or TOC);
//   - with TOC and digests: the digest array and tar header "blob.digest";
//   - with InlineMeta: the bootstrap (zstd-compressed if that shrinks it
//     when TOC is on, raw otherwise) and tar header "image.boot";
//   - with TOC: the ToC entries and tar header "rafs.blob.toc".
//
// A blob without chunks has no "image.blob" or "blob.meta" section; without
// chunks and without InlineMeta nothing is written at all (upstream then
// produces no blob). After Finish, or after any write error, the Writer
// cannot be used again.
func (w *Writer) Finish(p FinishParams) (Result, error) {
	if w.finished {
		return Result{}, errors.New("finish blob: blob writer already finished")
	}
	w.finished = true
	if w.err != nil {
		return Result{}, fmt.Errorf("finish blob: %w", w.err)
	}
	res, err := w.finish(p)
	if err != nil {
		return Result{}, fmt.Errorf("finish blob: %w", err)
	}
	return res, nil
}

func (w *Writer) finish(p FinishParams) (Result, error) {
	o := w.opts
	n := len(p.ChunkInfos)
	if n > MaxChunksPerBlob {
		return Result{}, fmt.Errorf("%d chunks exceed %d", n, MaxChunksPerBlob)
	}
	if n == 0 && (w.dataSize > 0 || len(p.ZranContexts) > 0) {
		return Result{}, fmt.Errorf("%d bytes of chunk data but no chunk infos", w.dataSize)
	}
	if (len(p.BatchContexts) > 0 || o.Zran) && !o.ChunkInfoV2 {
		return Result{}, errors.New("batch and zran contexts need chunk-info v2")
	}
	if o.Zran && (w.dataSize > 0 || len(p.BatchContexts) > 0) {
		return Result{}, errors.New("a zran blob holds no chunk data and no batches")
	}
	if !o.Zran && (len(p.ZranContexts) > 0 || len(p.ZranDicts) > 0) {
		return Result{}, errors.New("zran contexts need the Zran option")
	}
	if len(p.ChunkDigests) > 0 && !o.TOC {
		return Result{}, errors.New("chunk digests are stored only with the ToC option (upstream writes blob.digest only with blob-toc)")
	}
	if len(p.ChunkDigests) > 0 && len(p.ChunkDigests) != n {
		return Result{}, fmt.Errorf("%d chunk digests for %d chunks", len(p.ChunkDigests), n)
	}
	if o.InlineMeta == (p.Bootstrap == nil && p.BootstrapFunc == nil) {
		if o.InlineMeta {
			return Result{}, errors.New("inline meta needs a bootstrap")
		}
		return Result{}, errors.New("a bootstrap was given without the InlineMeta option")
	}
	if p.Bootstrap != nil && p.BootstrapFunc != nil {
		return Result{}, errors.New("both Bootstrap and BootstrapFunc are set")
	}

	// Feature bits as upstream's BuildContext and dump_meta_data set them.
	features := FeatureCapTarTOC
	if o.InlineMeta {
		features |= FeatureInlinedFSMeta | FeatureHasTarHeader
	}
	if o.TOC {
		features |= FeatureHasTOC | FeatureHasTarHeader
	}
	res := Result{ChunkCount: uint32(n), CompressedDataSize: uint64(w.dataSize)}
	writeDigests := n > 0 && len(p.ChunkDigests) > 0
	if n > 0 {
		features |= FeatureAligned
		if o.ChunkInfoV2 {
			features |= FeatureChunkInfoV2
		}
		if len(p.BatchContexts) > 0 {
			features |= FeatureBatch
		}
		if o.Zran {
			features |= FeatureZran | FeatureSeparate
		}
		if writeDigests {
			features |= FeatureInlinedChunkDigest
		}
		for i, ci := range p.ChunkInfos {
			if err := ci.Validate(o.ChunkInfoV2); err != nil {
				return Result{}, fmt.Errorf("chunk info %d: %w", i, err)
			}
			if ci.IsEncrypted() || ci.IsZran() != o.Zran {
				return Result{}, fmt.Errorf("chunk info %d: encrypted chunks, and zran chunks outside a zran blob: %w", i, ErrUnsupported)
			}
			res.UncompressedSize = max(res.UncompressedSize, ci.AlignedUncompressedEnd())
		}
		lim := ChunkLimits{Features: features, CompressedSize: uint64(w.dataSize), BatchContexts: p.BatchContexts, ZranContexts: p.ZranContexts}
		if o.Zran {
			lim.CompressedSize = p.DataSize
			res.CompressedDataSize = p.DataSize
		} else if w.dataSize == 0 {
			return Result{}, errors.New("chunk infos but no chunk data")
		}
		if err := ValidateChunkInfos(p.ChunkInfos, lim); err != nil {
			return Result{}, err
		}
	}
	res.Features = features
	tarHeaders := o.InlineMeta || o.TOC
	var entries []TOCEntry
	addEntry := func(name string, algo compress.Algorithm, sum digester.Digest, off, csize, usize uint64) error {
		flags, err := tocFlags(algo)
		if err != nil {
			return fmt.Errorf("toc entry %q: %w", name, err)
		}
		entries = append(entries, TOCEntry{Flags: flags, Name: name, UncompressedDigest: sum,
			CompressedOffset: off, CompressedSize: csize, UncompressedSize: usize})
		return nil
	}

	if n > 0 {
		// A zran blob's data is the original gzip file: it has no
		// chunk-data section of its own (upstream writes none for
		// SEPARATE blobs).
		if tarHeaders && !o.Zran {
			if err := w.writeTar(SectionChunkData, w.dataSize); err != nil {
				return Result{}, err
			}
			if o.TOC {
				// Upstream's offset is blob_offset (0); its digest covers
				// the chunk data and the tar header just written.
				var sum digester.Digest
				w.blobHashState().Sum(sum[:0])
				if err := addEntry(SectionChunkData, compress.None, sum, 0, uint64(w.dataSize), res.UncompressedSize); err != nil {
					return Result{}, err
				}
			}
		}
		if err := w.writeMeta(p, features, &res, tarHeaders, addEntry); err != nil {
			return Result{}, err
		}
		if writeDigests {
			arr := make([]byte, 0, n*digester.Size)
			for _, d := range p.ChunkDigests {
				arr = append(arr, d[:]...)
			}
			off := uint64(w.off)
			if err := w.write(arr, false); err != nil {
				return Result{}, err
			}
			if err := w.writeTar(SectionChunkDigest, int64(len(arr))); err != nil {
				return Result{}, err
			}
			if err := addEntry(SectionChunkDigest, compress.None, sha256.Sum256(arr), off, uint64(len(arr)), uint64(len(arr))); err != nil {
				return Result{}, err
			}
		}
	}

	if o.InlineMeta {
		boot := p.Bootstrap
		if p.BootstrapFunc != nil {
			pre := res
			pre.Size = w.off
			var err error
			if boot, err = p.BootstrapFunc(pre); err != nil {
				return Result{}, fmt.Errorf("build inline bootstrap: %w", err)
			}
		}
		if len(boot) == 0 || len(boot) > MaxBootstrapSize {
			return Result{}, fmt.Errorf("inline bootstrap size %d not in [1, %d]", len(boot), MaxBootstrapSize)
		}
		stored, algo := boot, compress.None
		if o.TOC {
			c, ok, err := compress.CompressIfSmaller(compress.Zstd, nil, boot)
			if err != nil {
				return Result{}, fmt.Errorf("compress inline bootstrap: %w", err)
			}
			if ok {
				stored, algo = c, compress.Zstd
			}
		}
		off := uint64(w.off)
		if err := w.write(stored, true); err != nil {
			return Result{}, err
		}
		if err := w.writeTar(SectionBootstrap, int64(len(stored))); err != nil {
			return Result{}, err
		}
		if o.TOC {
			if err := addEntry(SectionBootstrap, algo, sha256.Sum256(boot), off, uint64(len(stored)), uint64(len(boot))); err != nil {
				return Result{}, err
			}
		}
	}

	if o.TOC && (n > 0 || o.InlineMeta) {
		res.TOC = TOC{Entries: entries}
		b, err := res.TOC.MarshalBinary()
		if err != nil {
			return Result{}, err
		}
		if err := w.write(b, true); err != nil {
			return Result{}, err
		}
		res.TOCSize = uint32(len(b))
		res.TOCDigest = sha256.Sum256(b)
	}
	res.Size = w.off
	w.all.Sum(res.Digest[:0])
	w.blobHashState().Sum(res.BlobHash[:0])
	return res, nil
}

// writeMeta writes the CI array and MetaHeader (upstream
// Blob::dump_meta_data) and records them in res.
func (w *Writer) writeMeta(p FinishParams, features Features, res *Result, tarHeaders bool,
	addEntry func(string, compress.Algorithm, digester.Digest, uint64, uint64, uint64) error) error {
	v2 := w.opts.ChunkInfoV2
	size := entrySize(v2)
	ci := make([]byte, 0, len(p.ChunkInfos)*size+(len(p.BatchContexts)+len(p.ZranContexts))*ContextSize+len(p.ZranDicts))
	for _, c := range p.ChunkInfos {
		ci = AppendChunkInfo(ci, c, v2)
	}
	h := MetaHeader{Features: features, CIEntries: uint32(len(p.ChunkInfos))}
	if len(p.BatchContexts) > 0 || len(p.ZranContexts) > 0 {
		h.ContextOffset = uint64(len(ci))
		for _, bc := range p.BatchContexts {
			ci, _ = bc.AppendBinary(ci)
		}
		for _, zc := range p.ZranContexts {
			ci, _ = zc.AppendBinary(ci)
		}
		ci = append(ci, p.ZranDicts...)
		h.ContextSize = uint64(len(ci)) - h.ContextOffset
		h.ContextCount = uint32(len(p.BatchContexts) + len(p.ZranContexts))
	}
	stored, compressed, err := compress.CompressIfSmaller(w.opts.Compressor, nil, ci)
	if err != nil {
		return fmt.Errorf("compress chunk infos: %w", err)
	}
	h.CICompressor = compress.None
	if compressed {
		h.CICompressor = w.opts.Compressor
	}
	h.CIOffset = uint64(w.off)
	h.CICompressedSize = uint64(len(stored))
	h.CIUncompressedSize = uint64(len(ci))
	hb, err := h.MarshalBinary()
	if err != nil {
		return err
	}
	if err := w.write(stored, true); err != nil {
		return err
	}
	if err := w.write(hb, true); err != nil {
		return err
	}
	if tarHeaders {
		if err := w.writeTar(SectionMeta, int64(len(stored)+len(hb))); err != nil {
			return err
		}
	}
	res.MetaHeader = h
	res.CICompressor = h.CICompressor
	res.CIOffset = h.CIOffset
	res.CICompressedSize = h.CICompressedSize
	res.CIUncompressedSize = h.CIUncompressedSize
	if w.opts.TOC {
		if err := addEntry(SectionMeta, h.CICompressor, sha256.Sum256(ci), h.CIOffset, h.CICompressedSize, h.CIUncompressedSize); err != nil {
			return err
		}
		if err := addEntry(SectionMetaHeader, compress.None, sha256.Sum256(hb), h.CIOffset+h.CICompressedSize, MetaHeaderSize, MetaHeaderSize); err != nil {
			return err
		}
	}
	return nil
}

// blobHashState returns the hash of everything but the chunk digest array.
func (w *Writer) blobHashState() hash.Hash {
	if w.blobHash == nil {
		return w.all
	}
	return w.blobHash
}

// cloneHash copies a hash's state.
func cloneHash(h hash.Hash) hash.Hash {
	if c, ok := h.(hash.Cloner); ok {
		if d, err := c.Clone(); err == nil {
			return d
		}
	}
	st, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		panic(fmt.Sprintf("blob: cannot copy sha256 state: %v", err))
	}
	d := sha256.New()
	if err := d.(encoding.BinaryUnmarshaler).UnmarshalBinary(st); err != nil {
		panic(fmt.Sprintf("blob: cannot copy sha256 state: %v", err))
	}
	return d
}
