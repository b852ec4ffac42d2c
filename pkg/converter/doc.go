// Package converter converts OCI and Docker images into Nydus images:
// the library behind `nydusify convert` (`nydusify check` is package
// checker; `nydusify copy` goes through package imageref and
// go-containerregistry, with this package's media types and platform
// helpers). It builds in-process with package builder (it never shells out),
// reads and writes registries through go-containerregistry, and writes
// the image layout that nydus-snapshotter's converter writes today.
//
// Unlike upstream, each layer is packed against the chunks of the layers
// below it, so data that a later layer re-adds, or that an upgrade leaves
// unchanged, is stored once. Set Options.Independent for upstream's
// layer-by-layer packing.
//
// Entry points: [Convert] converts the image at one [imageref.Ref] into
// another, as [Options] say, and returns a [Result]; [OpenChunkDict] opens
// a chunk dictionary image and [NewBuildCache] a build cache for it;
// [imageref.ExtractBootstrap] takes the RAFS bootstrap out of a converted image's
// bootstrap layer. See ExampleConvert.
package converter
