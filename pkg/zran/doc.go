// Package zran gives random access to gzip files, for reading the
// original gzip layers of an OCI image lazily (upstream Nydus's zran,
// "OCI-referenced" images): [Build] walks a gzip file once and records
// checkpoints, places where inflating can start in the middle of the
// stream (a deflate block boundary, its bit offset and the 32 KiB window
// before it); [Index.ReadAt] then reads any uncompressed range by
// inflating from the nearest checkpoint with the standard library's
// inflater, the window preset as its dictionary.
//
// Locating block boundaries needs a deflate decoder that reports where
// blocks start, which no library offers: this package has its own,
// used only while building the index.
package zran
