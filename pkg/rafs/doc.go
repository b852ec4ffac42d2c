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
//
// Entry points: [Open] parses a bootstrap into a [Reader], which looks
// paths up ([Reader.Lookup]), lists directories ([Reader.ReadDir]), walks
// the tree ([Reader.Walk]), returns a file's chunks ([Reader.ChunkAddrs],
// [Reader.ChunkTable]) and loads the whole tree as [Node]s ([Reader.Load]);
// [Marshal] and [Write] turn a [Node] tree back into a bootstrap. See
// ExampleOpen and ExampleMarshal.
package rafs
