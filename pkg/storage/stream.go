package storage

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// RangeOpener is implemented by range readers that can stream a range:
// the reader yields exactly n bytes from off as they arrive, so a large
// range can be consumed (decompressed, verified, cached) chunk by chunk
// before its end has come. The caller closes it.
type RangeOpener interface {
	OpenRange(ctx context.Context, blobID string, off, n int64) (io.ReadCloser, error)
}

// OpenRange streams n bytes at off of a blob through rr: with its
// OpenRange if it has one, else read whole with ReadRange.
func OpenRange(ctx context.Context, rr RangeReader, blobID string, off, n int64) (io.ReadCloser, error) {
	if o, ok := rr.(RangeOpener); ok {
		return o.OpenRange(ctx, blobID, off, n)
	}
	b, err := rr.ReadRange(ctx, blobID, off, n)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// OpenRange streams n bytes at off of a blob file.
func (s *FileSource) OpenRange(ctx context.Context, blobID string, off, n int64) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := s.open(blobID)
	if err != nil {
		return nil, err
	}
	// A file shorter than the range ends the stream early: a consumer
	// reading whole units gets io.ErrUnexpectedEOF.
	return io.NopCloser(io.NewSectionReader(f, off, n)), nil
}

var _ RangeOpener = (*FileSource)(nil)

// Unit is a stored unit of a blob, the smallest range that can be
// decoded on its own: a plain chunk, or a batch of small chunks
// compressed together.
type Unit struct {
	// Offset and Size are the unit's stored (compressed) range.
	Offset, Size uint64
	// Batch reports a batch; its chunks' data lie inside its
	// uncompressed buffer.
	Batch bool
	// Zran reports a zran chunk of a gzip layer read in place: Offset is
	// its context's input offset, Size covers the input up to the
	// chunk's end, and the chunk's data lies inside the context's
	// output. The units of a context's chunks share Offset and grow with
	// the chunk's place; a unit holds every earlier chunk of its context.
	Zran bool
}

// Unit returns the stored unit holding chunk c: its own range for a
// plain chunk, its batch's (from the blob's chunk-info table, fetched
// once per blob) for a batch chunk.
func (cr *ChunkReader) Unit(ctx context.Context, c rafs.ChunkInfo) (Unit, error) {
	if int(c.BlobIndex) >= len(cr.rd.Blobs) {
		return Unit{}, fmt.Errorf("blob index %d out of range", c.BlobIndex)
	}
	if cr.isZran(c) {
		loc, err := cr.zranLoc(ctx, c)
		if err != nil {
			return Unit{}, err
		}
		return cr.zranUnit(loc, c.BlobIndex), nil
	}
	if c.Flags&rafs.ChunkBatch == 0 {
		if c.CompressedSize == 0 || c.CompressedSize > rafs.MaxChunkSize*2 || c.UncompressedSize > rafs.MaxChunkSize {
			return Unit{}, fmt.Errorf("blob %s chunk %d: stored size %d out of range", cr.rd.Blobs[c.BlobIndex].BlobID, c.Index, c.CompressedSize)
		}
		return Unit{Offset: c.CompressedOffset, Size: uint64(c.CompressedSize)}, nil
	}
	loc, err := cr.batchLoc(ctx, c)
	if err != nil {
		return Unit{}, err
	}
	return Unit{Offset: loc.off, Size: loc.csize, Batch: true}, nil
}

// batchLoc locates a batch chunk through its blob's chunk-info table.
func (cr *ChunkReader) batchLoc(ctx context.Context, c rafs.ChunkInfo) (batchLoc, error) {
	bi := cr.rd.Blobs[c.BlobIndex]
	m, err := cr.meta(ctx, c.BlobIndex)
	if err != nil {
		return batchLoc{}, err
	}
	if int(c.Index) >= len(m.ChunkInfos) {
		return batchLoc{}, fmt.Errorf("blob %s: chunk index %d beyond its %d chunk infos", bi.BlobID, c.Index, len(m.ChunkInfos))
	}
	ci := m.ChunkInfos[c.Index]
	if !ci.IsBatch() || int(ci.ContextIndex()) >= len(m.BatchContexts) {
		return batchLoc{}, fmt.Errorf("blob %s chunk %d: not a valid batch chunk", bi.BlobID, c.Index)
	}
	bc := m.BatchContexts[ci.ContextIndex()]
	loc := batchLoc{off: ci.CompressedOffset, csize: uint64(bc.CompressedSize), usize: bc.UncompressedSize, inOff: ci.ContextOffset()}
	if uint64(loc.inOff)+uint64(c.UncompressedSize) > uint64(loc.usize) || loc.csize > uint64(loc.usize) || loc.usize > rafs.MaxChunkSize || loc.csize == 0 {
		return batchLoc{}, fmt.Errorf("blob %s chunk %d: outside its batch", bi.BlobID, c.Index)
	}
	return loc, nil
}

// DecodeUnit returns the uncompressed data of chunk c (not yet verified)
// from the stored bytes of its unit (as Unit located it). A batch's
// uncompressed buffer is kept among the recent ones, so its other chunks
// decode without decompressing it again.
func (cr *ChunkReader) DecodeUnit(ctx context.Context, c rafs.ChunkInfo, u Unit, stored []byte) ([]byte, error) {
	if uint64(len(stored)) != u.Size {
		return nil, fmt.Errorf("unit at offset %d: %d stored bytes, want %d", u.Offset, len(stored), u.Size)
	}
	bi := cr.rd.Blobs[c.BlobIndex]
	comp := cr.compressor(c.BlobIndex)
	if u.Zran {
		return cr.decodeZran(ctx, c, u, stored)
	}
	if !u.Batch {
		if !c.IsCompressed() {
			return append([]byte(nil), stored...), nil
		}
		if isRefBlob(bi) {
			return decodeRef(bi, c, stored)
		}
		out, err := compress.Decompress(comp, nil, stored, int(c.UncompressedSize))
		if err != nil {
			return nil, fmt.Errorf("blob %s chunk %d at offset %d: %w", bi.BlobID, c.Index, c.CompressedOffset, err)
		}
		return out, nil
	}
	loc, err := cr.batchLoc(ctx, c)
	if err != nil {
		return nil, err
	}
	if loc.off != u.Offset || loc.csize != u.Size {
		return nil, fmt.Errorf("blob %s chunk %d: its batch is at %d+%d, not %d+%d", bi.BlobID, c.Index, loc.off, loc.csize, u.Offset, u.Size)
	}
	buf, err := cr.batch(ctx, c.BlobIndex, bi.BlobID, loc, comp, func(context.Context) ([]byte, error) {
		return stored, nil
	})
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), buf[loc.inOff:loc.inOff+c.UncompressedSize]...), nil
}

// MultiRangeReader is implemented by range readers that read several
// ranges of a blob with one request (registry.Client: "Range:
// bytes=a-b,c-d"). fn gets each range's index and a reader of its bytes,
// in order; the ranges are increasing and disjoint.
type MultiRangeReader interface {
	ReadRanges(ctx context.Context, blobID string, ranges [][2]int64, fn func(i int, r io.Reader) error) error
}

// ReadRanges reads ranges ({offset, length}, increasing and disjoint) of
// a blob through rr: with one request if it is a MultiRangeReader, else
// with one OpenRange each.
func ReadRanges(ctx context.Context, rr RangeReader, blobID string, ranges [][2]int64, fn func(i int, r io.Reader) error) error {
	if m, ok := rr.(MultiRangeReader); ok {
		return m.ReadRanges(ctx, blobID, ranges, fn)
	}
	for i, r := range ranges {
		rc, err := OpenRange(ctx, rr, blobID, r[0], r[1])
		if err != nil {
			return err
		}
		err = fn(i, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}
