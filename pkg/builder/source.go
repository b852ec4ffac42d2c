package builder

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sync/singleflight"

	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// RangeReader reads byte ranges of blobs: local files, a registry, an
// HTTP proxy.
type RangeReader interface {
	ReadRange(ctx context.Context, blobID string, off, n int64) ([]byte, error)
}

// FileSource reads blobs from local files: either one file for every
// blob (File) or <Dir>/<blob_id>.
type FileSource struct {
	// File, when set, serves every blob.
	File string
	// Dir holds blobs named by their id.
	Dir string

	mu    sync.Mutex
	files map[string]*os.File
}

// Close closes the blob files.
func (s *FileSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.files {
		f.Close()
	}
	s.files = nil
	return nil
}

func (s *FileSource) open(blobID string) (*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.files[blobID]; ok {
		return f, nil
	}
	p := s.File
	if p == "" {
		if !IsBlobID(blobID) {
			return nil, fmt.Errorf("blob id %q is not a sha256 hex string", blobID)
		}
		p = filepath.Join(s.Dir, blobID)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", blobID, err)
	}
	if s.files == nil {
		s.files = map[string]*os.File{}
	}
	s.files[blobID] = f
	return f, nil
}

// ReadRange reads n bytes at off of a blob file.
func (s *FileSource) ReadRange(ctx context.Context, blobID string, off, n int64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := s.open(blobID)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("blob %s: read %d bytes at offset %d: %w", blobID, n, off, err)
	}
	return buf, nil
}

// batchLoc locates a batch chunk: the batch's stored range and size, and
// the chunk's offset inside the uncompressed batch.
type batchLoc struct {
	off, csize uint64
	usize      uint32
	inOff      uint32
}

// ChunkReader reads, decompresses and resolves the chunks of one
// bootstrap's blobs through a RangeReader. It is safe for concurrent use.
type ChunkReader struct {
	rd   *rafs.Reader
	rr   RangeReader
	comp compress.Algorithm

	mu     sync.Mutex
	metas  map[uint32]*blob.Meta
	recent map[[2]uint64][]byte // (blob, batch offset) → uncompressed batch
	order  [][2]uint64
	// batches joins concurrent fetches of one batch (its chunks are
	// often read at the same time: neighbouring small files) and of one
	// blob's chunk-info table.
	batches singleflight.Group
}

// NewChunkReader prepares reads of rd's chunks from rr. Batch chunks are
// located through their blob's CI table and batch contexts, read through
// rr on first use.
func NewChunkReader(ctx context.Context, rd *rafs.Reader, rr RangeReader) (*ChunkReader, error) {
	cr := &ChunkReader{rd: rd, rr: rr, comp: rd.Ext.Flags.Compressor(),
		metas: map[uint32]*blob.Meta{}, recent: map[[2]uint64][]byte{}}
	return cr, nil
}

// compressor returns the compression algorithm of a blob's chunks: the
// blob table's, which may differ between the layers of a merged image.
func (cr *ChunkReader) compressor(idx uint32) compress.Algorithm {
	if int(idx) < len(cr.rd.Blobs) {
		return cr.rd.Blobs[idx].Compressor
	}
	return cr.comp
}

// meta loads a blob's CI table and batch contexts through the range
// reader (cached).
func (cr *ChunkReader) meta(ctx context.Context, idx uint32) (*blob.Meta, error) {
	cr.mu.Lock()
	m, ok := cr.metas[idx]
	cr.mu.Unlock()
	if ok {
		return m, nil
	}
	v, err, _ := cr.batches.Do(fmt.Sprintf("meta/%d", idx), func() (any, error) { return cr.loadMeta(ctx, idx) })
	if err != nil {
		return nil, err
	}
	return v.(*blob.Meta), nil
}

// loadMeta reads and decodes a blob's CI table and batch contexts.
func (cr *ChunkReader) loadMeta(ctx context.Context, idx uint32) (*blob.Meta, error) {
	cr.mu.Lock()
	m, ok := cr.metas[idx]
	cr.mu.Unlock()
	if ok {
		return m, nil
	}
	bi := cr.rd.Blobs[idx]
	if bi.CICompressedSize == 0 || bi.CICompressedSize > 1<<30 || bi.CIUncompressedSize > 1<<30 {
		return nil, fmt.Errorf("blob %s: no usable chunk-info table (size %d)", bi.BlobID, bi.CICompressedSize)
	}
	raw, err := cr.rr.ReadRange(ctx, bi.BlobID, int64(bi.CIOffset), int64(bi.CICompressedSize)+blob.MetaHeaderSize)
	if err != nil {
		return nil, fmt.Errorf("blob %s: batch chunks need the blob's chunk-info table at offset %d (%d bytes), which the blob source cannot provide: %w", bi.BlobID, bi.CIOffset, bi.CICompressedSize+blob.MetaHeaderSize, err)
	}
	hdr, err := blob.UnmarshalMetaHeader(raw[bi.CICompressedSize:])
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", bi.BlobID, err)
	}
	ci := raw[:bi.CICompressedSize]
	if bi.CICompressedSize != bi.CIUncompressedSize {
		if ci, err = compress.Decompress(bi.CICompressor, nil, ci, int(bi.CIUncompressedSize)); err != nil {
			return nil, fmt.Errorf("blob %s: chunk-info table: %w", bi.BlobID, err)
		}
	}
	if m, err = blob.DecodeMeta(hdr, ci); err != nil {
		return nil, fmt.Errorf("blob %s: %w", bi.BlobID, err)
	}
	cr.mu.Lock()
	cr.metas[idx] = m
	cr.mu.Unlock()
	return m, nil
}

// ReadChunk returns the uncompressed data of chunk c (not yet verified).
func (cr *ChunkReader) ReadChunk(ctx context.Context, c rafs.ChunkInfo) ([]byte, error) {
	if int(c.BlobIndex) >= len(cr.rd.Blobs) {
		return nil, fmt.Errorf("blob index %d out of range", c.BlobIndex)
	}
	if c.UncompressedSize > rafs.MaxChunkSize {
		return nil, fmt.Errorf("chunk of %d bytes exceeds the maximum chunk size", c.UncompressedSize)
	}
	bi := cr.rd.Blobs[c.BlobIndex]
	if c.Flags&rafs.ChunkBatch == 0 {
		if c.CompressedSize == 0 || c.CompressedSize > rafs.MaxChunkSize*2 {
			return nil, fmt.Errorf("blob %s chunk %d: stored size %d out of range", bi.BlobID, c.Index, c.CompressedSize)
		}
		raw, err := cr.rr.ReadRange(ctx, bi.BlobID, int64(c.CompressedOffset), int64(c.CompressedSize))
		if err != nil {
			return nil, err
		}
		if !c.IsCompressed() {
			return raw, nil
		}
		out, err := compress.Decompress(cr.compressor(c.BlobIndex), nil, raw, int(c.UncompressedSize))
		if err != nil {
			return nil, fmt.Errorf("blob %s chunk %d at offset %d: %w", bi.BlobID, c.Index, c.CompressedOffset, err)
		}
		return out, nil
	}
	var loc batchLoc
	{
		m, err := cr.meta(ctx, c.BlobIndex)
		if err != nil {
			return nil, err
		}
		if int(c.Index) >= len(m.ChunkInfos) {
			return nil, fmt.Errorf("blob %s: chunk index %d beyond its %d chunk infos", bi.BlobID, c.Index, len(m.ChunkInfos))
		}
		ci := m.ChunkInfos[c.Index]
		if !ci.IsBatch() || int(ci.ContextIndex()) >= len(m.BatchContexts) {
			return nil, fmt.Errorf("blob %s chunk %d: not a valid batch chunk", bi.BlobID, c.Index)
		}
		bc := m.BatchContexts[ci.ContextIndex()]
		loc = batchLoc{off: ci.CompressedOffset, csize: uint64(bc.CompressedSize), usize: bc.UncompressedSize, inOff: ci.ContextOffset()}
	}
	if uint64(loc.inOff)+uint64(c.UncompressedSize) > uint64(loc.usize) || loc.csize > uint64(loc.usize) {
		return nil, fmt.Errorf("blob %s chunk %d: outside its batch", bi.BlobID, c.Index)
	}
	buf, err := cr.batch(ctx, c.BlobIndex, bi.BlobID, loc, cr.compressor(c.BlobIndex))
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), buf[loc.inOff:loc.inOff+c.UncompressedSize]...), nil
}

// batch returns the uncompressed buffer of a batch, keeping a few recent
// ones since neighbouring files share batches.
func (cr *ChunkReader) batch(ctx context.Context, idx uint32, id string, loc batchLoc, comp compress.Algorithm) ([]byte, error) {
	k := [2]uint64{uint64(idx), loc.off}
	cr.mu.Lock()
	b, ok := cr.recent[k]
	cr.mu.Unlock()
	if ok {
		return b, nil
	}
	v, err, _ := cr.batches.Do(fmt.Sprintf("%d/%d", idx, loc.off), func() (any, error) {
		cr.mu.Lock()
		b, ok := cr.recent[k]
		cr.mu.Unlock()
		if ok {
			return b, nil
		}
		raw, err := cr.rr.ReadRange(ctx, id, int64(loc.off), int64(loc.csize))
		if err != nil {
			return nil, err
		}
		b = raw
		if loc.csize != uint64(loc.usize) {
			if b, err = compress.Decompress(comp, nil, raw, int(loc.usize)); err != nil {
				return nil, fmt.Errorf("blob %s batch at offset %d: %w", id, loc.off, err)
			}
		}
		cr.mu.Lock()
		cr.recent[k] = b
		cr.order = append(cr.order, k)
		if len(cr.order) > 8 {
			delete(cr.recent, cr.order[0])
			cr.order = cr.order[1:]
		}
		cr.mu.Unlock()
		return b, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}
