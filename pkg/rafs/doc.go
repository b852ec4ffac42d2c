// Package rafs reads and writes RAFS v6 bootstraps, the metadata half of a
// Nydus image.
//
// A RAFS v6 bootstrap is a valid EROFS image (chunk-based inodes, one extra
// device per data blob) followed by a Nydus extension: an extended
// superblock, a blob table, an optional prefetch table and a trailing chunk
// info table. The layout is specified normatively in docs/format.md.
//
// The package is a leaf: it parses from an io.ReaderAt, writes to an
// io.Writer and never touches the network, FUSE or a logger.
package rafs
