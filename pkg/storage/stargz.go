package storage

import (
	"context"
	"fmt"

	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/stargz"
)

// TOC-reference blobs (docs/format.md §10): an eStargz or zstd:chunked
// layer used as a data blob as it is. It stores no chunk-info table; the
// TOC it holds defines one (stargz.LoadMeta), which CheckRecord compares
// bootstrap records with as it does a native blob's. Each chunk is the
// start of a gzip member or zstd frame that goes on with the tar headers
// of the following entries, so only its first bytes are decoded.

// loadRefMeta derives the chunk-info table of a TOC-reference blob from
// the layer's own TOC and keeps it in the meta store (in the
// "<blob_id>.blob.meta" format), so it is read and parsed once.
func (cr *ChunkReader) loadRefMeta(ctx context.Context, bi rafs.BlobInfo) (*blob.Meta, blob.MetaHeader, error) {
	read := func(off, n int64) ([]byte, error) { return cr.rr.ReadRange(ctx, bi.BlobID, off, n) }
	hdr, ci, err := stargz.LoadMeta(read, bi)
	if err != nil {
		return nil, hdr, err
	}
	m, err := blob.DecodeMeta(hdr, ci)
	if err != nil {
		return nil, hdr, fmt.Errorf("blob %s: %w", bi.BlobID, err)
	}
	if cr.store != nil {
		if file, err := blob.MarshalMetaFile(hdr, ci); err == nil {
			cr.store.StoreMeta(ctx, bi.BlobID, int(bi.ChunkCount), file)
		}
	}
	return m, hdr, nil
}

// decodeRef returns the first bytes of the stream a chunk of a
// TOC-reference blob starts (not yet verified).
func decodeRef(bi rafs.BlobInfo, c rafs.ChunkInfo, stored []byte) ([]byte, error) {
	out, err := compress.DecompressPrefix(bi.Compressor, nil, stored, int(c.UncompressedSize))
	if err != nil {
		return nil, fmt.Errorf("blob %s chunk %d at offset %d: %w", bi.BlobID, c.Index, c.CompressedOffset, err)
	}
	return out, nil
}

// isRefBlob reports whether a blob is a TOC-reference blob.
func isRefBlob(bi rafs.BlobInfo) bool { return stargz.IsRefBlob(bi) }
