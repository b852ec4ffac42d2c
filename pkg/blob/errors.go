package blob

import "errors"

// ErrCorrupt is wrapped by every error caused by malformed or inconsistent
// on-disk data.
var ErrCorrupt = errors.New("corrupt blob data")

// ErrNotFound is wrapped by errors reporting that an optional section (for
// example the inline bootstrap) is absent from a blob.
var ErrNotFound = errors.New("not found")

// ErrUnsupported is wrapped by errors reporting a valid feature this
// package does not implement (for example reading encrypted chunks).
var ErrUnsupported = errors.New("unsupported")
