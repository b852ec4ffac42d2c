package fs

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nydus-go/nydus/internal/atomicfile"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

// commitCopy puts a built copy in place (atomicfile: fsync, rename,
// directory fsync); tests make it fail.
var commitCopy = (*atomicfile.File).Commit

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
	if !build && !f.recordsAgree(ctx, ino) {
		return nil, nil
	}
	if fd, err := os.Open(p); err == nil {
		if f.copyVerified(p, fd) {
			return fd, nil
		}
		fd.Close()
		// Unknown to this daemon, or changed since it was verified:
		// check it in the background; reads go through the daemon (and
		// its verified chunks) meanwhile. A build, in the background
		// already, checks it now.
		if !build {
			f.Go(func(ctx context.Context) { f.verifyCopy(ctx, p, ino) })
			return nil, nil
		}
		if f.verifyCopy(ctx, p, ino) {
			if fd, err := os.Open(p); err == nil {
				if f.copyVerified(p, fd) {
					return fd, nil
				}
				fd.Close()
			}
		}
		if _, err := os.Stat(p); err == nil {
			return nil, nil // still there: changed while it was checked
		}
	}
	if !build {
		return nil, nil
	}
	if f.o.WholeFileReserve != nil && !f.o.WholeFileReserve(int64(ino.Size)) {
		return nil, nil
	}
	kept := false
	defer func() {
		if !kept && f.o.WholeFileRelease != nil {
			f.o.WholeFileRelease(int64(ino.Size))
		}
	}()
	if err := os.MkdirAll(f.o.WholeFileDir, 0o700); err != nil {
		return nil, err
	}
	tmp, err := atomicfile.Create(p, 0o400)
	if err != nil {
		return nil, err
	}
	defer tmp.Abort()
	cs := int64(f.rd.ChunkSize())
	// Every chunk comes verified from the engine, cached or fetched.
	ctx = fetch.WithKind(ctx, fetch.WholeFile)
	for k := range ino.addrs {
		data, err := f.chunk(ctx, ino, k)
		if err != nil {
			return nil, err
		}
		if _, err := tmp.WriteAt(data, int64(k)*cs); err != nil {
			return nil, err
		}
	}
	if err := commitCopy(tmp); err != nil {
		return nil, err
	}
	kept = true
	// Read back and stamped, so that what is recorded is what is there.
	// An open that found the copy first may be checking it already: its
	// verdict counts.
	if !f.verifyCopy(ctx, p, ino) {
		waitCheck(ctx, p)
	}
	fd, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	if !f.copyVerified(p, fd) {
		fd.Close()
		return nil, fmt.Errorf("%w: %s: whole-file copy %s changed as it was written", ErrIO, ino.path, p)
	}
	// Counted once it can be handed out (an open sees it verified).
	f.Metrics.WholeFiles.Add(1)
	return fd, nil
}

// VerifiedWholeFile returns the whole-file copy of a file if there is
// one and it is right, reading it back first if this process has not
// verified it (WholeFile hands out only copies it has verified and checks
// the others in the background). nil when there is none, or it is wrong
// (then removed and reported, as by WholeFile's check).
func (f *FS) VerifiedWholeFile(ctx context.Context, nid uint64) (*os.File, error) {
	if f.o.WholeFileDir == "" || f.o.Fetch.Validate {
		return nil, nil
	}
	ino, err := f.Inode(ctx, nid)
	if err != nil || !ino.IsRegular() || ino.Size == 0 || !f.recordsAgree(ctx, ino) {
		return nil, err
	}
	p := filepath.Join(f.o.WholeFileDir, f.wholeKey(ino))
	fd, err := os.Open(p)
	if err != nil {
		return nil, nil
	}
	if f.copyVerified(p, fd) {
		return fd, nil
	}
	fd.Close()
	// A concurrent check makes this one give up (nil: the next open asks
	// again).
	if !f.verifyCopy(ctx, p, ino) {
		return nil, nil
	}
	if fd, err = os.Open(p); err != nil {
		return nil, nil
	}
	if !f.copyVerified(p, fd) {
		fd.Close()
		return nil, nil
	}
	return fd, nil
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

// Whole-file copies live as long as an image that uses them: a copy an
// image built or handed out is removed when the last image that used it,
// in any process sharing the work dir, is closed (unmounted: for the
// snapshotter, the image was removed), so copies go with their images'
// blobs. Users are counted with flock(2): every process that uses a copy
// holds a shared lock on it, taken on first use and dropped when its last
// image using it closes (or the process dies); the last one gets the
// exclusive lock and removes the copy. A process that still has the copy
// open for passthrough keeps reading it; its next open builds it again.

// copyUsers holds, per copy path, this process's shared lock on it and
// how many of its open filesystems used it.
var copyUsers = struct {
	sync.Mutex
	m map[string]*copyUse
}{m: map[string]*copyUse{}}

type copyUse struct {
	lock *os.File // holds LOCK_SH
	n    int
}

// usedCopy records that this image used the copy at p, of size bytes,
// and makes sure this process holds a shared lock on the file now at p
// (a copy removed and built again is another file).
func (f *FS) usedCopy(p string, size int64) {
	f.mu.Lock()
	if f.copies == nil {
		f.copies = map[string]int64{}
	}
	_, had := f.copies[p]
	f.copies[p] = size
	f.mu.Unlock()
	copyUsers.Lock()
	defer copyUsers.Unlock()
	u := copyUsers.m[p]
	if u == nil {
		u = &copyUse{}
		copyUsers.m[p] = u
	}
	if !had {
		u.n++
	}
	if u.lock != nil {
		if same, _ := sameFile(u.lock, p); same {
			return
		}
		u.lock.Close()
		u.lock = nil
	}
	if fd, err := os.Open(p); err == nil {
		if unix.Flock(int(fd.Fd()), unix.LOCK_SH) == nil {
			u.lock = fd
		} else {
			fd.Close()
		}
	}
}

// dropCopies ends this image's use of its copies and removes those no
// image of any process uses any more.
func (f *FS) dropCopies() {
	f.mu.Lock()
	copies := f.copies
	f.copies = nil
	f.mu.Unlock()
	for p, size := range copies {
		copyUsers.Lock()
		u := copyUsers.m[p]
		if u == nil {
			copyUsers.Unlock()
			continue
		}
		if u.n--; u.n > 0 {
			copyUsers.Unlock()
			continue
		}
		delete(copyUsers.m, p)
		verifiedCopies.Delete(p)
		if u.lock == nil {
			copyUsers.Unlock()
			continue
		}
		// Upgrading the lock succeeds only if no other process holds
		// one: then the copy is this process's alone to remove.
		last := unix.Flock(int(u.lock.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil
		if last {
			if same, _ := sameFile(u.lock, p); same && os.Remove(p) == nil && f.o.WholeFileRelease != nil {
				f.o.WholeFileRelease(size)
			}
		}
		u.lock.Close()
		copyUsers.Unlock()
	}
	f.sweepCopies()
}

// sweepCopies removes the copies no process uses (holds a lock on): those
// of images closed by a process that died (a failover's predecessor, a
// crash), and the directory if that leaves it empty.
func (f *FS) sweepCopies() {
	if f.o.WholeFileDir == "" {
		return
	}
	ents, err := os.ReadDir(f.o.WholeFileDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
			continue // partial builds: CleanWholeFileDir
		}
		p := filepath.Join(f.o.WholeFileDir, e.Name())
		copyUsers.Lock()
		_, ours := copyUsers.m[p]
		copyUsers.Unlock()
		if ours {
			continue
		}
		fd, err := os.Open(p)
		if err != nil {
			continue
		}
		if unix.Flock(int(fd.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			if fi, err := fd.Stat(); err == nil {
				if same, _ := sameFile(fd, p); same && os.Remove(p) == nil {
					verifiedCopies.Delete(p)
					if f.o.WholeFileRelease != nil {
						f.o.WholeFileRelease(fi.Size())
					}
				}
			}
		}
		fd.Close()
	}
	os.Remove(f.o.WholeFileDir) // if it is empty
}

// sameFile reports whether the open fd is the file at p (not one put in
// its place).
func sameFile(fd *os.File, p string) (bool, error) {
	a, err := fd.Stat()
	if err != nil {
		return false, err
	}
	b, err := os.Stat(p)
	if err != nil {
		return false, err
	}
	return os.SameFile(a, b), nil
}

// Whole-file copies at rest. A copy is served by passthrough, where the
// daemon never sees its reads, so it is checked when it is opened
// instead: its stamp (device, inode, size, mtime and ctime, which no
// write, truncation or replacement leaves unchanged: ctime cannot be set
// back) must be the one recorded when this daemon last read the whole
// copy back and found every chunk's digest. A copy this daemon has not
// verified (one left by an earlier daemon) or whose stamp differs is not
// handed out; it is read back in the background, and recorded again if
// its content is right, or removed (an event and
// nydusd_at_rest_failures_total) if not.

// copyStamp identifies a copy's content as the kernel reports it.
type copyStamp struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64
}

// verifiedCopies maps a copy's path to the stamp it had when it was
// last verified, for every filesystem of the process (copies are shared
// by the images whose files have the same chunks).
var verifiedCopies sync.Map

// checkingCopies maps the path of each copy being verified to a channel
// closed when that check ends.
var checkingCopies sync.Map

// waitCheck waits for a check of the copy at p in flight, if any, to
// end (or ctx).
func waitCheck(ctx context.Context, p string) {
	if ch, ok := checkingCopies.Load(p); ok {
		select {
		case <-ch.(chan struct{}):
		case <-ctx.Done():
		}
	}
}

func stampOf(fd *os.File) (copyStamp, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(fd.Fd()), &st); err != nil {
		return copyStamp{}, err
	}
	return copyStamp{dev: uint64(st.Dev), ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}, nil
}

// copyVerified reports whether the open copy fd at p is the content this
// daemon verified.
func (f *FS) copyVerified(p string, fd *os.File) bool {
	st, err := stampOf(fd)
	if err != nil {
		return false
	}
	rec, ok := verifiedCopies.Load(p)
	if ok && rec.(copyStamp) == st {
		f.usedCopy(p, st.size)
		return true
	}
	return false
}

// verifyCopy reads the whole-file copy at p back and compares each chunk
// with its digest in ino's records. A right copy is recorded (its stamp,
// taken before and unchanged after the read); a wrong one is removed,
// counted and reported. It reports whether the copy is recorded.
func (f *FS) verifyCopy(ctx context.Context, p string, ino *Inode) bool {
	done := make(chan struct{})
	if _, busy := checkingCopies.LoadOrStore(p, done); busy {
		return false
	}
	defer func() { checkingCopies.Delete(p); close(done) }()
	fd, err := os.Open(p)
	if err != nil {
		return false
	}
	defer fd.Close()
	before, err := stampOf(fd)
	if err != nil {
		return false
	}
	bad, err := f.copyContentError(ctx, fd, ino)
	if err != nil {
		return false // cancelled, or an I/O error: not verified, not judged
	}
	after, err := stampOf(fd)
	if err != nil || after != before {
		return false // changed while it was read: the next open checks again
	}
	if bad == nil {
		verifiedCopies.Store(p, before)
		f.usedCopy(p, before.size)
		return true
	}
	verifiedCopies.Delete(p)
	f.Metrics.AtRestFailures.Add(1)
	f.o.Fetch.Logger.Error("whole-file copy changed on disk; removed", "file", ino.path, "copy", p, "err", bad)
	f.o.Fetch.Events(fetch.Event{Kind: "wholefile-changed", Path: ino.path, Err: bad.Error()})
	// Only the copy that was checked: a rebuilt one has another inode.
	if fi, err := os.Stat(p); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && uint64(st.Dev) == before.dev && st.Ino == before.ino {
			if os.Remove(p) == nil && f.o.WholeFileRelease != nil {
				f.o.WholeFileRelease(before.size)
			}
		}
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
		if !strings.HasPrefix(e.Name(), ".") { // atomicfile's temporary files
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
