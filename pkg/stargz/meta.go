package stargz

import (
	"fmt"

	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// refOnlyFeatures are blob features a TOC-reference blob never has: any
// of them makes a blob a native (or zran) Nydus blob.
const refOnlyFeatures = ^Features

// IsRefBlob reports whether a blob table entry describes a TOC-reference
// blob: chunks compressed with gzip (eStargz) or zstd (zstd:chunked),
// chunk-info table at offset 0 (a native blob's table follows its chunk
// data, so it never starts a blob that has chunks), and no feature beyond
// ALIGNED and CAP_TAR_TOC. Upstream reads such a gzip blob as a "legacy
// stargz" blob (BlobInfo::is_legacy_stargz: gzip without
// CHUNK_INFO_V2).
func IsRefBlob(bi rafs.BlobInfo) bool {
	_, ok := KindOf(bi.Compressor)
	return ok && bi.ChunkCount > 0 && bi.CIOffset == 0 && bi.Features&refOnlyFeatures == 0
}

// LoadMeta derives the chunk-info table of a TOC-reference blob (see
// IsRefBlob) from the TOC that the layer itself holds, read through read:
// the footer at the layer's end (the blob table's compressed size), then
// the TOC, laid out with NewLayout and the blob's chunk size. The header
// returned records the table where the blob table entry says it is
// (ci_offset 0, its stored size and compressor: a TOC-reference blob does
// not store its table) and the derived count and size, so a bootstrap
// whose entry disagrees with the layer's TOC is told apart by the caller.
func LoadMeta(read ReadFunc, bi rafs.BlobInfo) (blob.MetaHeader, []byte, error) {
	kind, ok := KindOf(bi.Compressor)
	if !ok || !IsRefBlob(bi) {
		return blob.MetaHeader{}, nil, fmt.Errorf("blob %s is not a TOC-reference blob", bi.BlobID)
	}
	if bi.CompressedSize > 1<<40 {
		return blob.MetaHeader{}, nil, fmt.Errorf("blob %s: size %d out of range: %w", bi.BlobID, bi.CompressedSize, ErrCorrupt)
	}
	t, f, _, err := ReadTOC(read, int64(bi.CompressedSize))
	if err != nil {
		return blob.MetaHeader{}, nil, fmt.Errorf("blob %s (%d bytes): %w", bi.BlobID, bi.CompressedSize, err)
	}
	if f.Kind != kind {
		return blob.MetaHeader{}, nil, fmt.Errorf("blob %s: the bootstrap records %s chunks, the layer is %s: %w", bi.BlobID, kind, f.Kind, ErrCorrupt)
	}
	l, err := NewLayout(t, kind, bi.ChunkSize, bi.CompressedSize)
	if err != nil {
		return blob.MetaHeader{}, nil, fmt.Errorf("blob %s: %w", bi.BlobID, err)
	}
	if len(l.Chunks) == 0 {
		return blob.MetaHeader{}, nil, fmt.Errorf("blob %s: its TOC has no chunks, the bootstrap records %d: %w", bi.BlobID, bi.ChunkCount, ErrCorrupt)
	}
	ci := l.CI()
	h := blob.MetaHeader{Features: Features, CICompressor: bi.CICompressor, CIEntries: uint32(len(l.Chunks)),
		CIOffset: bi.CIOffset, CICompressedSize: bi.CICompressedSize, CIUncompressedSize: uint64(len(ci))}
	if err := h.Validate(); err != nil {
		return blob.MetaHeader{}, nil, fmt.Errorf("blob %s: the bootstrap's chunk-info sizes (%d/%d bytes, %s) do not fit the layer's TOC (%d chunks): %w",
			bi.BlobID, bi.CICompressedSize, bi.CIUncompressedSize, bi.CICompressor, len(l.Chunks), err)
	}
	return h, ci, nil
}
