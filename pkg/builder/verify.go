package builder

import (
	"context"
	"fmt"
	"github.com/nydus-go/nydus/pkg/storage"

	"github.com/nydus-go/nydus/pkg/rafs"
)

// Summary describes a bootstrap's contents.
type Summary struct {
	Inodes       int     `json:"inodes_count"`
	Files        int     `json:"files"`
	Dirs         int     `json:"directories"`
	Symlinks     int     `json:"symlinks"`
	Others       int     `json:"others"`
	Hardlinks    int     `json:"hardlinks"`
	Chunks       int     `json:"chunks"`
	UniqueChunks int     `json:"unique_chunks"`
	Blobs        int     `json:"blobs"`
	Bytes        uint64  `json:"bytes"`
	UniqueBytes  uint64  `json:"unique_bytes"`
	DedupRatio   float64 `json:"dedup_ratio"`
}

// ChunkError locates a chunk that failed verification.
type ChunkError struct {
	Path   string
	Chunk  int
	BlobID string
	Err    error
}

func (e *ChunkError) Error() string {
	return fmt.Sprintf("%s: chunk %d (blob %s): %v", e.Path, e.Chunk, e.BlobID, e.Err)
}

func (e *ChunkError) Unwrap() error { return e.Err }

// Check walks the whole bootstrap, validating every inode, directory and
// chunk index. With src set it also compares every chunk record with its
// blob's own chunk-info table and reads every chunk once to verify its
// digest, returning a *ChunkError for the first bad chunk.
func Check(ctx context.Context, rd *rafs.Reader, src storage.RangeReader) (*Summary, error) {
	tree, err := rd.Load(ctx, rafs.LoadOptions{})
	if err != nil {
		return nil, err
	}
	var cr *storage.ChunkReader
	if src != nil {
		if cr, err = storage.NewChunkReader(ctx, rd, src); err != nil {
			return nil, err
		}
	}
	s := &Summary{Blobs: len(rd.Blobs)}
	seen := map[*rafs.Inode]bool{}
	type ck struct{ blob, idx uint32 }
	chunks := map[ck]bool{}
	dig := rd.Ext.Flags.Digester()
	err = tree.Walk(func(p string, n *rafs.Node) error {
		ino := n.Inode
		if seen[ino] {
			s.Hardlinks++
			return nil
		}
		seen[ino] = true
		s.Inodes++
		switch {
		case ino.IsDir():
			s.Dirs++
		case ino.IsRegular():
			s.Files++
			s.Bytes += ino.Size
		case ino.IsSymlink():
			s.Symlinks++
		default:
			s.Others++
		}
		for i, c := range ino.Chunks {
			s.Chunks++
			k := ck{c.BlobIndex, c.Index}
			if chunks[k] {
				continue
			}
			chunks[k] = true
			s.UniqueChunks++
			s.UniqueBytes += uint64(c.UncompressedSize)
			if cr != nil {
				if err := cr.CheckRecord(ctx, c); err != nil {
					return &ChunkError{Path: p, Chunk: i, BlobID: rd.Blobs[c.BlobIndex].BlobID, Err: err}
				}
				if _, err := readVerified(ctx, rd, cr, dig, c, false); err != nil {
					return &ChunkError{Path: p, Chunk: i, BlobID: rd.Blobs[c.BlobIndex].BlobID, Err: err}
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if s.UniqueBytes > 0 {
		s.DedupRatio = float64(s.Bytes) / float64(s.UniqueBytes)
	}
	return s, nil
}
