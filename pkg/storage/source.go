package storage

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sync/singleflight"

	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// RangeReader reads byte ranges of blobs: local files, a registry, an
// HTTP proxy.
type RangeReader interface {
	ReadRange(ctx context.Context, blobID string, off, n int64) ([]byte, error)
}

// FileSource reads blobs from local files: either one file for every
// blob (File) or <Dir>/<blob_id>, else <AltDirs[i]>/<blob_id>.
type FileSource struct {
	// File, when set, serves every blob.
	File string
	// Dir holds blobs named by their id.
	Dir string
	// AltDirs are searched in order for a blob Dir lacks (upstream's
	// localfs alt_dirs).
	AltDirs []string

	mu    sync.Mutex
	files map[string]*os.File
}

// Close closes the blob files.
func (s *FileSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.files {
		f.Close()
	}
	s.files = nil
	return nil
}

func (s *FileSource) open(blobID string) (*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.files[blobID]; ok {
		return f, nil
	}
	p := s.File
	if p == "" {
		if !IsBlobID(blobID) {
			return nil, fmt.Errorf("blob id %q is not a sha256 hex string", blobID)
		}
		p = filepath.Join(s.Dir, blobID)
	}
	f, err := os.Open(p)
	for _, alt := range s.AltDirs {
		if s.File != "" || !errors.Is(err, fs.ErrNotExist) {
			break
		}
		f, err = os.Open(filepath.Join(alt, blobID))
	}
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", blobID, err)
	}
	if s.files == nil {
		s.files = map[string]*os.File{}
	}
	s.files[blobID] = f
	return f, nil
}

// ReadRange reads n bytes at off of a blob file.
func (s *FileSource) ReadRange(ctx context.Context, blobID string, off, n int64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := s.open(blobID)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, off); err != nil {
		return nil, fmt.Errorf("blob %s: read %d bytes at offset %d: %w", blobID, n, off, err)
	}
	return buf, nil
}

// BytesSource serves every blob id from one in-memory blob; a read beyond
// its end fails.
type BytesSource []byte

// ReadRange returns a copy of n bytes at off.
func (b BytesSource) ReadRange(ctx context.Context, _ string, off, n int64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if off < 0 || n < 0 || off > int64(len(b)) || n > int64(len(b))-off {
		return nil, fmt.Errorf("range %d+%d beyond the blob's %d bytes", off, n, len(b))
	}
	return append([]byte(nil), b[off:off+n]...), nil
}

// batchLoc locates a batch chunk: the batch's stored range and size, and
// the chunk's offset inside the uncompressed batch.
type batchLoc struct {
	off, csize uint64
	usize      uint32
	inOff      uint32
}

// ChunkReader reads, decompresses and resolves the chunks of one
// bootstrap's blobs through a RangeReader. It is safe for concurrent use.
type ChunkReader struct {
	rd    *rafs.Reader
	rr    RangeReader
	comp  compress.Algorithm
	store MetaStore // nil: none

	mu     sync.Mutex
	metas  map[uint32]*blob.Meta
	recent map[[2]uint64][]byte // (blob, batch offset) → uncompressed batch; zranKey → a context's output
	order  [][2]uint64
	// zin keeps the fetched input of recent zran contexts (zranKey →
	// the bytes from the context's start), in zinOrder.
	zin      map[[2]uint64][]byte
	zinOrder [][2]uint64
	// batches joins concurrent fetches of one batch (its chunks are
	// often read at the same time: neighbouring small files) and of one
	// blob's chunk-info table.
	batches singleflight.Group
}

// NewChunkReader prepares reads of rd's chunks from rr. Batch chunks are
// located through their blob's CI table and batch contexts, read through
// rr on first use.
func NewChunkReader(ctx context.Context, rd *rafs.Reader, rr RangeReader) (*ChunkReader, error) {
	cr := &ChunkReader{rd: rd, rr: rr, comp: rd.Ext.Flags.Compressor(),
		metas: map[uint32]*blob.Meta{}, recent: map[[2]uint64][]byte{}}
	return cr, nil
}

// compressor returns the compression algorithm of a blob's chunks: the
// blob table's, which may differ between the layers of a merged image.
func (cr *ChunkReader) compressor(idx uint32) compress.Algorithm {
	if int(idx) < len(cr.rd.Blobs) {
		return cr.rd.Blobs[idx].Compressor
	}
	return cr.comp
}

// meta loads a blob's CI table and batch contexts through the range
// reader (cached).
func (cr *ChunkReader) meta(ctx context.Context, idx uint32) (*blob.Meta, error) {
	if m, ok := cr.loadedMeta(idx); ok {
		return m, nil
	}
	v, err, _ := cr.batches.Do(fmt.Sprintf("meta/%d", idx), func() (any, error) { return cr.loadMeta(ctx, idx) })
	if err != nil {
		return nil, err
	}
	return v.(*blob.Meta), nil
}

// loadedMeta returns a blob's chunk-info table if it is loaded.
func (cr *ChunkReader) loadedMeta(idx uint32) (*blob.Meta, bool) {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	m, ok := cr.metas[idx]
	return m, ok
}

// MetaStore keeps blobs' chunk-info tables on local disk, in the
// "<blob_id>.blob.meta" file format ([blob.MarshalMetaFile]), so a
// ChunkReader need not fetch a table again (package blobcache keeps them
// beside the chunk cache).
type MetaStore interface {
	// LoadMeta returns the stored meta file of a blob, or ok=false.
	LoadMeta(ctx context.Context, blobID string, chunks int) (file []byte, ok bool)
	// HasMeta reports whether a meta file of the blob is stored.
	HasMeta(ctx context.Context, blobID string) bool
	// StoreMeta keeps the meta file of a blob.
	StoreMeta(ctx context.Context, blobID string, chunks int, file []byte) error
}

// MetaShare, when a MetaStore implements it, shares decoded chunk-info
// tables between the ChunkReaders (images) of a process: a blob's table
// is decoded once, whatever the number of images using it.
type MetaShare interface {
	// SharedMeta returns the decoded table of a blob, or nil.
	SharedMeta(blobID string) *blob.Meta
	// ShareMeta offers a decoded table and returns the one to use (the
	// first one shared, if there is one).
	ShareMeta(blobID string, m *blob.Meta) *blob.Meta
}

// SetMetaStore makes cr look chunk-info tables up in ms before fetching
// them, and keep what it fetches there. Call it before the first read.
func (cr *ChunkReader) SetMetaStore(ms MetaStore) { cr.store = ms }

// loadMeta reads and decodes a blob's CI table and batch contexts: from
// the meta store if it has them, else from the blob.
func (cr *ChunkReader) loadMeta(ctx context.Context, idx uint32) (*blob.Meta, error) {
	m, ok := cr.loadedMeta(idx)
	if ok {
		return m, nil
	}
	bi := cr.rd.Blobs[idx]
	if bi.CICompressedSize == 0 || bi.CICompressedSize > 1<<30 || bi.CIUncompressedSize > 1<<30 {
		return nil, fmt.Errorf("blob %s: no usable chunk-info table (size %d)", bi.BlobID, bi.CICompressedSize)
	}
	var hdr blob.MetaHeader
	share, _ := cr.store.(MetaShare)
	if share != nil {
		if sm := share.SharedMeta(bi.BlobID); sm != nil && metaMatches(sm.Header, bi) {
			m, hdr = sm, sm.Header
		}
	}
	if m == nil && cr.store != nil {
		if file, ok := cr.store.LoadMeta(ctx, bi.BlobID, int(bi.ChunkCount)); ok {
			// A stored table that does not parse or does not match the
			// bootstrap is ignored: the blob's own is fetched.
			if sm, err := blob.ParseMetaFile(file); err == nil && metaMatches(sm.Header, bi) {
				m, hdr = sm, sm.Header
			}
		}
	}
	if m == nil && isRefBlob(bi) {
		var err error
		if m, hdr, err = cr.loadRefMeta(ctx, bi); err != nil {
			return nil, err
		}
	}
	if m == nil {
		id, err := metaBlobID(bi)
		if err != nil {
			return nil, err
		}
		raw, err := cr.rr.ReadRange(ctx, id, int64(bi.CIOffset), int64(bi.CICompressedSize)+blob.MetaHeaderSize)
		if err != nil {
			return nil, fmt.Errorf("blob %s: the chunk-info table at offset %d (%d bytes) of blob %s could not be read: %w", bi.BlobID, bi.CIOffset, bi.CICompressedSize+blob.MetaHeaderSize, id, err)
		}
		if hdr, err = blob.UnmarshalMetaHeader(raw[bi.CICompressedSize:]); err != nil {
			return nil, fmt.Errorf("blob %s: %w", bi.BlobID, err)
		}
		ci := raw[:bi.CICompressedSize]
		if bi.CICompressedSize != bi.CIUncompressedSize {
			if ci, err = compress.Decompress(bi.CICompressor, nil, ci, int(bi.CIUncompressedSize)); err != nil {
				return nil, fmt.Errorf("blob %s: chunk-info table: %w", bi.BlobID, err)
			}
		}
		if m, err = blob.DecodeMeta(hdr, ci); err != nil {
			return nil, fmt.Errorf("blob %s: %w", bi.BlobID, err)
		}
		defer func() {
			if cr.store == nil {
				return
			}
			if file, err := blob.MarshalMetaFile(hdr, ci); err == nil {
				cr.store.StoreMeta(ctx, bi.BlobID, int(bi.ChunkCount), file)
			}
		}()
	}
	// The header that ends the table records where the table is; a
	// bootstrap pointing elsewhere in the blob finds a header that
	// disagrees.
	if !metaMatches(hdr, bi) {
		return nil, fmt.Errorf("blob %s: the bootstrap's chunk-info table (offset %d, %d/%d bytes) disagrees with the blob's own header (offset %d, %d/%d bytes): %w",
			bi.BlobID, bi.CIOffset, bi.CICompressedSize, bi.CIUncompressedSize, hdr.CIOffset, hdr.CICompressedSize, hdr.CIUncompressedSize, ErrChunkRecordMismatch)
	}
	if share != nil {
		// The first image's table; a crafted bootstrap's disagreeing
		// one stays its own.
		if sm := share.ShareMeta(bi.BlobID, m); metaMatches(sm.Header, bi) {
			m = sm
		}
	}
	cr.mu.Lock()
	cr.metas[idx] = m
	cr.mu.Unlock()
	return m, nil
}

// metaBlobID returns the id of the blob holding a blob's chunk-info
// table: the blob itself, or for a SEPARATE blob (a zran layer's
// original gzip file) the "ref" blob its bootstrap names by
// blob_meta_digest (upstream BlobInfo::get_blob_meta_id).
func metaBlobID(bi rafs.BlobInfo) (string, error) {
	if !bi.Features.Has(blob.FeatureSeparate) {
		return bi.BlobID, nil
	}
	if bi.MetaDigest == ([32]byte{}) {
		return "", fmt.Errorf("blob %s keeps its chunk-info table in a separate blob, but the bootstrap records no digest for it (a layer bootstrap before merge: merge it with --blob-digests)", bi.BlobID)
	}
	return hex.EncodeToString(bi.MetaDigest[:]), nil
}

// metaMatches reports whether a blob's meta header records the
// chunk-info table where the bootstrap's blob table says it is.
func metaMatches(hdr blob.MetaHeader, bi rafs.BlobInfo) bool {
	return hdr.CIOffset == bi.CIOffset && hdr.CICompressedSize == bi.CICompressedSize && hdr.CIUncompressedSize == bi.CIUncompressedSize &&
		hdr.CIEntries == bi.ChunkCount
}

// ErrChunkRecordMismatch reports a bootstrap chunk record that disagrees
// with its blob's own chunk-info table.
var ErrChunkRecordMismatch = errors.New("chunk record disagrees with the blob's chunk-info table")

// CheckRecord compares a bootstrap chunk record with entry c.Index of its
// blob's own chunk-info table (fetched through the range reader once per
// blob): the stored range, the uncompressed offset and size, and the
// compressed and batch flags must all agree. Where a chunk lives in a
// cache, and which stored bytes it decompresses from, must come from the
// blob, not from a bootstrap that anyone can write: a record that
// disagrees fails with an error wrapping [ErrChunkRecordMismatch].
func (cr *ChunkReader) CheckRecord(ctx context.Context, c rafs.ChunkInfo) error {
	return cr.checkRecord(ctx, c, true)
}

// ErrMetaNotLocal is returned by [ChunkReader.CheckRecordLocal] when the
// blob's chunk-info table would have to be fetched.
var ErrMetaNotLocal = errors.New("the blob's chunk-info table is not loaded or stored locally")

// CheckRecordLocal is CheckRecord without a fetch: the table must already
// be loaded or in the meta store, else it fails with [ErrMetaNotLocal].
func (cr *ChunkReader) CheckRecordLocal(ctx context.Context, c rafs.ChunkInfo) error {
	return cr.checkRecord(ctx, c, false)
}

func (cr *ChunkReader) checkRecord(ctx context.Context, c rafs.ChunkInfo, fetch bool) error {
	if int(c.BlobIndex) >= len(cr.rd.Blobs) {
		return fmt.Errorf("blob index %d out of range", c.BlobIndex)
	}
	bi := cr.rd.Blobs[c.BlobIndex]
	if !fetch {
		if _, ok := cr.loadedMeta(c.BlobIndex); !ok && (cr.store == nil || !cr.store.HasMeta(ctx, bi.BlobID)) {
			return ErrMetaNotLocal
		}
	}
	m, err := cr.meta(ctx, c.BlobIndex)
	if err != nil {
		return err
	}
	if int(c.Index) >= len(m.ChunkInfos) {
		return fmt.Errorf("blob %s: chunk index %d beyond its %d chunk infos: %w", bi.BlobID, c.Index, len(m.ChunkInfos), ErrChunkRecordMismatch)
	}
	ci := m.ChunkInfos[c.Index]
	batch := c.Flags&rafs.ChunkBatch != 0
	zran := bi.Features.Has(blob.FeatureZran)
	var bad string
	switch {
	case ci.UncompressedOffset != c.UncompressedOffset:
		bad = fmt.Sprintf("uncompressed offset %d, the blob's %d", c.UncompressedOffset, ci.UncompressedOffset)
	case ci.UncompressedSize != c.UncompressedSize:
		bad = fmt.Sprintf("uncompressed size %d, the blob's %d", c.UncompressedSize, ci.UncompressedSize)
	case ci.IsBatch() != batch:
		bad = fmt.Sprintf("batch flag %v, the blob's %v", batch, ci.IsBatch())
	case ci.IsEncrypted():
		bad = "the blob's entry is an encrypted chunk"
	case ci.IsZran() != zran:
		bad = fmt.Sprintf("the blob's entry has zran flag %v in a blob whose zran feature is %v", ci.IsZran(), zran)
	case !batch && ci.CompressedOffset != c.CompressedOffset:
		bad = fmt.Sprintf("compressed offset %d, the blob's %d", c.CompressedOffset, ci.CompressedOffset)
	case !batch && ci.CompressedSize != c.CompressedSize:
		bad = fmt.Sprintf("compressed size %d, the blob's %d", c.CompressedSize, ci.CompressedSize)
	case !batch && ci.Compressed != c.IsCompressed():
		bad = fmt.Sprintf("compressed flag %v, the blob's %v", c.IsCompressed(), ci.Compressed)
	default:
		return nil
	}
	return fmt.Errorf("blob %s chunk %d: %s: %w", bi.BlobID, c.Index, bad, ErrChunkRecordMismatch)
}

// MaxSpanGap is the largest gap between two chunks of a span that
// an amplified read reads through (alignment padding).
const MaxSpanGap = 4096

// ReadChunk returns the uncompressed data of chunk c (not yet verified).
func (cr *ChunkReader) ReadChunk(ctx context.Context, c rafs.ChunkInfo) ([]byte, error) {
	if int(c.BlobIndex) >= len(cr.rd.Blobs) {
		return nil, fmt.Errorf("blob index %d out of range", c.BlobIndex)
	}
	if c.UncompressedSize > rafs.MaxChunkSize {
		return nil, fmt.Errorf("chunk of %d bytes exceeds the maximum chunk size", c.UncompressedSize)
	}
	bi := cr.rd.Blobs[c.BlobIndex]
	if c.Flags&rafs.ChunkBatch == 0 && !cr.isZran(c) {
		if c.CompressedSize == 0 || c.CompressedSize > rafs.MaxChunkSize*2 {
			return nil, fmt.Errorf("blob %s chunk %d: stored size %d out of range", bi.BlobID, c.Index, c.CompressedSize)
		}
		raw, err := cr.rr.ReadRange(ctx, bi.BlobID, int64(c.CompressedOffset), int64(c.CompressedSize))
		if err != nil {
			return nil, err
		}
		return cr.DecodeUnit(ctx, c, Unit{Offset: c.CompressedOffset, Size: uint64(c.CompressedSize)}, raw)
	}
	if cr.isZran(c) {
		if data, ok := cr.Local(ctx, c); ok {
			return data, nil
		}
		u, err := cr.Unit(ctx, c)
		if err != nil {
			return nil, err
		}
		raw, err := cr.rr.ReadRange(ctx, bi.BlobID, int64(u.Offset), int64(u.Size))
		if err != nil {
			return nil, err
		}
		return cr.DecodeUnit(ctx, c, u, raw)
	}
	loc, err := cr.batchLoc(ctx, c)
	if err != nil {
		return nil, err
	}
	buf, err := cr.batch(ctx, c.BlobIndex, bi.BlobID, loc, cr.compressor(c.BlobIndex), func(ctx context.Context) ([]byte, error) {
		return cr.rr.ReadRange(ctx, bi.BlobID, int64(loc.off), int64(loc.csize))
	})
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), buf[loc.inOff:loc.inOff+c.UncompressedSize]...), nil
}

// batch returns the uncompressed buffer of a batch, keeping a few recent
// ones since neighbouring files share batches; fetch returns its stored
// bytes when it is not among them.
func (cr *ChunkReader) batch(ctx context.Context, idx uint32, id string, loc batchLoc, comp compress.Algorithm, fetch func(context.Context) ([]byte, error)) ([]byte, error) {
	k := [2]uint64{uint64(idx), loc.off}
	cr.mu.Lock()
	b, ok := cr.recent[k]
	cr.mu.Unlock()
	if ok {
		return b, nil
	}
	v, err, _ := cr.batches.Do(fmt.Sprintf("%d/%d", idx, loc.off), func() (any, error) {
		cr.mu.Lock()
		b, ok := cr.recent[k]
		cr.mu.Unlock()
		if ok {
			return b, nil
		}
		raw, err := fetch(ctx)
		if err != nil {
			return nil, err
		}
		b = raw
		if loc.csize != uint64(loc.usize) {
			if b, err = compress.Decompress(comp, nil, raw, int(loc.usize)); err != nil {
				return nil, fmt.Errorf("blob %s batch at offset %d: %w", id, loc.off, err)
			}
		}
		cr.mu.Lock()
		cr.recent[k] = b
		cr.order = append(cr.order, k)
		if len(cr.order) > 8 {
			delete(cr.recent, cr.order[0])
			cr.order = cr.order[1:]
		}
		cr.mu.Unlock()
		return b, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

// IsBlobID reports whether s is a 64-character lowercase hex string.
func IsBlobID(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}
