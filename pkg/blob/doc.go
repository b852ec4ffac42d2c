// Package blob reads and writes the Nydus data-blob layout used by RAFS v6
// (upstream dragonflyoss/nydus: storage/src/meta, builder/src/core/blob.rs).
//
// A native layer blob written with inline metadata and a ToC looks like
// this, every section followed by a 512-byte GNU tar header that names it
// (data is not padded to 512 bytes, so readers walk backwards from EOF):
//
//	[chunk data, compressed chunks back to back]    [tar "image.blob"]
//	[chunk-info (CI) array | 4096-B MetaHeader]     [tar "blob.meta"]
//	[chunk digest array, 32 B per chunk]            [tar "blob.digest"]   (ToC only)
//	[bootstrap, zstd-compressed when ToC is on]     [tar "image.boot"]    (inline meta only)
//	[ToC entries, 128 B each]                       [tar "rafs.blob.toc"] (ToC only)
//
// Without inline metadata and without a ToC, upstream writes no tar headers
// at all: chunk data, then the CI array and its MetaHeader.
//
// The package provides the building blocks (feature bits, chunk-info
// entries, the MetaHeader, ToC entries, trailing tar headers), a streaming
// [Writer] that produces a blob sequentially (suitable for a FIFO), a
// [Reader] that locates sections in an existing blob through an
// io.ReaderAt, and helpers for the "<blob_id>.blob.meta" cache file.
//
// Entry points: [NewWriter] starts a blob, [Writer.WriteChunkData] appends
// compressed chunks and [Writer.Finish] writes the sections after them;
// [Open] reads an existing blob ([Reader.Sections], [Reader.ChunkInfos],
// [Reader.ReadChunk], [Reader.Bootstrap], [Reader.TOC]); [ParseMetaFile]
// and [MarshalMetaFile] read and write the "<blob_id>.blob.meta" file.
//
// Every parser checks lengths and counts against the input size and hard
// limits before allocating, and reports problems as errors wrapping
// [ErrCorrupt] with the offending field or offset. The package never logs
// and never touches the network.
package blob
