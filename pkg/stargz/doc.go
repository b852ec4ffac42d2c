// Package stargz reads the tables of contents (TOCs) of eStargz and
// zstd:chunked layers and derives from them the chunk layout that a
// TOC-reference RAFS image uses (`nydus-image create -t estargztoc-ref`,
// upstream dragonflyoss/nydus builder/src/stargz.rs): the layer itself is
// the image's data blob, each chunk is the start of a gzip member (eStargz)
// or zstd frame (zstd:chunked) of the layer, and its digest is the TOC's
// chunkDigest (sha256 of the uncompressed chunk).
//
// The same derivation serves the builder (which writes the bootstrap) and
// the read path (package storage), which derives a blob's chunk-info table
// from the TOC the layer itself holds and checks every bootstrap chunk
// record against it, as it does against the chunk-info table of a native
// Nydus blob. docs/format.md §10 specifies the layout.
//
// Entry points: [ReadTOC] (a layer's footer and TOC through a read
// function), [ParseTOC] (TOC JSON), [NewLayout] (the chunks of a TOC),
// [Layout.Meta] (the chunk-info table) and [IsRefBlob] / [LoadMeta] (the
// read path's side).
//
// Plain gzip and plain zstd layers have no TOC and are refused: a zstd
// stream of one frame cannot be read at random (use zran, `targz-ref`, for
// plain gzip layers).
package stargz
