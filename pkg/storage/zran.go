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

// maxZranInputs is how many contexts' fetched input a ChunkReader keeps,
// so that a later chunk of a context fetches only the input it adds.
const maxZranInputs = 16

// zranUnit returns the unit to fetch for a zran chunk: the input of its
// context up to the chunk's end, less what an earlier fetch of the
// context brought (kept for the context's later chunks).
func (cr *ChunkReader) zranUnit(loc zranLoc, blobIdx uint32) Unit {
	cr.mu.Lock()
	have := uint64(len(cr.zin[zranKey(blobIdx, loc.ctx)]))
	cr.mu.Unlock()
	if have > 0 && have < loc.need {
		return Unit{Offset: loc.in + have, Size: loc.need - have, Zran: true}
	}
	return Unit{Offset: loc.in, Size: loc.need, Zran: true}
}

// zranInput returns the input of a chunk's context from its start up to
// the end of stored (the bytes at u.Offset): what an earlier fetch kept,
// and for the rare gap between the two (the kept input was dropped
// meanwhile) a read of the gap.
func (cr *ChunkReader) zranInput(ctx context.Context, c rafs.ChunkInfo, loc zranLoc, u Unit, stored []byte) ([]byte, error) {
	if u.Offset == loc.in {
		return stored, nil
	}
	if u.Offset < loc.in {
		return nil, fmt.Errorf("unit at %d before its zran context's input at %d", u.Offset, loc.in)
	}
	k := zranKey(c.BlobIndex, loc.ctx)
	cr.mu.Lock()
	prev := cr.zin[k]
	cr.mu.Unlock()
	head := u.Offset - loc.in
	if uint64(len(prev)) < head {
		bi := cr.rd.Blobs[c.BlobIndex]
		more, err := cr.rr.ReadRange(ctx, bi.BlobID, int64(loc.in)+int64(len(prev)), int64(head)-int64(len(prev)))
		if err != nil {
			return nil, err
		}
		prev = append(append([]byte(nil), prev...), more...)
	}
	in := make([]byte, 0, head+uint64(len(stored)))
	return append(append(in, prev[:head]...), stored...), nil
}

// keepZranInput keeps the fetched input of a context, if it is longer
// than what is kept.
func (cr *ChunkReader) keepZranInput(k [2]uint64, in []byte) {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	old, ok := cr.zin[k]
	if ok && len(old) >= len(in) {
		return
	}
	if cr.zin == nil {
		cr.zin = map[[2]uint64][]byte{}
	}
	if !ok {
		cr.zinOrder = append(cr.zinOrder, k)
		if len(cr.zinOrder) > maxZranInputs {
			delete(cr.zin, cr.zinOrder[0])
			cr.zinOrder = cr.zinOrder[1:]
		}
	}
	cr.zin[k] = in
}

// Local returns the data of chunk c (not yet verified) when it can be
// had without the backend: a zran chunk whose context's output, or
// input, an earlier fetch kept.
func (cr *ChunkReader) Local(ctx context.Context, c rafs.ChunkInfo) ([]byte, bool) {
	if !cr.isZran(c) {
		return nil, false
	}
	if data, ok := cr.zranCached(ctx, c); ok {
		return data, true
	}
	loc, err := cr.zranLoc(ctx, c)
	if err != nil {
		return nil, false
	}
	cr.mu.Lock()
	in := cr.zin[zranKey(c.BlobIndex, loc.ctx)]
	cr.mu.Unlock()
	if uint64(len(in)) < loc.need {
		return nil, false
	}
	data, err := cr.decodeZran(ctx, c, Unit{Offset: loc.in, Size: uint64(len(in)), Zran: true}, in)
	return data, err == nil
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
	if u.Offset+u.Size < loc.in+loc.need {
		return nil, fmt.Errorf("blob %s chunk %d: its zran input is %d+%d, not within %d+%d", bi.BlobID, c.Index, loc.in, loc.need, u.Offset, u.Size)
	}
	stored, err = cr.zranInput(ctx, c, loc, u, stored)
	if err != nil {
		return nil, fmt.Errorf("blob %s chunk %d: zran context %d: %w", bi.BlobID, c.Index, loc.ctx, err)
	}
	cr.keepZranInput(zranKey(c.BlobIndex, loc.ctx), stored)
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
