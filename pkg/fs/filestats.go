package fs

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// Fop numbers a filesystem operation in FileStats, in upstream nydusd's
// order (its StatsFop).
type Fop int

// Operations counted per file.
const (
	FopGetattr Fop = iota
	FopReadlink
	FopOpen
	FopRelease
	FopRead
	FopStatfs
	FopGetxattr
	FopListxattr
	FopOpendir
	FopLookup
	FopReaddir
	FopReaddirplus
	FopAccess
	FopForget
	FopBatchForget
	fopMax
)

// FileStats are one file's I/O counters, kept when Options.FileStats is
// set (nydusd's iostats_files) and exported like upstream's.
type FileStats struct {
	TotalFops atomic.Uint64
	DataRead  atomic.Uint64
	// BlockCountRead counts reads by size: <1K, 1K~, 4K~, 16K~, 64K~,
	// 128K~, 512K~, 1M~.
	BlockCountRead [8]atomic.Uint64
	FopHits        [fopMax]atomic.Uint64
	FopErrors      [fopMax]atomic.Uint64
	// FirstRead is when the file was first read (unix nanoseconds; 0:
	// never).
	FirstRead atomic.Int64
	// ReadSinceTaken is set by every read and cleared by TakeRecent.
	ReadSinceTaken atomic.Bool
}

// sizeClass is the BlockCountRead index of a read of n bytes.
func sizeClass(n int) int {
	lz := bits.LeadingZeros64(uint64(n) >> 10)
	shift := (max(lz, 53) - 53) << 2
	return int(uint64(0x0112_2334_5567)>>shift) & 0xf
}

// fileStats is the per-nid table.
type fileStats struct {
	mu sync.Mutex            // guards m (not the counters, which are atomics); a leaf
	m  map[uint64]*FileStats // by nid; guarded by mu
}

func (f *FS) stats(nid uint64) *FileStats {
	if f.fstats == nil {
		return nil
	}
	f.fstats.mu.Lock()
	defer f.fstats.mu.Unlock()
	s := f.fstats.m[nid]
	if s == nil {
		s = &FileStats{}
		f.fstats.m[nid] = s
	}
	return s
}

// CountFop records an operation on nid (a no-op unless Options.FileStats).
func (f *FS) CountFop(nid uint64, op Fop, failed bool) {
	if s := f.stats(nid); s != nil {
		s.TotalFops.Add(1)
		s.FopHits[op].Add(1)
		if failed {
			s.FopErrors[op].Add(1)
		}
	}
}

func (f *FS) countRead(nid uint64, n int, failed bool) {
	s := f.stats(nid)
	if s == nil {
		return
	}
	s.TotalFops.Add(1)
	s.FopHits[FopRead].Add(1)
	if failed {
		s.FopErrors[FopRead].Add(1)
		return
	}
	s.DataRead.Add(uint64(n))
	s.BlockCountRead[sizeClass(n)].Add(1)
	s.FirstRead.CompareAndSwap(0, time.Now().UnixNano())
	s.ReadSinceTaken.Store(true)
}

// FileStats returns the counters of every file touched so far, by nid;
// nil unless Options.FileStats.
func (f *FS) FileStats() map[uint64]*FileStats {
	if f.fstats == nil {
		return nil
	}
	f.fstats.mu.Lock()
	defer f.fstats.mu.Unlock()
	out := make(map[uint64]*FileStats, len(f.fstats.m))
	for k, v := range f.fstats.m {
		out[k] = v
	}
	return out
}

// Path returns a path of nid inside the image ("" if it has none): see
// Paths.
func (f *FS) Path(nid uint64) string {
	return f.Paths([]uint64{nid})[nid]
}
