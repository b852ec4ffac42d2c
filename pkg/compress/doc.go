// Package compress implements the chunk compression algorithms of Nydus
// (upstream dragonflyoss/nydus: utils/src/compress/mod.rs).
//
// The numeric values of [Algorithm] are the on-disk values stored in RAFS
// blob tables and chunk-info headers. Compression produces the formats that
// upstream readers expect: lz4_block is a raw LZ4 block without a size prefix,
// zstd is one or more standard frames, gzip is an RFC 1952 stream.
//
// All functions are safe for concurrent use. Encoders and decoders are shared
// or pooled, so callers should not create their own per call.
//
// Entry points: [Compress] and [Decompress] (with [CompressLevel] and
// [CompressIfSmaller] for the builder), [ParseAlgorithm] for names such as
// "zstd", and [NewStreamReader], which sniffs and decompresses a stream.
package compress
