// Package storage is the read side of Nydus blobs, shared by the runtime
// and the tools: RangeReader (what a backend answers), FileSource (blobs
// in local files), and ChunkReader, which locates, fetches and
// decompresses chunks through a RangeReader, checking each bootstrap
// chunk record against its blob's own chunk-info table (CheckRecord) and
// keeping those tables in an optional MetaStore.
//
// It depends on the format packages only: the builder and the runtime
// both import it, and neither imports the other.
//
// Entry points: [NewChunkReader] (a bootstrap's chunks read through a
// [RangeReader], [ChunkReader.ReadChunk]), [FileSource] and [BytesSource]
// (blobs in local files and in memory) and [OpenRange] and [ReadRanges]
// (streamed and multi-range reads of any RangeReader).
package storage
