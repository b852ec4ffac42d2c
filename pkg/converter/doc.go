// Package converter converts OCI and Docker images into Nydus images and
// back-checks them: the library behind `nydusify convert`, `check` and
// `copy`. It builds in-process with package builder (it never shells out),
// reads and writes registries through go-containerregistry, and writes
// the image layout that nydus-snapshotter's converter writes today.
//
// Unlike upstream, each layer is packed against the chunks of the layers
// below it, so data that a later layer re-adds, or that an upgrade leaves
// unchanged, is stored once. Set Options.Independent for upstream's
// layer-by-layer packing.
package converter
