package fs

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/zeebo/blake3"
)

// Whole-file copies: once every chunk of a regular file is verified, the
// file's content can be assembled into one plain file, which the FUSE
// layer hands to the kernel (passthrough) so cached reads bypass the
// daemon. Files are named by a hash of their chunk digests, so identical
// files of different images share one copy. The copies live in a
// CopyStore (nydusd: the blob cache), which owns them; the filesystem
// says what goes in them and checks them against its chunk digests.
//
// A copy is served by passthrough, where the daemon never sees its
// reads, so it is checked when it is opened instead: the store hands it
// out only while its stamp is the one recorded when it was last read
// back and every chunk matched its digest. A copy this process has not
// verified (one left by an earlier daemon) or whose stamp differs is not
// handed out; it is read back in the background, and recorded again if
// its content is right, or removed (an event and
// nydusd_at_rest_failures_total) if not.

// CopyStore keeps whole-file copies: what the filesystem needs of
// blobcache.Files. Keys are lowercase hex; owners name images.
type CopyStore interface {
	// Write makes the copy key of size bytes (fill writes it) from the
	// chunks of blobs, atomically. When the copy does not fit or is being
	// written, its error has a method Skipped() returning true: not a
	// failure to report.
	Write(ctx context.Context, key string, size int64, blobs []string, fill func(io.WriterAt) error) error
	// Open opens the copy key.
	Open(key string) (*os.File, error)
	// Exists reports whether there is a copy key.
	Exists(key string) bool
	// Verified reports whether fd, the open copy key, is what a Check
	// last found right.
	Verified(key string, fd *os.File) bool
	// Check has judge read the copy key back; a right copy is recorded
	// as verified, a wrong one (bad) removed. A check in flight makes it
	// return (false, nil).
	Check(ctx context.Context, key string, judge func(ctx context.Context, fd *os.File) (bad, err error)) (ok bool, bad error)
	// WaitCheck waits for a check of key in flight to end.
	WaitCheck(ctx context.Context, key string)
	// Use records that owner uses the copy key; Release ends every use
	// of owner, removing the copies nobody uses any more.
	Use(owner, key string)
	Release(owner string)
}

// owners numbers the filesystems of the process, to name them in the
// InodeCache and to the CopyStore, either of which filesystems opened by
// different callers may share: process-wide on purpose (see doc.go).
var owners atomic.Uint64

// wholeKey names a file's whole-file copy.
func (f *FS) wholeKey(ino *Inode) string {
	h := blake3.New()
	fmt.Fprintf(h, "%d:", ino.Size)
	for _, a := range ino.addrs {
		c, _ := f.eng.Info(a.BlobIndex, a.CIIndex)
		h.Write(c.Digest[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// copiesOn reports whether whole-file copies are made and handed out:
// with a CopyStore, and never with Options.Fetch.Validate
// (digest_validate), whose every read must be verified by the daemon,
// which passthrough would bypass.
func (f *FS) copiesOn() bool { return f.o.Copies != nil && !f.o.Fetch.Validate }

// handOut returns the open copy key if it is verified (recording this
// image's use of it), else nil.
func (f *FS) handOut(key string) *os.File {
	fd, err := f.o.Copies.Open(key)
	if err != nil {
		return nil
	}
	if !f.o.Copies.Verified(key, fd) {
		fd.Close()
		return nil
	}
	f.o.Copies.Use(f.owner, key)
	return fd
}

// WholeFile returns an open whole-file copy of a regular file, building
// it from verified chunks when build is set and the file has none yet.
// It returns nil when copies are off (copiesOn) or the file is empty,
// and when the copy is there but not verified by this process (then
// checked in the background, or, with build, now).
func (f *FS) WholeFile(ctx context.Context, nid uint64, build bool) (*os.File, error) {
	if !f.copiesOn() {
		return nil, nil
	}
	ino, err := f.Inode(ctx, nid)
	if err != nil || !ino.IsRegular() || ino.Size == 0 {
		return nil, err
	}
	key := f.wholeKey(ino)
	if !build && !f.recordsAgree(ctx, ino) {
		return nil, nil
	}
	if fd := f.handOut(key); fd != nil {
		return fd, nil
	}
	if f.o.Copies.Exists(key) {
		// Unknown to this daemon, or changed since it was verified:
		// check it in the background; reads go through the daemon (and
		// its verified chunks) meanwhile. A build, in the background
		// already, checks it now.
		if !build {
			f.Go(func(ctx context.Context) { f.verifyCopy(ctx, key, ino) })
			return nil, nil
		}
		if f.verifyCopy(ctx, key, ino) {
			return f.handOut(key), nil
		}
		if f.o.Copies.Exists(key) {
			return nil, nil // still there: changed while it was checked
		}
	}
	if !build {
		return nil, nil
	}
	cs := int64(f.rd.ChunkSize())
	// Every chunk comes verified from the engine, cached or fetched.
	ctx = fetch.WithKind(ctx, fetch.WholeFile)
	err = f.o.Copies.Write(ctx, key, int64(ino.Size), f.blobsOf(ino), func(w io.WriterAt) error {
		for k := range ino.addrs {
			data, err := f.chunk(ctx, ino, k)
			if err != nil {
				return err
			}
			if _, err := w.WriteAt(data, int64(k)*cs); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: whole-file copy: %w", ino.path, err)
	}
	// Read back and stamped, so that what is recorded is what is there.
	// An open that found the copy first may be checking it already: its
	// verdict counts.
	if !f.verifyCopy(ctx, key, ino) {
		f.o.Copies.WaitCheck(ctx, key)
	}
	fd := f.handOut(key)
	if fd == nil {
		return nil, fmt.Errorf("%w: %s: whole-file copy %s changed as it was written", ErrIO, ino.path, key)
	}
	// Counted once it can be handed out (an open sees it verified).
	f.Metrics.WholeFiles.Add(1)
	return fd, nil
}

// blobsOf lists the ids of the blobs holding ino's chunks.
func (f *FS) blobsOf(ino *Inode) []string {
	var ids []string
	seen := map[uint32]bool{}
	for _, a := range ino.addrs {
		if !seen[a.BlobIndex] && int(a.BlobIndex) < len(f.rd.Blobs) {
			seen[a.BlobIndex] = true
			ids = append(ids, f.rd.Blobs[a.BlobIndex].BlobID)
		}
	}
	return ids
}

// VerifiedWholeFile returns the whole-file copy of a file if there is
// one and it is right, reading it back first if this process has not
// verified it (WholeFile hands out only copies it has verified and checks
// the others in the background). nil when there is none, or it is wrong
// (then removed and reported, as by WholeFile's check).
func (f *FS) VerifiedWholeFile(ctx context.Context, nid uint64) (*os.File, error) {
	if !f.copiesOn() {
		return nil, nil
	}
	ino, err := f.Inode(ctx, nid)
	if err != nil || !ino.IsRegular() || ino.Size == 0 || !f.recordsAgree(ctx, ino) {
		return nil, err
	}
	key := f.wholeKey(ino)
	if fd := f.handOut(key); fd != nil {
		return fd, nil
	}
	// A concurrent check makes this one give up (nil: the next open asks
	// again).
	if !f.o.Copies.Exists(key) || !f.verifyCopy(ctx, key, ino) {
		return nil, nil
	}
	return f.handOut(key), nil
}

// recordsAgree reports whether ino's chunk records agree with their blobs'
// chunk-info tables. A copy is shared by every image whose records name
// the same chunks: it is handed out only if this image's records agree.
// Without a fetch: the caller may hold locks, and a read through the
// daemon makes the full check.
func (f *FS) recordsAgree(ctx context.Context, ino *Inode) bool {
	for _, a := range ino.addrs {
		c, _ := f.eng.Info(a.BlobIndex, a.CIIndex)
		if err := f.eng.CheckRecordLocal(ctx, c); err != nil {
			return false
		}
	}
	return true
}

// verifyCopy has the store read the copy key back and compare each
// chunk with its digest in ino's records. A right copy is recorded; a
// wrong one is removed, counted and reported. It reports whether the
// copy is recorded.
func (f *FS) verifyCopy(ctx context.Context, key string, ino *Inode) bool {
	ok, bad := f.o.Copies.Check(ctx, key, func(ctx context.Context, fd *os.File) (error, error) {
		return f.copyContentError(ctx, fd, ino)
	})
	if ok {
		f.o.Copies.Use(f.owner, key)
		return true
	}
	if bad != nil {
		f.Metrics.AtRestFailures.Add(1)
		f.o.Fetch.Logger.Error("whole-file copy changed on disk; removed", "file", ino.path, "copy", key, "err", bad)
		f.o.Fetch.Events(fetch.Event{Kind: "wholefile-changed", Path: ino.path, Err: bad.Error()})
	}
	return false
}

// copyContentError compares an open copy with ino's chunk digests: bad
// says how it differs; err is a failure to read it (or ctx's end),
// which judges nothing.
func (f *FS) copyContentError(ctx context.Context, fd *os.File, ino *Inode) (bad, err error) {
	fi, err := fd.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() != int64(ino.Size) {
		return fmt.Errorf("%d bytes, the file has %d", fi.Size(), ino.Size), nil
	}
	cs := int64(f.rd.ChunkSize())
	buf := make([]byte, cs)
	dig := f.rd.Ext.Flags.Digester()
	for k, a := range ino.addrs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c, ok := f.eng.Info(a.BlobIndex, a.CIIndex)
		if !ok {
			return nil, fmt.Errorf("chunk %d is not in the chunk table", k)
		}
		b := buf[:c.UncompressedSize]
		if _, err := fd.ReadAt(b, int64(k)*cs); err != nil {
			return nil, fmt.Errorf("chunk %d: %w", k, err)
		}
		if digester.Sum(dig, b) != c.Digest {
			return fmt.Errorf("chunk %d at offset %d does not match its digest", k, int64(k)*cs), nil
		}
	}
	return nil, nil
}

// EnsureWholeFile builds a regular file's whole-file copy unless it
// exists or is being built. It is safe to call from many goroutines.
func (f *FS) EnsureWholeFile(ctx context.Context, nid uint64) error {
	if !f.copiesOn() {
		return nil
	}
	ino, err := f.Inode(ctx, nid)
	if err != nil || !ino.IsRegular() || ino.Size == 0 {
		return err
	}
	if f.o.Copies.Exists(f.wholeKey(ino)) {
		return nil
	}
	fd, err := f.WholeFile(ctx, nid, true)
	if fd != nil {
		fd.Close()
	}
	var skip interface{ Skipped() bool }
	if err != nil && !(errors.As(err, &skip) && skip.Skipped()) {
		f.o.Fetch.Logger.Warn("whole-file copy", "file", ino.path, "err", err)
	}
	return err
}
