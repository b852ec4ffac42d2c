// Package blobcache is nydusd's local chunk cache, kept in upstream Nydus's
// on-disk layout (dragonflyoss/nydus storage/src/cache/filecache,
// storage/src/cache/state/persist_map.rs, storage/src/meta) so that
// nydus-snapshotter's cache GC and usage accounting, and an upstream
// nydusd sharing or taking over the directory, keep working.
//
// Entry points: [Open] opens a cache directory as a [Cache];
// [Cache.Blob] returns one blob's [BlobCache], whose [BlobCache.Put] and
// [BlobCache.ReadChunk] write and read verified chunks; [Cache.Files] is
// the store of whole-file copies ([Files]) and [Cache.Remove] deletes a
// blob's files.
//
// For a blob id (64 lowercase hex characters) a cache directory holds:
//
//	<id>.blob.data            sparse file; the uncompressed data of chunk i
//	                          at chunk i's uncompressed offset in the blob
//	<id>.blob.data.chunk_map  4096-byte header, then one bit per chunk
//	<id>.blob.meta            uncompressed chunk-info table padded to 4 KiB,
//	                          then the 4096-byte blob meta header; written
//	                          atomically once, read-only afterwards
//
//	<id>.chunk_map            journal of the chunks put and their digests,
//	                          for the content index ([Cache.Shared]); a
//	                          legacy name nydus-snapshotter's GC removes
//	                          with the blob (see index.go)
//	nydus-go-files/<key>      whole-file copies, for FUSE passthrough (see
//	                          [Files]); not part of upstream's layout
//
// The chunk_map header is four little-endian u32 fields followed by
// reserved zero bytes:
//
//	off  0  magic     0x424D4150 ("PAMB" on disk)
//	off  4  version   1
//	off  8  magic2    0x434D4150
//	off 12  all_ready 0x4D4D4150 once every chunk is ready, else 0
//	off 16  4080 reserved bytes
//	off 4096 bitmap, ceil(n/8) bytes; chunk i is ready when
//	         byte[i/8] & (1 << (7 - i%8)) != 0 (MSB first)
//
// The file must be exactly 4096 + ceil(n/8) bytes long. Like upstream, a
// chunk_map of any other size is rejected (and left untouched), a file of
// size zero or of the right size but all zero gets a fresh header, and a
// header with a wrong magic is rejected.
//
// # Crash safety
//
// [BlobCache.Put] verifies the chunk first, then writes it with pwrite,
// makes it durable with fdatasync, and only then sets the chunk's bit in
// the memory-mapped chunk_map and msyncs that page. A bit therefore never
// reaches the disk before the data it vouches for, whatever moment the
// process or the machine stops. New chunk_map and blob.meta files are
// written to a temporary file, fsynced and then linked or renamed into
// place, so a crash never leaves a half-written header behind.
// [Cache.Remove] deletes the chunk_map before the data file, as the
// snapshotter does, so bits never outlive their data.
//
// # Concurrency
//
// Every method is safe for concurrent use. Bits are set and cleared with
// atomic read-modify-write operations on the shared mapping, so other
// processes mapping the same chunk_map (upstream updates it with byte
// compare-and-swap) see consistent bytes. Concurrent Puts of the same
// chunk are serialised by a per-chunk lock and are idempotent.
//
// Lock order: BlobCache.life (read side held by I/O methods), then
// BlobCache.stripes[i], then BlobCache.readyMu; BlobCache.life, then
// BlobCache.sizeMu, then Cache.mu, then Files.mu; Cache.mu, then
// contentIndex.mu (no BlobCache lock is taken under it). Cache.evictMu is only
// taken with no other lock held, and before Cache.mu. Cache.mu is never
// held while taking a BlobCache lock.
//
// # Differences from upstream
//
// Upstream nydusd does not fdatasync chunk data before setting a bit, and
// only writes all_ready when it reopens a full bitmap (the eager write in
// mark_all_ready is commented out); this package syncs first and writes
// all_ready as soon as the last chunk is put, which upstream reads the
// same way. Upstream never clears bits; [BlobCache.ReadChunk] clears the
// bit of a chunk that fails re-verification (clearing all_ready first).
// Upstream counts padding bits after the last chunk when reopening; this
// package ignores them.
package blobcache
