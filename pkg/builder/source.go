package builder

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// FileSource reads chunks from local blob files: either one file for
// every blob (File) or <Dir>/<blob_id>.
type FileSource struct {
	// File, when set, serves every blob.
	File string
	// Dir holds blobs named by their id.
	Dir string
	// Compressor of the image (chunks flagged compressed use it).
	Compressor compress.Algorithm

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
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", blobID, err)
	}
	if s.files == nil {
		s.files = map[string]*os.File{}
	}
	s.files[blobID] = f
	return f, nil
}

// ReadChunk reads and decompresses one chunk.
func (s *FileSource) ReadChunk(ctx context.Context, blobID string, c rafs.ChunkInfo) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := s.open(blobID)
	if err != nil {
		return nil, err
	}
	if c.CompressedSize > rafs.MaxChunkSize*2 || c.UncompressedSize > rafs.MaxChunkSize {
		return nil, fmt.Errorf("blob %s chunk %d: size %d/%d out of range", blobID, c.Index, c.CompressedSize, c.UncompressedSize)
	}
	buf := make([]byte, c.CompressedSize)
	if _, err := f.ReadAt(buf, int64(c.CompressedOffset)); err != nil {
		return nil, fmt.Errorf("blob %s chunk %d: read %d bytes at offset %d: %w", blobID, c.Index, len(buf), c.CompressedOffset, err)
	}
	if !c.IsCompressed() {
		return buf, nil
	}
	out, err := compress.Decompress(s.Compressor, nil, buf, int(c.UncompressedSize))
	if err != nil {
		return nil, fmt.Errorf("blob %s chunk %d at offset %d: %w", blobID, c.Index, c.CompressedOffset, err)
	}
	return out, nil
}
