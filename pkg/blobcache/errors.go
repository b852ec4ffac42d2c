package blobcache

import (
	"errors"

	"github.com/nydus-go/nydus/pkg/errdefs"
)

// ErrCorrupt is wrapped by errors reporting cache content that cannot be
// trusted: cached chunk data failing verification, or a chunk_map or
// blob.meta file with the wrong size or header. It matches
// errdefs.ErrCorrupt.
var ErrCorrupt = errdefs.New(errdefs.ErrCorrupt, "corrupt cache data")

// ErrInUse is wrapped by errors from [Cache.Remove] for a blob that has
// an unreleased [BlobCache].
var ErrInUse = errors.New("blob cache in use")

// ErrInvalidBlobID is wrapped by errors for a blob id that is not 64
// lowercase hex characters.
var ErrInvalidBlobID = errors.New("invalid blob id")

// ErrNotCached is wrapped by errors from [BlobCache.ReadChunk] for a chunk
// whose bit is not set.
var ErrNotCached = errors.New("chunk not cached")

// ErrClosed is wrapped by errors from a closed [Cache] or a fully released
// [BlobCache].
var ErrClosed = errors.New("blob cache closed")
