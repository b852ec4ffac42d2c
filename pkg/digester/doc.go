// Package digester implements the chunk digest algorithms of Nydus
// (upstream dragonflyoss/nydus: utils/src/digest.rs): BLAKE3 (the default)
// and SHA-256, both producing 32-byte digests.
//
// The numeric values of [Algorithm] are the on-disk values stored in RAFS
// blob tables.
//
// Entry points: [Sum] digests a chunk, [New] returns a streaming
// [hash.Hash], and [ParseAlgorithm] and [ParseDigest] read names and hex
// digests.
package digester
