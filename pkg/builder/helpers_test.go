package builder

import "archive/tar"

type tarHdr = tar.Header

// sha256 of the upstream fixture's files. Unpack verified every chunk
// against upstream's blake3 chunk digests when these were recorded.
const (
	libRSPrefix    = "1810eba864521293bb0d6b55a3c82318d4d89f294ed761c456d9088a17de0c69"
	syncIORSPrefix = "e629ab260ff0dc02a24648a3e0dd8c13a5daf233d535c330e3201925f5eeff96"
)
