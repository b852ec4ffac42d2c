package builder

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/stargz"
)

// TOCLayer is an eStargz or zstd:chunked layer to reference: its TOC,
// format, id and size.
type TOCLayer struct {
	// TOC is the layer's parsed table of contents.
	TOC *stargz.TOC
	// Kind is the layer's format.
	Kind stargz.Kind
	// BlobID is the layer's sha256 (hex), the data blob's id.
	BlobID string
	// Size is the layer's size in bytes.
	Size uint64
}

// OpenTOCLayer reads the footer and TOC of a layer of size bytes and
// hashes the whole layer for its id. A plain gzip or zstd layer fails
// with an error wrapping stargz.ErrNoTOC.
func OpenTOCLayer(r io.ReaderAt, size int64) (TOCLayer, error) {
	read := func(off, n int64) ([]byte, error) {
		b := make([]byte, n)
		if _, err := r.ReadAt(b, off); err != nil {
			return nil, err
		}
		return b, nil
	}
	t, f, _, err := stargz.ReadTOC(read, size)
	if err != nil {
		return TOCLayer{}, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(r, 0, size)); err != nil {
		return TOCLayer{}, fmt.Errorf("hash the layer: %w", err)
	}
	return TOCLayer{TOC: t, Kind: f.Kind, BlobID: hex.EncodeToString(h.Sum(nil)), Size: uint64(size)}, nil
}

// TOCOptions configure CreateFromTOC.
type TOCOptions struct {
	// ChunkSize is the image's chunk size, the eStargz chunk size the
	// layer was built with (default 4 MiB, eStargz's default).
	ChunkSize uint32
	// Prefetch lists absolute paths for the bootstrap's prefetch table.
	Prefetch []string
	// Warn receives non-fatal diagnostics (nil: dropped).
	Warn func(msg string)
}

// CreateFromTOC builds the RAFS v6 bootstrap of a TOC-reference image
// (`nydus-image create -t estargztoc-ref`): the tree of the layer's TOC,
// whose regular files' chunks are the layer's own gzip members (eStargz)
// or zstd frames (zstd:chunked), with the TOC's chunk digests (sha256).
// The layer is the image's data blob, unchanged; no data is written.
// docs/format.md §10 gives the layout. Whiteout entries are kept as
// ordinary files (merge applies them), as upstream does for a layer
// built without a parent.
func CreateFromTOC(ctx context.Context, l TOCLayer, o TOCOptions) (*Result, error) {
	if o.ChunkSize == 0 {
		o.ChunkSize = stargz.DefaultChunkSize
	}
	if err := ValidateSize("chunk size", uint64(o.ChunkSize)); err != nil {
		return nil, err
	}
	if len(l.BlobID) != 64 {
		return nil, fmt.Errorf("blob id %q is not a sha256 hex string", l.BlobID)
	}
	lay, err := stargz.NewLayout(l.TOC, l.Kind, o.ChunkSize, l.Size)
	if err != nil {
		return nil, err
	}
	bi, err := lay.BlobInfo(l.BlobID)
	if err != nil {
		return nil, err
	}
	warn := o.Warn
	if warn == nil {
		warn = func(string) {}
	}
	sink := &tocSink{lay: lay, seen: map[[32]byte]rafs.ChunkInfo{}}
	t := &tarTree{root: &rafs.Node{Inode: newDir()}, sink: sink, warn: warn}
	for i := range l.TOC.Entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e := &l.TOC.Entries[i]
		if e.Type == "chunk" {
			continue
		}
		p, err := stargz.CleanPath(e.Name)
		if err != nil {
			return nil, fmt.Errorf("TOC entry %d: %w", i, err)
		}
		if stargz.IsSpecial(p) {
			continue
		}
		hdr, err := tocHeader(e)
		if err != nil {
			return nil, fmt.Errorf("TOC entry %d %q: %w", i, e.Name, err)
		}
		sink.entry = i
		if err := t.add(ctx, hdr, nil); err != nil {
			return nil, fmt.Errorf("TOC entry %d %q: %w", i, e.Name, err)
		}
	}
	bo := Options{ChunkSize: o.ChunkSize, Compressor: l.Kind.Compressor(), Digester: digester.Sha256, Prefetch: o.Prefetch, Warn: o.Warn}
	boot, used, err := marshalTree(t.root, []rafs.BlobInfo{bi}, &bo, -1)
	if err != nil {
		return nil, err
	}
	res := &Result{Bootstrap: boot, BlobID: l.BlobID, BlobSize: l.Size, HasBlob: len(used) > 0, Blobs: used,
		UncompressedSize: lay.UncompressedSize, Stats: sink.stats}
	if len(lay.Chunks) > 0 {
		h, ci, err := lay.Meta()
		if err != nil {
			return nil, err
		}
		if res.BlobMeta, err = blob.MarshalMetaFile(h, ci); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// tocSink attaches to each regular file the chunks its TOC entry has.
type tocSink struct {
	lay   *stargz.Layout
	entry int // the TOC entry being added
	// seen maps a digest to its first chunk: a bootstrap has one chunk
	// record per digest and blob, so identical data read elsewhere in the
	// layer is read from its first copy.
	seen  map[[32]byte]rafs.ChunkInfo
	stats Stats
}

func (s *tocSink) addFile(_ context.Context, name string, ino *rafs.Inode, _ io.Reader) error {
	s.stats.Files++
	f := s.lay.Files[s.entry]
	if f == nil {
		if ino.Size != 0 {
			return fmt.Errorf("%s: no data in the TOC for %d bytes", name, ino.Size)
		}
		return nil
	}
	ino.Size = f.Size
	for _, ci := range f.Chunks {
		c := s.lay.Chunks[ci]
		s.stats.Chunks++
		s.stats.Bytes += uint64(c.UncompressedSize)
		if first, ok := s.seen[c.Digest]; ok {
			s.stats.DedupChunks++
			s.stats.DedupBytes += uint64(c.UncompressedSize)
			ino.Chunks = append(ino.Chunks, first)
			continue
		}
		rc := rafs.ChunkInfo{Digest: digester.Digest(c.Digest), Flags: rafs.ChunkCompressed,
			CompressedSize: c.CompressedSize, UncompressedSize: c.UncompressedSize, CompressedOffset: c.CompressedOffset,
			UncompressedOffset: c.UncompressedOffset, FileOffset: c.FileOffset, Index: ci}
		s.seen[c.Digest] = rc
		s.stats.UniqueChunks++
		ino.Chunks = append(ino.Chunks, rc)
	}
	return nil
}

// tocTypes maps TOC entry types to tar types.
var tocTypes = map[string]byte{"dir": tar.TypeDir, "reg": tar.TypeReg, "symlink": tar.TypeSymlink, "hardlink": tar.TypeLink,
	"char": tar.TypeChar, "block": tar.TypeBlock, "fifo": tar.TypeFifo}

// tocHeader turns a TOC entry into the tar header it was made from.
func tocHeader(e *stargz.Entry) (*tar.Header, error) {
	typ, ok := tocTypes[e.Type]
	if !ok {
		return nil, fmt.Errorf("unexpected type %q", e.Type)
	}
	h := &tar.Header{Typeflag: typ, Name: e.Name, Linkname: e.LinkName, Mode: e.Mode, Uid: int(e.UID), Gid: int(e.GID),
		Devmajor: e.DevMajor, Devminor: e.DevMinor}
	if typ == tar.TypeReg {
		h.Size = e.Size
	}
	if e.ModTime != "" {
		mt, err := time.Parse(time.RFC3339Nano, e.ModTime)
		if err != nil {
			return nil, errors.New("modtime is not RFC 3339")
		}
		h.ModTime = mt
	}
	if len(e.Xattrs) > 0 {
		h.PAXRecords = make(map[string]string, len(e.Xattrs))
		for k, v := range e.Xattrs {
			h.PAXRecords["SCHILY.xattr."+k] = string(v)
		}
	}
	return h, nil
}
