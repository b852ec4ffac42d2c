// Package interop holds tests that drive our nydus-image through upstream
// nydus-snapshotter's converter package, the Go client used by nerdctl,
// BuildKit and Harbor. It is a separate module so that the snapshotter's
// dependencies stay out of the core module.
package interop
