// Package checker verifies that a Nydus image is well-formed and holds
// exactly the filesystem of the OCI image it was converted from: the
// library behind `nydusify check --source REF --target REF`.
//
// Entry point: [Check] checks a target against an optional source, as
// [Options] say, and returns one [Report] per checked manifest:
// [Report.OK] is the verdict and [Report.Problems] lists what failed. See
// ExampleCheck.
//
// For every checked Nydus manifest, Check
//
//  1. applies upstream's manifest rules (nydusify pkg/checker/rule/manifest.go,
//     and docs/nydus-format.md §1.1): blob layers first, each with the Nydus
//     blob media type and annotation, the bootstrap layer last with its
//     annotations, one config diff_id per layer, a blob layer's diff_id equal
//     to its digest and the bootstrap layer's diff_id equal to the sha256 of
//     its uncompressed tar;
//  2. downloads the bootstrap layer, validates the whole RAFS bootstrap and
//     checks that its blob table names exactly the manifest's blob layers;
//  3. reads every chunk of every file through ranged reads from the target
//     registry (or OCI layout) and verifies each chunk's digest, so that a
//     damaged blob is reported with the path of the file it belongs to;
//  4. with a source image (or, with none, the OCI manifest of the same
//     platform in a merged index), rebuilds the source's filesystem by
//     applying its layers in order with OCI whiteout semantics, streaming
//     them and keeping only metadata and a sha256 per file, and compares it
//     with the Nydus tree: paths, types, permission bits, owners, sizes,
//     contents, symlink targets, device numbers, extended attributes and
//     hard-link groups.
//
// Unlike upstream, which mounts the image with nydusd (FUSE) and compares
// the mount with an unpacked rootfs, Check needs no mount, no root and no
// scratch space: both trees are compared in memory.
//
// Modification times are not compared. Upstream's converter drops the
// sub-second part of mtimes while ours keeps it, and layer tools disagree
// on what they record (some clamp to SOURCE_DATE_EPOCH, some write 0,
// implicit parent directories have none), so a comparison would flag
// images that are correct.
package checker
