package blobcache

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nydus-go/nydus/internal/atomicfile"
	"golang.org/x/sys/unix"
)

// FilesDir is the subdirectory of a cache directory that holds its
// whole-file copies.
const FilesDir = "nydus-go-files"

// staleBuildAge is how old a partial copy (a temporary file) must be
// before Open removes it; younger ones may be the build of another
// daemon sharing the directory.
const staleBuildAge = 10 * time.Minute

// ErrNoRoom is returned by [Files.Write] when a copy does not fit under
// the cache's cap: copies may take at most half of [Options.MaxBytes],
// and never the directory's total over it.
var ErrNoRoom error = skipError("no room for the whole-file copy under the cache cap")

// ErrBusy is returned by [Files.Write] while another write of the same
// copy is in flight in this process.
var ErrBusy error = skipError("whole-file copy being written")

// skipError is an error that says a copy was not written, without
// anything having failed: its Skipped method returns true.
type skipError string

func (e skipError) Error() string { return string(e) }

// Skipped reports that the copy was skipped, not failed.
func (e skipError) Skipped() bool { return true }

// blobsXattr holds, on each copy, the ids of the blobs whose chunks it
// holds (space-separated), so that a copy goes with its blobs after a
// restart too. A file system without user xattrs keeps that in memory
// only.
const blobsXattr = "user.nydus-go.blobs"

// commitFile puts a written copy in place (fsync, rename, directory
// fsync); tests make it fail.
var commitFile = (*atomicfile.File).Commit

// Files is a cache's store of whole-file copies: plain files, each the
// whole content of a regular file of an image, that nydusd hands to the
// kernel for FUSE passthrough. It is the one owner of the copies: it
// writes them (atomically), accounts and caps them with the cache's
// blobs, records which copies were verified, removes a copy found
// changed, and ends their lifetime.
//
// A copy is named by a key (lowercase hex, a hash of the file's chunk
// digests, chosen by the caller), so images with the same file share
// it. It lives as long as an image that uses it ([Files.Use]): every
// process sharing the directory holds a shared flock(2) on the copies its
// images use, and the process that releases the last use of a copy
// ([Files.Release]) and finds no other process's lock removes it. Copies
// no process holds a lock on (left by a daemon that died) are removed at
// the next Release. When the cache removes a blob (eviction, or
// [Cache.Remove]), the copies made of its chunks that no process uses go
// with it.
//
// A copy is trusted only while its stamp (device, inode, size, mtime and
// ctime: no write, truncation or replacement leaves them all unchanged,
// and ctime cannot be set back) is the one recorded when it was last read
// back and found right ([Files.Check]).
//
// Lock order: Cache.mu, then Files.mu. Files never takes Cache.mu while
// holding Files.mu.
type Files struct {
	c   *Cache
	dir string
	// bytes is the size of the copies in dir, including those being
	// written (reserved).
	bytes atomic.Int64

	mu       sync.Mutex
	held     map[string]*heldCopy       // by key: this process's lock and users; guarded by mu
	owners   map[string]map[string]bool // by owner: the keys it uses; guarded by mu
	blobs    map[string][]string        // by key: the blobs whose chunks it holds; guarded by mu
	verified map[string]Stamp           // by key: the stamp it had when last found right; guarded by mu
	checking map[string]chan struct{}   // by key: closed when its check ends; guarded by mu
	writing  map[string]chan struct{}   // by key: closed when its write ends; guarded by mu
}

// heldCopy is this process's shared lock on a copy and how many owners
// use it.
type heldCopy struct {
	lock *os.File // holds LOCK_SH; nil if the copy could not be opened
	n    int
}

// Stamp identifies a copy's content as the kernel reports it.
type Stamp struct {
	Dev, Ino     uint64
	Size         int64
	Mtime, Ctime int64
}

// StampOf returns the stamp of an open file.
func StampOf(fd *os.File) (Stamp, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(fd.Fd()), &st); err != nil {
		return Stamp{}, fmt.Errorf("stat %s: %w", fd.Name(), err)
	}
	return Stamp{Dev: uint64(st.Dev), Ino: st.Ino, Size: st.Size, Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}, nil
}

// openFiles sets up the store of c's directory: partial copies left by a
// crash are removed, and the copies there are accounted.
func openFiles(c *Cache) *Files {
	s := &Files{c: c, dir: filepath.Join(c.o.Dir, FilesDir), held: map[string]*heldCopy{}, owners: map[string]map[string]bool{},
		blobs: map[string][]string{}, verified: map[string]Stamp{}, checking: map[string]chan struct{}{}, writing: map[string]chan struct{}{}}
	ents, _ := os.ReadDir(s.dir)
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if strings.HasPrefix(e.Name(), ".") { // atomicfile's temporary files
			if time.Since(fi.ModTime()) > staleBuildAge && os.Remove(filepath.Join(s.dir, e.Name())) == nil {
				c.log.Info("removed a partial whole-file copy", "file", e.Name())
			}
			continue
		}
		s.bytes.Add(fi.Size())
		if validKey(e.Name()) {
			buf := make([]byte, 4096)
			if n, err := unix.Getxattr(filepath.Join(s.dir, e.Name()), blobsXattr, buf); err == nil {
				s.blobs[e.Name()] = strings.Fields(string(buf[:n]))
			}
		}
	}
	return s
}

// Files returns the cache's store of whole-file copies.
func (c *Cache) Files() *Files { return c.files }

// Usage returns the bytes the copies take, those being written included.
func (s *Files) Usage() int64 { return s.bytes.Load() }

// validKey reports whether key can name a copy: 1 to 128 lowercase hex
// characters (so it never leaves the directory).
func validKey(key string) bool {
	if key == "" || len(key) > 128 {
		return false
	}
	for _, r := range key {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

// Path returns where the copy key lives.
func (s *Files) Path(key string) string { return filepath.Join(s.dir, key) }

// reserve takes size bytes for a copy, if it fits under the cap.
func (s *Files) reserve(size int64) bool {
	max := s.c.o.MaxBytes
	if max <= 0 {
		s.bytes.Add(size)
		return true
	}
	blobs := s.c.blobUsage()
	for {
		w := s.bytes.Load()
		if w+size > max/2 || blobs+w+size > max {
			return false
		}
		if s.bytes.CompareAndSwap(w, w+size) {
			return true
		}
	}
}

// Write makes the copy key, of size bytes, of the chunks of blobs: fill
// writes its content, and the file is fsynced and renamed into place
// (read-only), replacing any copy there. Nothing is left of a write that
// fails, and its bytes are given back. Errors: [ErrNoRoom], [ErrBusy],
// fill's, or the file system's. The new copy is not yet verified
// ([Files.Check]).
func (s *Files) Write(ctx context.Context, key string, size int64, blobs []string, fill func(io.WriterAt) error) (err error) {
	if !validKey(key) {
		return fmt.Errorf("whole-file copy %q: invalid key", key)
	}
	end, ok := s.claim(s.writing, key)
	if !ok {
		return ErrBusy
	}
	defer end()
	if err := ctx.Err(); err != nil {
		return err
	}
	if !s.reserve(size) {
		return ErrNoRoom
	}
	kept := false
	defer func() {
		if !kept {
			s.bytes.Add(-size)
		}
	}()
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("whole-file copies: %w", err)
	}
	p := s.Path(key)
	tmp, err := atomicfile.Create(p, 0o400)
	if err != nil {
		return err
	}
	defer tmp.Abort()
	if err := fill(tmp); err != nil {
		return err
	}
	blobs = slices.DeleteFunc(slices.Clone(blobs), func(id string) bool { return !ValidBlobID(id) })
	if len(blobs) > 0 {
		// Best effort: without it, the copy goes with its image only.
		unix.Fsetxattr(int(tmp.Fd()), blobsXattr, []byte(strings.Join(blobs, " ")), 0)
	}
	old, _ := os.Stat(p)
	if err := commitFile(tmp); err != nil {
		return err
	}
	kept = true
	if old != nil {
		s.bytes.Add(-old.Size()) // replaced
	}
	s.mu.Lock()
	s.blobs[key] = blobs
	delete(s.verified, key)
	s.mu.Unlock()
	return nil
}

// Open opens the copy key, if there is one (an fs.ErrNotExist error if
// not). It may not be verified: see [Files.Verified].
func (s *Files) Open(key string) (*os.File, error) {
	if !validKey(key) {
		return nil, fmt.Errorf("whole-file copy %q: invalid key: %w", key, os.ErrNotExist)
	}
	return os.Open(s.Path(key))
}

// Exists reports whether there is a copy key.
func (s *Files) Exists(key string) bool {
	if !validKey(key) {
		return false
	}
	_, err := os.Stat(s.Path(key))
	return err == nil
}

// Verified reports whether the open copy fd of key is what was last
// found right by a check in this process.
func (s *Files) Verified(key string, fd *os.File) bool {
	st, err := StampOf(fd)
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.verified[key]
	return ok && rec == st
}

// Forget drops what this process verified of key (as a restart does).
func (s *Files) Forget(key string) {
	s.mu.Lock()
	delete(s.verified, key)
	s.mu.Unlock()
}

// Check reads the copy key back with judge, which reports how it differs
// from what it must hold (bad) or that it could not tell (err: an I/O
// error, ctx's end). A right copy is recorded as verified, with the
// stamp it had before judge read it and still has after; a wrong one is
// removed (only the file judged: not one put in its place since). It
// reports whether the copy is now verified, and bad. A check of key
// already in flight makes it return (false, nil) at once
// ([Files.WaitCheck] waits for it).
func (s *Files) Check(ctx context.Context, key string, judge func(ctx context.Context, fd *os.File) (bad, err error)) (bool, error) {
	end, ok := s.claim(s.checking, key)
	if !ok {
		return false, nil
	}
	defer end()
	fd, err := s.Open(key)
	if err != nil {
		return false, nil
	}
	defer fd.Close()
	before, err := StampOf(fd)
	if err != nil {
		return false, nil
	}
	bad, err := judge(ctx, fd)
	if err != nil {
		return false, nil // not verified, not judged
	}
	after, err := StampOf(fd)
	if err != nil || after != before {
		return false, nil // changed while it was read: the next open checks again
	}
	s.mu.Lock()
	if bad == nil {
		s.verified[key] = before
		s.mu.Unlock()
		return true, nil
	}
	delete(s.verified, key)
	s.mu.Unlock()
	if same, _ := sameFile(fd, s.Path(key)); same && os.Remove(s.Path(key)) == nil {
		s.bytes.Add(-before.Size)
	}
	return false, bad
}

// claim marks key in flight in set (s.writing or s.checking), unless it
// is already: end ends it, closing its channel.
func (s *Files) claim(set map[string]chan struct{}, key string) (end func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, busy := set[key]; busy {
		return nil, false
	}
	done := make(chan struct{})
	set[key] = done
	return func() {
		s.mu.Lock()
		delete(set, key)
		s.mu.Unlock()
		close(done)
	}, true
}

// WaitCheck waits for a check of key in flight, if any, to end (or ctx).
func (s *Files) WaitCheck(ctx context.Context, key string) {
	s.mu.Lock()
	ch := s.checking[key]
	s.mu.Unlock()
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
		}
	}
}

// Use records that owner (an image: any string unique in the process)
// uses the copy key, and makes sure this process holds a shared lock on
// the file now there (a copy removed and written again is another file).
func (s *Files) Use(owner, key string) {
	if !validKey(key) {
		return
	}
	p := s.Path(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := s.owners[owner]
	if keys == nil {
		keys = map[string]bool{}
		s.owners[owner] = keys
	}
	h := s.held[key]
	if h == nil {
		h = &heldCopy{}
		s.held[key] = h
	}
	if !keys[key] {
		keys[key] = true
		h.n++
	}
	if h.lock != nil {
		if same, _ := sameFile(h.lock, p); same {
			return
		}
		h.lock.Close()
		h.lock = nil
	}
	if fd, err := os.Open(p); err == nil {
		if unix.Flock(int(fd.Fd()), unix.LOCK_SH) == nil {
			h.lock = fd
		} else {
			fd.Close()
		}
	}
}

// Release ends owner's use of its copies, removes those no owner of any
// process uses any more, and then the copies no process uses at all
// (left by a daemon that died), and the directory if that empties it. A
// process that still has a removed copy open keeps reading it.
func (s *Files) Release(owner string) {
	s.mu.Lock()
	keys := s.owners[owner]
	delete(s.owners, owner)
	for key := range keys {
		h := s.held[key]
		if h == nil {
			continue
		}
		if h.n--; h.n > 0 {
			continue
		}
		delete(s.held, key)
		delete(s.verified, key)
		delete(s.blobs, key)
		if h.lock == nil {
			continue
		}
		// Upgrading the lock succeeds only if no other process holds
		// one: then the copy is this process's alone to remove.
		if unix.Flock(int(h.lock.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			s.removeIfSame(h.lock, key)
		}
		h.lock.Close()
	}
	s.mu.Unlock()
	s.sweep(nil)
}

// close drops this process's locks on copies, as its exit would: the
// copies stay, for a successor to use or sweep.
func (s *Files) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, h := range s.held {
		if h.lock != nil {
			h.lock.Close()
		}
		delete(s.held, key)
	}
	clear(s.owners)
}

// removeIfSame removes the copy key if fd is still the file there, and
// gives its bytes back.
func (s *Files) removeIfSame(fd *os.File, key string) bool {
	fi, err := fd.Stat()
	if err != nil {
		return false
	}
	if same, _ := sameFile(fd, s.Path(key)); same && os.Remove(s.Path(key)) == nil {
		s.bytes.Add(-fi.Size())
		return true
	}
	return false
}

// sweep removes the copies that no process holds a lock on (with only,
// just those), and the directory if that empties it. It returns how many
// it removed.
func (s *Files) sweep(only map[string]bool) int {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range ents {
		key := e.Name()
		if !validKey(key) || !e.Type().IsRegular() || (only != nil && !only[key]) {
			continue // partial builds: Open removes the stale ones
		}
		s.mu.Lock()
		_, ours := s.held[key]
		_, writing := s.writing[key]
		s.mu.Unlock()
		if ours || writing {
			continue
		}
		fd, err := os.Open(s.Path(key))
		if err != nil {
			continue
		}
		if unix.Flock(int(fd.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil && s.removeIfSame(fd, key) {
			n++
			s.mu.Lock()
			delete(s.verified, key)
			delete(s.blobs, key)
			s.mu.Unlock()
		}
		fd.Close()
	}
	os.Remove(s.dir) // if it is empty
	return n
}

// blobRemoved removes the copies made of the chunks of blob id that no
// process uses. Cache.mu is held.
func (s *Files) blobRemoved(id string) {
	only := map[string]bool{}
	s.mu.Lock()
	for key, blobs := range s.blobs {
		for _, b := range blobs {
			if b == id {
				only[key] = true
			}
		}
	}
	s.mu.Unlock()
	if len(only) > 0 {
		if n := s.sweep(only); n > 0 {
			s.c.log.Info("removed whole-file copies with their blob", "blob", id, "copies", n)
		}
	}
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
