package stargz

import (
	"fmt"
	"strings"

	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// DefaultChunkSize is the chunk size of TOC-reference images unless
// another is asked for: eStargz's default chunk size, 4 MiB (upstream
// nydus-image's default for estargztoc-ref, and what nydus-snapshotter
// passes).
const DefaultChunkSize = 0x400000

// Features are the blob features a TOC-reference blob records (upstream:
// CAP_TAR_TOC from the build context, ALIGNED from dump_meta_data).
const Features = blob.FeatureAligned | blob.FeatureCapTarTOC

// Chunk is one chunk of a TOC-reference blob.
type Chunk struct {
	// Path is the file's cleaned path in the layer ("a/b").
	Path string
	// FileOffset is the chunk's offset in its file.
	FileOffset uint64
	// Digest is the TOC's chunkDigest: sha256 of the uncompressed chunk.
	Digest [32]byte
	// CompressedOffset is where the chunk's gzip member or zstd frame
	// starts in the layer; CompressedSize is how many bytes from there
	// are read to decode it.
	CompressedOffset uint64
	CompressedSize   uint32
	// UncompressedOffset is the chunk's 4 KiB aligned offset in the
	// blob's uncompressed address space; UncompressedSize its size.
	UncompressedOffset uint64
	UncompressedSize   uint32
}

// File is the data of a regular file entry of a TOC.
type File struct {
	// Path is the file's cleaned path.
	Path string
	// Size is the file size.
	Size uint64
	// Chunks are indexes into Layout.Chunks, in file order.
	Chunks []uint32
}

// Layout is the chunk layout of a TOC-reference blob.
type Layout struct {
	Kind      Kind
	ChunkSize uint32
	// LayerSize is the size of the layer (the blob's compressed size).
	LayerSize uint64
	// Chunks are in chunk-info order: TOC order, which is stored order.
	Chunks []Chunk
	// Files maps the index of each "reg" entry of the TOC to its data
	// (a path listed twice has two).
	Files map[int]*File
	// UncompressedSize is the blob's uncompressed size (every chunk
	// rounded up to 4 KiB).
	UncompressedSize uint64
}

// CleanPath normalises a TOC entry name into a relative path without
// "." and empty components; ".." or NUL is refused. The root is "".
func CleanPath(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("name %q contains NUL: %w", name, ErrCorrupt)
	}
	var parts []string
	for _, p := range strings.Split(name, "/") {
		switch p {
		case "", ".":
			continue
		case "..":
			return "", fmt.Errorf("name %q contains '..': %w", name, ErrCorrupt)
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "/"), nil
}

// IsSpecial reports whether a cleaned path is one of eStargz's own files,
// which a TOC-reference image leaves out (upstream
// is_stargz_special_files): the TOC and the prefetch landmarks.
func IsSpecial(path string) bool {
	return path == TOCTarName || path == ".prefetch.landmark" || path == ".no.prefetch.landmark"
}

// gzipBound is upstream's bound on the stored bytes that decode to the
// first size bytes of a gzip member (compute_compressed_gzip_size): the
// gzip header and trailer, 5 bytes of block header per 16 KiB and 128
// bytes of slack.
func gzipBound(size uint64) uint64 {
	return size + 10 + 8 + 5 + (size/(16<<10))*5 + 128
}

// NewLayout derives the chunk layout of a TOC for a layer of layerSize
// bytes, with chunkSize the image's chunk size (the eStargz chunk size the
// layer was built with). Rules (upstream StargzBuilder, docs/format.md
// §10): data entries ("reg" and "chunk", eStargz's own files left out)
// give chunks in TOC order; a chunk's size is its chunkSize, or the rest
// of its file for the last one, and must be the image's chunk size except
// for a file's last chunk; chunk offsets in a file are multiples of the
// chunk size, contiguous, and sum to the file size; uncompressed offsets
// follow in TOC order, each rounded up to 4 KiB; stored offsets (the TOC's
// offset) must increase strictly in that order; a chunk's stored size is
// the distance to the next chunk's offset (the layer's end for the last
// one), bounded for eStargz by upstream's gzip bound and in all cases by
// the maximum chunk size.
func NewLayout(t *TOC, kind Kind, chunkSize uint32, layerSize uint64) (*Layout, error) {
	if chunkSize < rafs.MinChunkSize || chunkSize > rafs.MaxChunkSize || chunkSize&(chunkSize-1) != 0 {
		return nil, fmt.Errorf("invalid chunk size %#x", chunkSize)
	}
	if kind != EStargz && kind != ZstdChunked {
		return nil, fmt.Errorf("layout of kind %v: %w", kind, ErrNoTOC)
	}
	cs := uint64(chunkSize)
	l := &Layout{Kind: kind, ChunkSize: chunkSize, LayerSize: layerSize, Files: map[int]*File{}}
	var cur *File // the file whose chunks follow
	var curPath string
	var curSize uint64
	for i := range t.Entries {
		e := &t.Entries[i]
		if !e.isData() {
			continue
		}
		p, err := CleanPath(e.Name)
		if err != nil {
			return nil, fmt.Errorf("TOC entry %d: %w", i, err)
		}
		if IsSpecial(p) {
			cur = nil
			continue
		}
		bad := func(format string, a ...any) error {
			return fmt.Errorf("TOC entry %d %q: "+format+": %w", append(append([]any{i, e.Name}, a...), ErrCorrupt)...)
		}
		var size uint64
		if e.Type == "reg" {
			cur = &File{Path: p, Size: uint64(e.Size)}
			curPath, curSize = p, uint64(e.Size)
			l.Files[i] = cur
			if e.Size == 0 {
				cur = nil
				continue
			}
			switch {
			case e.ChunkOffset != 0:
				return nil, bad("regular file entry at chunk offset %d", e.ChunkOffset)
			case e.ChunkSize == 0 || uint64(e.ChunkSize) >= curSize:
				size = curSize // the whole file, in one chunk
			default:
				size = uint64(e.ChunkSize)
			}
		} else {
			if cur == nil || p != curPath {
				return nil, bad("chunk without its file's regular entry before it")
			}
			if uint64(e.ChunkOffset) >= curSize {
				return nil, bad("chunk offset %d beyond the file's %d bytes", e.ChunkOffset, curSize)
			}
			size = uint64(e.ChunkSize)
			if rest := curSize - uint64(e.ChunkOffset); size == 0 || size > rest {
				size = rest
			}
		}
		switch {
		case uint64(e.ChunkOffset)%cs != 0:
			return nil, bad("chunk offset %#x is not a multiple of the chunk size %#x (build with the layer's eStargz chunk size)", e.ChunkOffset, cs)
		case size > cs:
			return nil, bad("chunk of %d bytes is larger than the chunk size %#x (build with the layer's eStargz chunk size)", size, cs)
		case size < cs && uint64(e.ChunkOffset)+size != curSize:
			return nil, bad("chunk of %d bytes at %d is short but not the file's last (its chunk size is not %#x)", size, e.ChunkOffset, cs)
		case e.InnerOffset != 0:
			return nil, bad("innerOffset %d: chunks sharing a compression stream (eStargz min chunk size) are not supported", e.InnerOffset)
		case e.Offset <= 0:
			return nil, bad("data at offset %d", e.Offset)
		case e.ChunkDigest == "":
			return nil, bad("no chunkDigest")
		}
		d, err := ParseDigest(e.ChunkDigest)
		if err != nil {
			return nil, fmt.Errorf("TOC entry %d %q: %w", i, e.Name, err)
		}
		if want := uint64(len(cur.Chunks)) * cs; uint64(e.ChunkOffset) != want {
			return nil, bad("chunk at file offset %d, want %d (chunks must be contiguous and in order)", e.ChunkOffset, want)
		}
		if len(l.Chunks) >= blob.MaxChunksPerBlob {
			return nil, bad("more than %d chunks", blob.MaxChunksPerBlob)
		}
		cur.Chunks = append(cur.Chunks, uint32(len(l.Chunks)))
		l.Chunks = append(l.Chunks, Chunk{Path: p, FileOffset: uint64(e.ChunkOffset), Digest: d,
			CompressedOffset: uint64(e.Offset), UncompressedOffset: l.UncompressedSize, UncompressedSize: uint32(size)})
		l.UncompressedSize += roundUp4K(size)
		if l.UncompressedSize > 1<<44 {
			return nil, bad("uncompressed size beyond 2^44")
		}
		if uint64(e.ChunkOffset)+size == curSize {
			cur = nil
		}
	}
	for _, f := range l.Files {
		if uint64(len(f.Chunks))*cs < f.Size {
			return nil, fmt.Errorf("file %q: its %d chunks do not cover its %d bytes: %w", f.Path, len(f.Chunks), f.Size, ErrCorrupt)
		}
	}
	for i := range l.Chunks {
		c := &l.Chunks[i]
		next := layerSize
		if i+1 < len(l.Chunks) {
			next = l.Chunks[i+1].CompressedOffset
		}
		if c.CompressedOffset >= next {
			return nil, fmt.Errorf("chunk %d of %q: stored offset %d is not before the next chunk's or the layer's end %d: %w", i, c.Path, c.CompressedOffset, next, ErrCorrupt)
		}
		size := next - c.CompressedOffset
		if kind == EStargz {
			size = min(size, gzipBound(uint64(c.UncompressedSize)))
		}
		size = min(size, blob.MaxChunkSize)
		if size == uint64(c.UncompressedSize) {
			// A V1 chunk-info entry of equal sizes means "stored as is":
			// read one byte more, the next chunk's first, which is never
			// decoded (the last chunk's range ends with the TOC and the
			// footer, so one byte less).
			if i+1 < len(l.Chunks) {
				size++
			} else {
				size--
			}
		}
		if size == 0 || size > blob.MaxChunkSize {
			return nil, fmt.Errorf("chunk %d of %q: %d stored bytes: %w", i, c.Path, size, ErrCorrupt)
		}
		c.CompressedSize = uint32(size)
	}
	return l, nil
}

func roundUp4K(v uint64) uint64 { return (v + 4095) &^ 4095 }

// ChunkInfos returns the chunk-info entries (V1) of the layout.
func (l *Layout) ChunkInfos() []blob.ChunkInfo {
	out := make([]blob.ChunkInfo, len(l.Chunks))
	for i, c := range l.Chunks {
		out[i] = blob.ChunkInfo{CompressedOffset: c.CompressedOffset, CompressedSize: c.CompressedSize,
			UncompressedOffset: c.UncompressedOffset, UncompressedSize: c.UncompressedSize, Compressed: true}
	}
	return out
}

// CI returns the uncompressed chunk-info table (V1 entries).
func (l *Layout) CI() []byte {
	ci := make([]byte, 0, len(l.Chunks)*blob.ChunkInfoV1Size)
	for _, c := range l.ChunkInfos() {
		ci = blob.AppendChunkInfo(ci, c, false)
	}
	return ci
}

// Meta returns the chunk-info table's header and uncompressed data as a
// TOC-reference blob records them (upstream writes the table, zstd
// compressed when that is smaller, to nowhere: the blob table keeps its
// sizes and ci_offset 0). The layout must have chunks.
func (l *Layout) Meta() (blob.MetaHeader, []byte, error) {
	ci := l.CI()
	if len(l.Chunks) == 0 {
		return blob.MetaHeader{}, nil, fmt.Errorf("layout without chunks has no chunk-info table")
	}
	c, compressed, err := compress.CompressIfSmaller(compress.Zstd, nil, ci)
	if err != nil {
		return blob.MetaHeader{}, nil, err
	}
	h := blob.MetaHeader{Features: Features, CICompressor: compress.None, CIEntries: uint32(len(l.Chunks)),
		CICompressedSize: uint64(len(ci)), CIUncompressedSize: uint64(len(ci))}
	if compressed {
		h.CICompressor, h.CICompressedSize = compress.Zstd, uint64(len(c))
	}
	return h, ci, h.Validate()
}

// BlobInfo returns the blob table entry of the layout's blob (its index
// 0), as upstream records it, except that CompressedSize is the layer's
// size (upstream: the end of the last chunk's stored range), so a reader
// finds the footer.
func (l *Layout) BlobInfo(blobID string) (rafs.BlobInfo, error) {
	bi := rafs.BlobInfo{BlobID: blobID, ChunkSize: l.ChunkSize, ChunkCount: uint32(len(l.Chunks)),
		Compressor: l.Kind.Compressor(), Digester: digester.Sha256, Features: Features,
		CompressedSize: l.LayerSize, UncompressedSize: l.UncompressedSize}
	if len(l.Chunks) == 0 {
		return bi, nil
	}
	h, _, err := l.Meta()
	if err != nil {
		return rafs.BlobInfo{}, err
	}
	bi.CICompressor, bi.CICompressedSize, bi.CIUncompressedSize = h.CICompressor, h.CICompressedSize, h.CIUncompressedSize
	return bi, nil
}
