package blob

import "github.com/nydus-go/nydus/pkg/errdefs"

// ErrCorrupt is wrapped by every error caused by malformed or inconsistent
// on-disk data. It matches errdefs.ErrCorrupt.
var ErrCorrupt = errdefs.New(errdefs.ErrCorrupt, "corrupt blob data")

// ErrUnsupported is wrapped by errors reporting a valid feature this
// package does not implement (for example reading encrypted chunks). It
// matches errdefs.ErrUnsupported.
var ErrUnsupported = errdefs.New(errdefs.ErrUnsupported, "unsupported")

// An optional section (for example the inline bootstrap) absent from a
// blob is reported wrapping errdefs.ErrNotFound.
