package blob

import (
	"fmt"
	"strings"
)

// Features is the BlobFeatures bit set stored in the blob table and in the
// MetaHeader (upstream storage/src/device.rs).
type Features uint32

// Blob feature bits, with upstream's values.
const (
	// FeatureAligned: uncompressed chunks are 4 KiB aligned. Required for
	// RAFS v6 blobs except in TARFS mode, where it is forbidden.
	FeatureAligned Features = 0x0000_0001
	// FeatureInlinedFSMeta: the RAFS bootstrap is inlined in the data blob.
	FeatureInlinedFSMeta Features = 0x0000_0002
	// FeatureChunkInfoV2: the CI array uses 24-byte V2 entries.
	FeatureChunkInfoV2 Features = 0x0000_0004
	// FeatureZran: the CI data carries zlib random-access contexts.
	FeatureZran Features = 0x0000_0008
	// FeatureSeparate: chunk data and blob meta live in different blobs.
	FeatureSeparate Features = 0x0000_0010
	// FeatureInlinedChunkDigest: the chunk digest array is in the blob.
	FeatureInlinedChunkDigest Features = 0x0000_0020
	// FeatureTarfs: the blob is a raw tar used in TARFS mode.
	FeatureTarfs Features = 0x0000_0040
	// FeatureBatch: small chunks are merged into batch chunks.
	FeatureBatch Features = 0x0000_0080
	// FeatureEncrypted: chunk data and blob meta are encrypted.
	FeatureEncrypted Features = 0x0000_0100
	// FeatureChunkDictGenerated: the blob was generated with a chunk dict.
	FeatureChunkDictGenerated Features = 0x0000_0200
	// FeatureSeparatedWithPrefetchFiles: the blob holds prefetch files
	// separated out of other blobs.
	FeatureSeparatedWithPrefetchFiles Features = 0x0000_0400
	// FeatureExternal: the blob lives in an external storage backend.
	FeatureExternal Features = 0x0000_0800
	// FeatureHasTarHeader: sections are followed by tar headers.
	FeatureHasTarHeader Features = 0x1000_0000
	// FeatureHasTOC: the blob ends with a ToC.
	FeatureHasTOC Features = 0x2000_0000
	// FeatureCapTarTOC: built by nydus-image 2.2 or newer (tar header and
	// ToC capable).
	FeatureCapTarTOC Features = 0x4000_0000
	// FeatureV5NoExtBlobTable is an internal flag of the upstream RAFS v5
	// loader; it is rejected on disk.
	FeatureV5NoExtBlobTable Features = 0x8000_0000
)

// Incompatible-feature mask: bits in featureIncompatMask outside
// featureIncompatKnown are unknown incompatible features.
const (
	featureIncompatMask  Features = 0x0000_ffff
	featureIncompatKnown Features = 0x0000_0fff
)

// Has reports whether every bit of x is set in f.
func (f Features) Has(x Features) bool {
	return f&x == x
}

// Validate applies upstream's rules for feature bits read from disk
// (BlobFeatures::try_from and the RafsV6Blob checks): unknown bits in the
// incompatible range 0xffff, and the internal V5 flag, are rejected; ZRAN,
// BATCH and ENCRYPTED require CHUNK_INFO_V2.
func (f Features) Validate() error {
	if bad := f & featureIncompatMask &^ featureIncompatKnown; bad != 0 {
		return fmt.Errorf("blob features %#x: unknown incompatible bits %#x: %w", uint32(f), uint32(bad), ErrCorrupt)
	}
	if f&FeatureV5NoExtBlobTable != 0 {
		return fmt.Errorf("blob features %#x: internal flag %#x set: %w", uint32(f), uint32(FeatureV5NoExtBlobTable), ErrCorrupt)
	}
	if f&(FeatureZran|FeatureBatch|FeatureEncrypted) != 0 && f&FeatureChunkInfoV2 == 0 {
		return fmt.Errorf("blob features %#x: zran, batch and encrypted need chunk-info v2: %w", uint32(f), ErrCorrupt)
	}
	return nil
}

var featureNames = []struct {
	f    Features
	name string
}{
	// Upstream's format_blob_features order and names first.
	{FeatureAligned, "aligned"},
	{FeatureBatch, "batch"},
	{FeatureCapTarTOC, "cap_toc"},
	{FeatureInlinedChunkDigest, "chunk-digest"},
	{FeatureChunkInfoV2, "chunk-v2"},
	{FeatureInlinedFSMeta, "fs-meta"},
	{FeatureSeparate, "separate"},
	{FeatureHasTarHeader, "tar-header"},
	{FeatureHasTOC, "toc"},
	{FeatureZran, "zran"},
	{FeatureEncrypted, "encrypted"},
	{FeatureChunkDictGenerated, "is-chunkdict-generated"},
	// Not printed by upstream.
	{FeatureTarfs, "tarfs"},
	{FeatureSeparatedWithPrefetchFiles, "separated-with-prefetch-files"},
	{FeatureExternal, "external"},
	{FeatureV5NoExtBlobTable, "v5-no-ext-blob-table"},
}

// String lists the set features separated by spaces, using upstream's
// names (format_blob_features) where it has them; unknown bits are printed
// in hex.
func (f Features) String() string {
	var parts []string
	rest := f
	for _, n := range featureNames {
		if f&n.f != 0 {
			parts = append(parts, n.name)
			rest &^= n.f
		}
	}
	if rest != 0 {
		parts = append(parts, fmt.Sprintf("%#x", uint32(rest)))
	}
	return strings.Join(parts, " ")
}
