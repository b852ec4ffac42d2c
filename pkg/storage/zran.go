package storage

import (
	"context"
	"fmt"

	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/zran"
)

// zranLoc locates a zran chunk: its context (index, and the stored
// range from the context's input offset up to the chunk's end), and the
// chunk's offset in the context's output.
type zranLoc struct {
	ctx      uint32
	zc       blob.ZranContext
	dict     []byte
	in, need uint64 // the unit: the context's input offset, the bytes up to the chunk's end
	outOff   uint32
}

// isZran reports whether chunk c lives in a zran blob (a gzip layer
// read in place).
func (cr *ChunkReader) isZran(c rafs.ChunkInfo) bool {
	return int(c.BlobIndex) < len(cr.rd.Blobs) && cr.rd.Blobs[c.BlobIndex].Features.Has(blob.FeatureZran)
}

// zranLoc locates a zran chunk through its blob's chunk-info table
// (fetched once per blob from the separate "ref" blob).
func (cr *ChunkReader) zranLoc(ctx context.Context, c rafs.ChunkInfo) (zranLoc, error) {
	bi := cr.rd.Blobs[c.BlobIndex]
	m, err := cr.meta(ctx, c.BlobIndex)
	if err != nil {
		return zranLoc{}, err
	}
	if int(c.Index) >= len(m.ChunkInfos) {
		return zranLoc{}, fmt.Errorf("blob %s: chunk index %d beyond its %d chunk infos", bi.BlobID, c.Index, len(m.ChunkInfos))
	}
	ci := m.ChunkInfos[c.Index]
	if !ci.IsZran() || int(ci.ContextIndex()) >= len(m.ZranContexts) {
		return zranLoc{}, fmt.Errorf("blob %s chunk %d: not a valid zran chunk", bi.BlobID, c.Index)
	}
	zc := m.ZranContexts[ci.ContextIndex()]
	loc := zranLoc{ctx: ci.ContextIndex(), zc: zc, dict: m.ZranDict(int(ci.ContextIndex())), in: zc.InOffset, outOff: ci.ContextOffset()}
	// The chunk's own stored range ends where its data is decodable
	// (upstream records the input position after the chunk); the
	// context's input is the most there is to read.
	end := min(ci.CompressedOffset+uint64(ci.CompressedSize), zc.InOffset+uint64(zc.InLen))
	switch {
	case end <= zc.InOffset || zc.InLen == 0 || zc.OutLen > 4*rafs.MaxChunkSize:
		return zranLoc{}, fmt.Errorf("blob %s chunk %d: zran context %d (input %d+%d, output %d) cannot hold it", bi.BlobID, c.Index, loc.ctx, zc.InOffset, zc.InLen, zc.OutLen)
	case uint64(loc.outOff)+uint64(c.UncompressedSize) > uint64(zc.OutLen):
		return zranLoc{}, fmt.Errorf("blob %s chunk %d: outside its zran context %d", bi.BlobID, c.Index, loc.ctx)
	}
	loc.need = end - zc.InOffset
	return loc, nil
}

// zranKey is the key of a zran context's output among the recent
// buffers (batches use the blob index alone).
func zranKey(blobIdx, ctx uint32) [2]uint64 { return [2]uint64{uint64(blobIdx) | 1<<32, uint64(ctx)} }

// zranCached returns chunk c's data (not yet verified) if its context's
// output is among the recent buffers and reaches that far.
func (cr *ChunkReader) zranCached(ctx context.Context, c rafs.ChunkInfo) ([]byte, bool) {
	loc, err := cr.zranLoc(ctx, c)
	if err != nil {
		return nil, false
	}
	cr.mu.Lock()
	b := cr.recent[zranKey(c.BlobIndex, loc.ctx)]
	cr.mu.Unlock()
	end := uint64(loc.outOff) + uint64(c.UncompressedSize)
	if uint64(len(b)) < end {
		return nil, false
	}
	return append([]byte(nil), b[loc.outOff:end]...), true
}

// decodeZran returns chunk c's data (not yet verified) from the stored
// bytes of its unit: the context's output is inflated as far as those
// bytes go, and kept among the recent buffers, so that the context's
// other chunks within it decode without inflating again.
func (cr *ChunkReader) decodeZran(ctx context.Context, c rafs.ChunkInfo, u Unit, stored []byte) ([]byte, error) {
	bi := cr.rd.Blobs[c.BlobIndex]
	if data, ok := cr.zranCached(ctx, c); ok {
		return data, nil
	}
	loc, err := cr.zranLoc(ctx, c)
	if err != nil {
		return nil, err
	}
	if loc.in != u.Offset || loc.need > u.Size {
		return nil, fmt.Errorf("blob %s chunk %d: its zran input is %d+%d, not within %d+%d", bi.BlobID, c.Index, loc.in, loc.need, u.Offset, u.Size)
	}
	x := zran.Context{InOffset: int64(loc.zc.InOffset), CtxByte: loc.zc.CtxByte, CtxBits: loc.zc.CtxBits, OutOffset: int64(loc.zc.OutOffset),
		InLen: loc.zc.InLen, OutLen: loc.zc.OutLen}
	out, err := zran.InflatePrefix(x, loc.dict, stored, int(loc.zc.OutLen))
	end := uint64(loc.outOff) + uint64(c.UncompressedSize)
	if uint64(len(out)) < end {
		if err == nil {
			err = zran.ErrTruncated
		}
		return nil, fmt.Errorf("blob %s chunk %d: zran context %d at offset %d: %w", bi.BlobID, c.Index, loc.ctx, loc.in, err)
	}
	k := zranKey(c.BlobIndex, loc.ctx)
	cr.mu.Lock()
	if old, ok := cr.recent[k]; !ok || len(old) < len(out) {
		if !ok {
			cr.order = append(cr.order, k)
			if len(cr.order) > 8 {
				delete(cr.recent, cr.order[0])
				cr.order = cr.order[1:]
			}
		}
		cr.recent[k] = out
	}
	cr.mu.Unlock()
	return append([]byte(nil), out[loc.outOff:end]...), nil
}
