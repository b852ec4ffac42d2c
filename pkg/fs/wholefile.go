package fs

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/zeebo/blake3"
)

// building tracks whole-file builds in flight, so concurrent readers of
// one file start one build.
var building sync.Map

// Whole-file cache: once every chunk of a regular file is verified, the
// file's content can be assembled into one plain file, which the FUSE
// layer hands to the kernel (passthrough) so cached reads bypass the
// daemon. Files are named by a hash of their chunk digests, so identical
// files of different images share one copy.

// wholeKey names a file's whole-file cache entry.
func (f *FS) wholeKey(ino *Inode) string {
	h := blake3.New()
	fmt.Fprintf(h, "%d:", ino.Size)
	for _, a := range ino.addrs {
		c, _ := f.eng.Info(a.BlobIndex, a.CIIndex)
		h.Write(c.Digest[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// WholeFile returns an open whole-file cache of a regular file, building
// it from verified chunks when build is set and the file is not there
// yet. It returns nil when whole-file caching is off or the file is
// empty. With Options.Fetch.Validate (digest_validate) it is always off:
// every read must then be verified by the daemon, which passthrough would
// bypass.
func (f *FS) WholeFile(ctx context.Context, nid uint64, build bool) (*os.File, error) {
	if f.o.WholeFileDir == "" || f.o.Fetch.Validate {
		return nil, nil
	}
	ino, err := f.Inode(ctx, nid)
	if err != nil || !ino.IsRegular() || ino.Size == 0 {
		return nil, err
	}
	p := filepath.Join(f.o.WholeFileDir, f.wholeKey(ino))
	if !build {
		// A copy is shared by every image whose records name the same
		// chunks: hand it out only if this image's records agree with
		// their blobs. Without a fetch: the caller may hold locks, and a
		// read through the daemon makes the full check.
		for _, a := range ino.addrs {
			c, _ := f.eng.Info(a.BlobIndex, a.CIIndex)
			if err := f.eng.CheckRecordLocal(ctx, c); err != nil {
				return nil, nil
			}
		}
	}
	if fd, err := os.Open(p); err == nil {
		return fd, nil
	}
	if !build {
		return nil, nil
	}
	if f.o.WholeFileReserve != nil && !f.o.WholeFileReserve(int64(ino.Size)) {
		return nil, nil
	}
	if err := os.MkdirAll(f.o.WholeFileDir, 0o700); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(f.o.WholeFileDir, ".build-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	cs := int64(f.rd.ChunkSize())
	// Every chunk is verified as it is assembled, cached or not: the copy
	// is served by passthrough without the daemon ever seeing it again.
	ctx = fetch.VerifyCached(fetch.WithKind(ctx, fetch.WholeFile))
	for k := range ino.addrs {
		data, err := f.chunk(ctx, ino, k)
		if err != nil {
			tmp.Close()
			return nil, err
		}
		if _, err := tmp.WriteAt(data, int64(k)*cs); err != nil {
			tmp.Close()
			return nil, err
		}
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Chmod(tmp.Name(), 0o400); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return nil, err
	}
	f.Metrics.WholeFiles.Add(1)
	return os.Open(p)
}

// EnsureWholeFile builds a regular file's whole-file cache unless it
// exists or is being built. It is safe to call from many goroutines.
func (f *FS) EnsureWholeFile(ctx context.Context, nid uint64) error {
	if f.o.WholeFileDir == "" || f.o.Fetch.Validate {
		return nil
	}
	ino, err := f.Inode(ctx, nid)
	if err != nil || !ino.IsRegular() || ino.Size == 0 {
		return err
	}
	key := f.wholeKey(ino)
	if _, err := os.Stat(filepath.Join(f.o.WholeFileDir, key)); err == nil {
		return nil
	}
	if _, busy := building.LoadOrStore(key, true); busy {
		return nil
	}
	defer building.Delete(key)
	fd, err := f.WholeFile(ctx, nid, true)
	if fd != nil {
		fd.Close()
	}
	if err != nil {
		f.o.Fetch.Logger.Warn("whole-file cache", "file", ino.path, "err", err)
	}
	return err
}

// CleanWholeFileDir removes partial whole-file builds (left by a crash)
// older than olderThan from dir; younger ones may belong to another live
// daemon sharing the directory.
func CleanWholeFileDir(dir string, olderThan time.Duration) (removed int) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".build-") {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > olderThan {
			if os.Remove(filepath.Join(dir, e.Name())) == nil {
				removed++
			}
		}
	}
	return removed
}
