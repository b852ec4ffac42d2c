package builder

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/zran"
)

// ZranResult describes a finished zran ("OCI-referenced") build.
type ZranResult struct {
	Result
	// DataBlobID and DataSize are the sha256 hex and size of the original
	// gzip layer: the blob the bootstrap's chunks point into.
	DataBlobID string
	DataSize   uint64
	// Contexts is the number of zran contexts, and DictBytes the bytes
	// of their windows (before the CI array is compressed).
	Contexts, DictBytes int
	// TOCDigest and TOCSize are the ref blob's ToC digest and size (with
	// the TOC option), which merge records (--blob-toc-digests).
	TOCDigest digester.Digest
	TOCSize   uint32
}

// CreateZranRef builds one layer from a gzip-compressed tar without
// copying its data (upstream `nydus-image create --type targz-ref`): the
// bootstrap's only blob is the original gzip file, named by its sha256,
// and its chunks are zran chunks located by contexts (a block boundary
// of the gzip stream and its 32 KiB window) every span compressed bytes
// or so (0: zran.DefaultSpan). refOut receives the small "ref" blob that
// holds the chunk-info table with the contexts, the chunk digests and
// (with InlineMeta) the bootstrap, strictly sequentially.
//
// Chunks are sha256-digested and the compressor recorded is gzip, as
// upstream's ref conversions force. Options that would change the data
// (Compressor, BatchSize, ChunkDict, Parent) are refused; Whiteout,
// InlineMeta, TOC, ChunkSize and Prefetch apply as for Create.
func CreateZranRef(ctx context.Context, gz io.Reader, refOut io.Writer, span int64, o Options) (*ZranResult, error) {
	switch {
	case o.Compressor != compress.None && o.Compressor != compress.GZip && o.Compressor != compress.Zstd:
		return nil, fmt.Errorf("compressor %s: a zran layer's data is the original gzip file", o.Compressor)
	case o.BatchSize != 0:
		return nil, errors.New("batches need data to be recompressed: a zran layer has none")
	case o.Parent != nil || o.ChunkDict != nil || len(o.ChunkDicts) > 0:
		return nil, errors.New("a zran layer reuses no chunks from a parent or a chunk dictionary: its data is the original gzip file")
	case o.Digester != digester.Sha256 && o.Digester != digester.Blake3:
		return nil, fmt.Errorf("digester %s", o.Digester)
	}
	o.Compressor, o.Digester = compress.Zstd, digester.Sha256
	if err := o.defaults(); err != nil {
		return nil, err
	}
	z := zran.NewReader(gz)
	zs := &zranSink{g: zran.NewGenerator(z, span), chunkSize: o.ChunkSize, known: map[digester.Digest]rafs.ChunkInfo{}}
	upper, err := readTar(ctx, z, zs, o.Warn)
	if err == nil {
		// Read to the end: every member's CRC-32 is checked, and the
		// digest and size cover the whole file.
		if _, err = io.Copy(io.Discard, z); err != nil {
			err = fmt.Errorf("after the end of the tar archive: %w", err)
		}
	}
	if err != nil {
		return nil, err
	}
	d := z.Digest()
	dataID, dataSize := digester.Digest(d).String(), uint64(z.Size())

	// A context whose chunks were all found earlier in the layer is
	// dropped (a table may not hold more contexts than chunks).
	all := zs.g.Contexts()
	renum := make([]int, len(all))
	for i := range renum {
		renum[i] = -1
	}
	var ctxs []zran.Context
	for i := range zs.cis {
		old := int(zs.cis[i].ContextIndex())
		if renum[old] < 0 {
			renum[old] = len(ctxs)
			ctxs = append(ctxs, all[old])
		}
		zs.cis[i].Data = uint64(renum[old])<<32 | uint64(zs.cis[i].ContextOffset())
	}
	var zcs []blob.ZranContext
	var dicts []byte
	for _, c := range ctxs {
		zcs = append(zcs, blob.ZranContext{InOffset: uint64(c.InOffset), OutOffset: uint64(c.OutOffset), DictOffset: uint64(len(dicts)),
			InLen: c.InLen, OutLen: c.OutLen, DictSize: uint32(len(c.Window)), CtxByte: c.CtxByte, CtxBits: c.CtxBits})
		dicts = append(dicts, c.Window...)
	}

	var tree *rafs.Node
	if o.Whiteout != WhiteoutNone {
		tree = applyLayer(nil, upper, o.Whiteout)
	} else {
		tree = upper
	}
	bw, err := blob.NewWriter(refOut, blob.WriterOptions{Compressor: compress.Zstd, ChunkInfoV2: true, InlineMeta: o.InlineMeta, TOC: o.TOC, Zran: true})
	if err != nil {
		return nil, err
	}
	hasOwn := len(zs.cis) > 0 || o.InlineMeta
	info := func(r blob.Result) rafs.BlobInfo {
		return rafs.BlobInfo{
			BlobID:             dataID,
			ChunkSize:          o.ChunkSize,
			ChunkCount:         uint32(len(zs.cis)),
			Compressor:         compress.GZip,
			Digester:           digester.Sha256,
			Features:           r.Features,
			CompressedSize:     dataSize,
			UncompressedSize:   zs.uncompOff,
			CICompressor:       r.CICompressor,
			CIOffset:           r.CIOffset,
			CICompressedSize:   r.CICompressedSize,
			CIUncompressedSize: r.CIUncompressedSize,
		}
	}
	blobs := func(r blob.Result) []rafs.BlobInfo {
		if !hasOwn {
			return nil
		}
		return []rafs.BlobInfo{info(r)}
	}
	keep := -1
	if o.InlineMeta {
		keep = 0
	}
	fp := blob.FinishParams{ChunkInfos: zs.cis, ZranContexts: zcs, ZranDicts: dicts, DataSize: dataSize}
	if o.TOC {
		fp.ChunkDigests = zs.digests
	}
	var boot []byte
	var used []string
	if o.InlineMeta {
		// The ref blob's own digest is not known inside it: the
		// bootstrap records none, and merge sets it (upstream's
		// --blob-digests for a SEPARATE blob).
		fp.BootstrapFunc = func(r blob.Result) ([]byte, error) {
			var err error
			boot, used, err = marshalTree(tree, blobs(r), &o, keep)
			return boot, err
		}
	}
	res, err := bw.Finish(fp)
	if err != nil {
		return nil, err
	}
	if !o.InlineMeta {
		bis := blobs(res)
		for i := range bis {
			bis[i].MetaDigest, bis[i].MetaSize = res.Digest, uint64(res.Size)
			if o.TOC {
				bis[i].TOCDigest, bis[i].TOCSize = res.TOCDigest, res.TOCSize
			}
		}
		if boot, used, err = marshalTree(tree, bis, &o, keep); err != nil {
			return nil, err
		}
	}
	out := &ZranResult{Result: Result{Bootstrap: boot, BlobID: res.BlobID(), BlobSize: uint64(res.Size), HasBlob: hasOwn,
		Blobs: used, UncompressedSize: zs.uncompOff, Stats: zs.stats}, DataBlobID: dataID, DataSize: dataSize,
		Contexts: len(zcs), DictBytes: len(dicts), TOCDigest: res.TOCDigest, TOCSize: res.TOCSize}
	if len(zs.cis) > 0 {
		var ci []byte
		for _, c := range zs.cis {
			ci = blob.AppendChunkInfo(ci, c, true)
		}
		for _, c := range zcs {
			ci, _ = c.AppendBinary(ci)
		}
		ci = append(ci, dicts...)
		if out.BlobMeta, err = blob.MarshalMetaFile(res.MetaHeader, ci); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// zranSink records the zran chunks of a layer's files as the tar is read
// through the generator's Reader.
type zranSink struct {
	g         *zran.Generator
	chunkSize uint32
	cis       []blob.ChunkInfo
	digests   []digester.Digest
	known     map[digester.Digest]rafs.ChunkInfo
	uncompOff uint64
	stats     Stats
	buf       []byte
}

func (s *zranSink) addFile(ctx context.Context, name string, ino *rafs.Inode, r io.Reader) error {
	if ino.Size > MaxFileSize {
		return fmt.Errorf("%s: size %d exceeds the limit of %d bytes (2^44, a blob's uncompressed address space)", name, ino.Size, uint64(MaxFileSize))
	}
	s.stats.Files++
	ino.Chunks = ino.Chunks[:0]
	for off := uint64(0); off < ino.Size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(uint64(s.chunkSize), ino.Size-off)
		ctxIdx, err := s.g.BeginChunk(int64(n))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if cap(s.buf) < int(n) {
			s.buf = make([]byte, s.chunkSize)
		}
		data := s.buf[:n]
		if got, err := io.ReadFull(r, data); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("data of %s ends at offset %d, header says %d bytes: %w", name, off+uint64(got), ino.Size, io.ErrUnexpectedEOF)
			}
			return fmt.Errorf("read data of %s at offset %d: %w", name, off, err)
		}
		ref, err := s.g.EndChunk()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if ref.Context != ctxIdx || uint64(ref.Size) != n {
			return fmt.Errorf("%s: zran chunk of %d bytes in context %d, expected %d in %d", name, ref.Size, ref.Context, n, ctxIdx)
		}
		d := digester.Sum(digester.Sha256, data)
		s.stats.Chunks++
		s.stats.Bytes += n
		if c, ok := s.known[d]; ok {
			// The same content earlier in the layer: read from there.
			c.FileOffset = off
			ino.Chunks = append(ino.Chunks, c)
			s.stats.DedupChunks++
			s.stats.DedupBytes += n
			off += n
			continue
		}
		if len(s.cis) >= rafs.MaxChunksPerBlob {
			return fmt.Errorf("blob has more than %d chunks", rafs.MaxChunksPerBlob)
		}
		ci := blob.ChunkInfo{UncompressedOffset: s.uncompOff, UncompressedSize: uint32(n), CompressedOffset: uint64(ref.In),
			CompressedSize: ref.InLen, Compressed: true, Flags: blob.ChunkZran, Data: uint64(ref.Context)<<32 | uint64(ref.Offset)}
		info := rafs.ChunkInfo{Digest: d, Index: uint32(len(s.cis)), Flags: rafs.ChunkCompressed, CompressedOffset: ci.CompressedOffset,
			CompressedSize: ci.CompressedSize, UncompressedOffset: s.uncompOff, UncompressedSize: uint32(n), FileOffset: off}
		s.cis = append(s.cis, ci)
		s.digests = append(s.digests, d)
		s.known[d] = info
		ino.Chunks = append(ino.Chunks, info)
		s.uncompOff += (n + rafs.BlockSize - 1) / rafs.BlockSize * rafs.BlockSize
		s.stats.UniqueChunks++
		s.stats.StoredBytes += n
		off += n
	}
	return nil
}
