// Package builder turns layer tarballs and directories into Nydus data
// blobs and RAFS v6 bootstraps, and merges per-layer bootstraps into one
// image bootstrap (the library behind `nydus-image create` and `merge`).
//
// Chunks are deduplicated against everything already written: earlier
// chunks of the same layer, a parent bootstrap and a chunk dictionary.
// Output is reproducible: the same input yields identical bytes, whatever
// the number of compression workers.
//
// Entry points: [Create] builds one layer from a tar stream (a directory
// through [DirTar]) into a data blob and a bootstrap ([Result]); [Merge]
// stacks per-layer bootstraps into an image's; [Unpack] writes an image
// back as a tar stream and [Check] verifies a bootstrap and its blobs. See
// ExampleCreate, ExampleUnpack and ExampleMerge.
package builder
