// Package fusefs serves Nydus images (package fs) through the kernel's
// FUSE with go-fuse's raw protocol API.
//
// The filesystem keeps no per-inode state: a FUSE node id is derived from
// the image's slot and the inode's nid (slot<<40 | nid), so any node id
// the kernel holds can be resolved again by a new daemon process that
// takes the FUSE connection over (failover, hot upgrade). It also keeps
// the daemon small: there is no in-memory inode tree.
//
// Immutable entries and attributes are cached by the kernel for long,
// directory listings and file data are kept in the page cache, and files
// whose data is fully cached are handed to the kernel through FUSE
// passthrough.
//
// Entry points: [MountImage] serves one image at a directory; for a
// daemon, [NewDedicated] (one image) or [NewShared] (images added and
// removed with [FileSystem.Add] and [FileSystem.Remove]) makes the
// filesystem that [Mount] serves, and [Resume] takes a FUSE connection
// over from a predecessor. fs errors become errnos here, in one place
// (errdefs.ErrNotFound is ENOENT; anything unknown is EIO).
package fusefs

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/nydus-go/nydus/pkg/errdefs"
	nfs "github.com/nydus-go/nydus/pkg/fs"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// Options configure a filesystem.
type Options struct {
	// Timeout is how long the kernel caches entries and attributes (the
	// image is immutable; default 1 hour).
	Timeout time.Duration
	// Debug logs every FUSE request.
	Debug bool
	// FsName is shown in /proc/mounts (default "nydus").
	FsName string
	// Passthrough serves files that have a whole-file cache through
	// FUSE passthrough (Linux ≥ 6.9, root): the kernel reads the cache
	// file itself.
	Passthrough bool
	// Log receives the errors answered with EIO (default: discarded).
	Log *slog.Logger
	// Journal, if set, is the file where how the kernel has each file
	// open is kept, for the process that takes the connection over
	// (journal.go); it should sit beside the API socket. Without it, a
	// successor can only guess, and a guess that conflicts with an open
	// left in place gets EIO.
	Journal string
}

func (o *Options) defaults() {
	if o.Timeout == 0 {
		o.Timeout = time.Hour
	}
	if o.FsName == "" {
		o.FsName = "nydus"
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

// errno translates fs errors at the edge and logs those that become EIO.
func (s *FileSystem) errno(err error) fuse.Status {
	st := errnoOf(err)
	if st == fuse.EIO {
		s.o.Log.Warn("I/O error", "err", err)
	}
	return st
}

// errnoOf maps an fs error to its FUSE status.
func errnoOf(err error) fuse.Status {
	switch {
	case err == nil:
		return fuse.OK
	case errors.Is(err, errdefs.ErrNotFound):
		return fuse.ENOENT
	case errors.Is(err, nfs.ErrNotDir):
		return fuse.ENOTDIR
	case errors.Is(err, nfs.ErrNoAttr):
		return fuse.ENODATA
	case errors.Is(err, context.Canceled):
		return fuse.EINTR
	}
	return fuse.EIO
}

const (
	slotShift = 40
	nidMask   = 1<<slotShift - 1
	// MaxSlot is the largest image slot.
	MaxSlot = 1<<(64-slotShift) - 1
)

// image is one image served by the filesystem.
type image struct {
	name string // shared mode: the directory below the root
	slot uint64
	fs   *nfs.FS
	root uint64 // the image root's nid
}

// table is an immutable snapshot of the served images.
type table struct {
	bySlot map[uint64]*image
	byName map[string]*image
}

// backing is a passthrough backing file registered with the kernel.
type backing struct {
	id   int32
	file *os.File // nil for a predecessor's (inherited)
	refs int
}

// FileSystem is a go-fuse RawFileSystem over one image (dedicated mode)
// or over a directory of images added and removed at run time (shared
// mode).
type FileSystem struct {
	fuse.RawFileSystem
	o      Options
	shared bool

	imgs atomic.Pointer[table]
	mu   sync.Mutex // serialises image changes and backing files

	srv     atomic.Pointer[fuse.Server]
	backing map[uint64]*backing // by node id
	// cached counts a node's opens in the kernel's cached I/O mode: the
	// kernel refuses a passthrough open (EIO) while any exists.
	cached map[uint64]int
	// tookOver is set on a connection taken over. The kernel refuses an
	// open whose I/O mode (passthrough or cached) differs from the opens
	// of the same file still open (EIO), and the predecessor's opens are
	// unknown here. The predecessor served a file by passthrough when it
	// had a right whole-file copy, so after a takeover a file with such a
	// copy is served by passthrough too, the copy read back first if this
	// process has not verified it.
	tookOver atomic.Bool
	// journal records the nodes' open modes (Options.Journal); guarded
	// by mu. inherited is the predecessor's, read from it at a takeover;
	// guarded by mu.
	journal   *os.File
	inherited map[uint64]inherited
}

// NewDedicated returns a filesystem whose root is the root of f; the
// image has slot 1.
func NewDedicated(f *nfs.FS, o Options) *FileSystem {
	fsys := newFS(o, false)
	fsys.imgs.Store(&table{bySlot: map[uint64]*image{1: {slot: 1, fs: f, root: f.RootNid()}}, byName: map[string]*image{}})
	return fsys
}

// NewShared returns a filesystem whose root is a directory of images,
// added with Add.
func NewShared(o Options) *FileSystem {
	fsys := newFS(o, true)
	fsys.imgs.Store(&table{bySlot: map[uint64]*image{}, byName: map[string]*image{}})
	return fsys
}

func newFS(o Options, shared bool) *FileSystem {
	o.defaults()
	return &FileSystem{RawFileSystem: fuse.NewDefaultRawFileSystem(), o: o, shared: shared, backing: map[uint64]*backing{}, cached: map[uint64]int{}}
}

// Add serves f at /name (shared mode) in the given slot (1 to MaxSlot);
// slot 0 picks the lowest free one. It returns the slot, which a daemon
// taking the connection over must reuse.
func (s *FileSystem) Add(name string, slot uint64, f *nfs.FS) (uint64, error) {
	if !s.shared {
		return 0, errors.New("fusefs: images are added to shared filesystems only")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.imgs.Load()
	if _, ok := old.byName[name]; ok {
		return 0, os.ErrExist
	}
	if slot == 0 {
		for slot = 1; old.bySlot[slot] != nil; slot++ {
		}
	}
	if slot > MaxSlot || old.bySlot[slot] != nil {
		return 0, errors.New("fusefs: image slot in use or out of range")
	}
	t := &table{bySlot: make(map[uint64]*image, len(old.bySlot)+1), byName: make(map[string]*image, len(old.byName)+1)}
	for k, v := range old.bySlot {
		t.bySlot[k] = v
	}
	for k, v := range old.byName {
		t.byName[k] = v
	}
	img := &image{name: name, slot: slot, fs: f, root: f.RootNid()}
	t.bySlot[slot], t.byName[name] = img, img
	s.imgs.Store(t)
	s.invalidateRoot()
	return slot, nil
}

// Remove stops serving the image at /name and tells the kernel to forget
// the entry.
func (s *FileSystem) Remove(name string) bool {
	s.mu.Lock()
	old := s.imgs.Load()
	img, ok := old.byName[name]
	if !ok {
		s.mu.Unlock()
		return false
	}
	t := &table{bySlot: map[uint64]*image{}, byName: map[string]*image{}}
	for k, v := range old.bySlot {
		if k != img.slot {
			t.bySlot[k] = v
		}
	}
	for k, v := range old.byName {
		if k != name {
			t.byName[k] = v
		}
	}
	s.imgs.Store(t)
	s.mu.Unlock()
	if srv := s.srv.Load(); srv != nil {
		srv.EntryNotify(fuse.FUSE_ROOT_ID, name)
	}
	s.invalidateRoot()
	return true
}

// invalidateRoot drops the kernel's cached listing of a shared root.
func (s *FileSystem) invalidateRoot() {
	if srv := s.srv.Load(); srv != nil {
		srv.InodeNotify(fuse.FUSE_ROOT_ID, 0, 0)
	}
}

// Init is called by go-fuse once the kernel connection is set up.
func (s *FileSystem) Init(srv *fuse.Server) { s.srv.Store(srv) }

// String names the filesystem.
func (s *FileSystem) String() string { return "rafs" }

// nodeID is the FUSE node id of nid in img.
func (s *FileSystem) nodeID(img *image, nid uint64) uint64 {
	if !s.shared && nid == img.root {
		return fuse.FUSE_ROOT_ID
	}
	return img.slot<<slotShift | nid
}

// ino is the inode number reported for nid in img: the nid itself for a
// dedicated image, the node id in shared mode (unique across images).
func (s *FileSystem) ino(img *image, nid uint64) uint64 {
	if !s.shared {
		return nid
	}
	return img.slot<<slotShift | nid
}

// resolve maps a node id to its image and nid; pseudo is true for the
// root of a shared filesystem.
func (s *FileSystem) resolve(id uint64) (img *image, nid uint64, pseudo bool, st fuse.Status) {
	t := s.imgs.Load()
	if id == fuse.FUSE_ROOT_ID {
		if s.shared {
			return nil, 0, true, fuse.OK
		}
		img = t.bySlot[1]
		return img, img.root, false, fuse.OK
	}
	img = t.bySlot[id>>slotShift]
	if img == nil {
		return nil, 0, false, fuse.Status(syscall.ESTALE)
	}
	return img, id & nidMask, false, fuse.OK
}

// ctxOf returns the context of a request. It carries the caller but
// ignores go-fuse's cancel channel, which closes when the kernel sends
// FUSE_INTERRUPT: the kernel does that whenever the waiting task has any
// signal pending, including the preemption signal Go programs such as
// runc's init get all the time, and failing the request then broke
// container starts ("exec /bin/sh: input/output error"). Like upstream
// nydusd, requests run to completion; fetches are bounded by the
// backend's timeouts and retries, so a fatal signal still ends the wait.
func ctxOf(_ <-chan struct{}, h *fuse.InHeader) context.Context {
	return &fuse.Context{Caller: h.Caller}
}

func fillAttr(ino *nfs.Inode, out *fuse.Attr, n uint64) {
	out.Ino = n
	out.Mode = ino.Mode
	out.Size = ino.Size
	out.Blocks = (ino.Size + 511) / 512
	out.Nlink = ino.Nlink
	out.Owner = fuse.Owner{Uid: ino.UID, Gid: ino.GID}
	out.Mtime, out.Mtimensec = ino.Mtime, ino.MtimeNsec
	out.Ctime, out.Ctimensec = ino.Mtime, ino.MtimeNsec
	out.Atime, out.Atimensec = ino.Mtime, ino.MtimeNsec
	out.Rdev = ino.Rdev()
	out.Blksize = 4096
}

func pseudoAttr(out *fuse.Attr) {
	out.Ino = fuse.FUSE_ROOT_ID
	out.Mode = syscall.S_IFDIR | 0o755
	out.Nlink = 2
	out.Blksize = 4096
}

func (s *FileSystem) entry(img *image, ino *nfs.Inode, out *fuse.EntryOut) {
	out.NodeId = s.nodeID(img, ino.Nid)
	out.Generation = 1
	fillAttr(ino, &out.Attr, s.ino(img, ino.Nid))
	out.SetEntryTimeout(s.o.Timeout)
	out.SetAttrTimeout(s.o.Timeout)
}

// Lookup resolves a name in a directory.
func (s *FileSystem) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	img, nid, pseudo, st := s.resolve(h.NodeId)
	if !st.Ok() {
		return st
	}
	ctx := ctxOf(cancel, h)
	if pseudo {
		img := s.imgs.Load().byName[name]
		if img == nil {
			return fuse.ENOENT
		}
		ino, err := img.fs.Inode(ctx, img.root)
		if err != nil {
			return s.errno(err)
		}
		s.entry(img, ino, out)
		// Images come and go: do not cache the entry in the root.
		out.SetEntryTimeout(0)
		return fuse.OK
	}
	ino, err := img.fs.Lookup(ctx, nid, name)
	img.fs.CountFop(nid, nfs.FopLookup, err != nil && !errors.Is(err, errdefs.ErrNotFound))
	if errors.Is(err, errdefs.ErrNotFound) {
		// Negative entries are cached too: the image never changes.
		*out = fuse.EntryOut{}
		out.SetEntryTimeout(s.o.Timeout)
		return fuse.OK
	}
	if err != nil {
		return s.errno(err)
	}
	s.entry(img, ino, out)
	return fuse.OK
}

// GetAttr returns a node's attributes.
func (s *FileSystem) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	img, nid, pseudo, st := s.resolve(in.NodeId)
	if !st.Ok() {
		return st
	}
	if pseudo {
		pseudoAttr(&out.Attr)
		return fuse.OK
	}
	ino, err := img.fs.Inode(ctxOf(cancel, &in.InHeader), nid)
	img.fs.CountFop(nid, nfs.FopGetattr, err != nil)
	if err != nil {
		return s.errno(err)
	}
	fillAttr(ino, &out.Attr, s.ino(img, nid))
	out.SetTimeout(s.o.Timeout)
	return fuse.OK
}

// File handles: how a file was opened by this process (0: by a
// predecessor, before a takeover).
const (
	fhPassthrough = 1 // served through a backing file
	fhCached      = 2 // served by the daemon through the page cache
)

// Open opens a file read-only; a file whose whole content is verified and
// cached locally is handed to the kernel (FUSE passthrough), so its reads
// bypass the daemon.
func (s *FileSystem) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.Flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return fuse.EROFS
	}
	img, nid, pseudo, st := s.resolve(in.NodeId)
	if !st.Ok() {
		return st
	}
	if pseudo {
		return fuse.EISDIR
	}
	ctx := ctxOf(cancel, &in.InHeader)
	img.fs.CountFop(nid, nfs.FopOpen, false)
	img.fs.Opened(nid)
	var fd *os.File
	if s.o.Passthrough && s.tookOver.Load() {
		// Outside s.mu: reading a copy back takes a while.
		fd, _ = img.fs.VerifiedWholeFile(ctx, nid)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	inh := s.inherited[in.NodeId]
	if inh.backing != 0 {
		// The predecessor's backing file is still in use: the same one.
		if fd != nil {
			fd.Close()
		}
		b := s.backing[in.NodeId]
		if b == nil {
			b = &backing{id: inh.backing}
			s.backing[in.NodeId] = b
		}
		b.refs++
		out.BackingID = b.id
		out.OpenFlags = fuse.FOPEN_PASSTHROUGH | fuse.FOPEN_NOFLUSH
		out.Fh = fhPassthrough
		return fuse.OK
	}
	if s.o.Passthrough && s.cached[in.NodeId] == 0 && !inh.cached {
		if id, ok := s.passthroughLocked(ctx, in.NodeId, img, nid, fd); ok {
			out.BackingID = id
			out.OpenFlags = fuse.FOPEN_PASSTHROUGH | fuse.FOPEN_NOFLUSH
			out.Fh = fhPassthrough
			return fuse.OK
		}
	} else if fd != nil {
		fd.Close()
	}
	if s.cached[in.NodeId]++; s.cached[in.NodeId] == 1 && !inh.cached {
		s.record("C %d\n", in.NodeId)
	}
	out.Fh = fhCached
	out.OpenFlags = fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH
	return fuse.OK
}

// Flush is not needed on a read-only filesystem: ENOSYS stops the kernel
// from sending it on every close. (A close must never wait for the
// daemon: during a failover nobody answers until the takeover.)
func (s *FileSystem) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	return fuse.ENOSYS
}

// passthroughLocked registers (or reuses) the whole-file cache of a node
// as a kernel backing file; s.mu is held, so the choice between
// passthrough and cached opens of a node is atomic. fd, if not nil, is
// the copy to use (it is closed if it is not).
func (s *FileSystem) passthroughLocked(ctx context.Context, node uint64, img *image, nid uint64, fd *os.File) (int32, bool) {
	srv := s.srv.Load()
	if srv == nil || srv.KernelSettings().Flags64()&fuse.CAP_PASSTHROUGH == 0 {
		if fd != nil {
			fd.Close()
		}
		return 0, false
	}
	if b := s.backing[node]; b != nil {
		if fd != nil {
			fd.Close()
		}
		b.refs++
		return b.id, true
	}
	if fd == nil {
		var err error
		if fd, err = img.fs.WholeFile(ctx, nid, false); err != nil || fd == nil {
			return 0, false
		}
	}
	id, e := srv.RegisterBackingFd(&fuse.BackingMap{Fd: int32(fd.Fd())})
	if e != 0 {
		fd.Close()
		return 0, false
	}
	s.backing[node] = &backing{id: id, file: fd, refs: 1}
	s.record("P %d %d\n", node, id)
	return id, true
}

// Release closes an open file; the last close of a passthrough file
// unregisters its backing file.
func (s *FileSystem) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	s.mu.Lock()
	inh := s.inherited[in.NodeId]
	if in.Fh == fhCached {
		if s.cached[in.NodeId]--; s.cached[in.NodeId] <= 0 {
			delete(s.cached, in.NodeId)
			if !inh.cached {
				s.record("c %d\n", in.NodeId)
			}
		}
	}
	b := s.backing[in.NodeId]
	if in.Fh != fhPassthrough || b == nil { // or opened by a predecessor
		s.mu.Unlock()
		return
	}
	if b.refs--; b.refs > 0 {
		s.mu.Unlock()
		return
	}
	delete(s.backing, in.NodeId)
	if b.file == nil {
		// The predecessor's: kept registered (its opens may remain).
		s.mu.Unlock()
		return
	}
	s.record("p %d\n", in.NodeId)
	s.mu.Unlock()
	if srv := s.srv.Load(); srv != nil {
		srv.UnregisterBackingFd(b.id)
	}
	b.file.Close()
}

// Read reads file data, fetching and verifying missing chunks.
func (s *FileSystem) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	img, nid, pseudo, st := s.resolve(in.NodeId)
	if !st.Ok() {
		return nil, st
	}
	if pseudo {
		return nil, fuse.EISDIR
	}
	ctx := ctxOf(cancel, &in.InHeader)
	c, err := img.fs.Read(ctx, nid, buf, int64(in.Offset))
	if err != nil {
		return nil, s.errno(err)
	}
	if s.o.Passthrough && c > 0 {
		if ino, err := img.fs.Inode(ctx, nid); err == nil && in.Offset+uint64(c) >= ino.Size {
			// Read to the end: every chunk is cached now; assemble the
			// whole file in the background for the next opens.
			f := img.fs
			f.Go(func(ctx context.Context) { f.EnsureWholeFile(ctx, nid) })
		}
	}
	return fuse.ReadResultData(buf[:c]), fuse.OK
}

// OpenDir answers ENOSYS: the kernel then stops sending OPENDIR and
// RELEASEDIR (FUSE_NO_OPENDIR_SUPPORT) and opens directories with
// FOPEN_KEEP_CACHE|FOPEN_CACHE_DIR itself, so a warm walk of an image
// never reaches the daemon. The shared root's cached listing is
// invalidated when images come and go.
func (s *FileSystem) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	return fuse.ENOSYS
}

// dirent is one listed entry.
type dirent struct {
	name string
	nid  uint64
	mode uint32
	img  *image
	dir  *nfs.Inode // the listed directory (nil for the shared root's images)
}

// list returns a directory's entries, "." and ".." first; entry i has
// offset i+1, so listings need no per-handle state.
func (s *FileSystem) list(ctx context.Context, id uint64) ([]dirent, fuse.Status) {
	img, nid, pseudo, st := s.resolve(id)
	if !st.Ok() {
		return nil, st
	}
	out := []dirent{{name: ".", mode: syscall.S_IFDIR}, {name: "..", mode: syscall.S_IFDIR}}
	if pseudo {
		t := s.imgs.Load()
		for _, img := range t.bySlot {
			out = append(out, dirent{name: img.name, nid: img.root, mode: syscall.S_IFDIR, img: img})
		}
		// Offsets index this list: keep its order stable across calls.
		sort.Slice(out[2:], func(i, j int) bool { return out[2+i].name < out[2+j].name })
		return out, fuse.OK
	}
	ents, err := img.fs.ReadDir(ctx, nid)
	img.fs.CountFop(nid, nfs.FopReaddir, err != nil)
	if err != nil {
		return nil, s.errno(err)
	}
	dir, err := img.fs.Inode(ctx, nid)
	if err != nil {
		return nil, s.errno(err)
	}
	for _, e := range ents {
		out = append(out, dirent{name: e.Name, nid: e.Nid, mode: direntMode(e.Type), img: img, dir: dir})
	}
	return out, fuse.OK
}

// ReadDir lists a directory.
func (s *FileSystem) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	ents, st := s.list(ctxOf(cancel, &in.InHeader), in.NodeId)
	if !st.Ok() {
		return st
	}
	for i := int(in.Offset); i < len(ents); i++ {
		e := ents[i]
		de := fuse.DirEntry{Name: e.name, Mode: e.mode, Off: uint64(i + 1)}
		if e.img != nil {
			de.Ino = s.ino(e.img, e.nid)
		}
		if !out.AddDirEntry(de) {
			break
		}
	}
	return fuse.OK
}

// ReadDirPlus lists a directory with each entry's attributes, sparing the
// kernel a LOOKUP per entry.
func (s *FileSystem) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	ctx := ctxOf(cancel, &in.InHeader)
	ents, st := s.list(ctx, in.NodeId)
	if !st.Ok() {
		return st
	}
	for i := int(in.Offset); i < len(ents); i++ {
		e := ents[i]
		var ino *nfs.Inode
		if e.img != nil {
			var err error
			if e.dir != nil {
				ino, err = e.img.fs.Child(ctx, e.dir, rafs.Dirent{Name: e.name, Nid: e.nid})
			} else {
				ino, err = e.img.fs.Inode(ctx, e.nid)
			}
			if err != nil {
				return s.errno(err)
			}
		}
		de := fuse.DirEntry{Name: e.name, Mode: e.mode, Off: uint64(i + 1)}
		if e.img != nil {
			de.Ino = s.ino(e.img, e.nid)
		}
		eo := out.AddDirLookupEntry(de)
		if eo == nil {
			break
		}
		if ino != nil {
			s.entry(e.img, ino, eo)
			if s.shared && in.NodeId == fuse.FUSE_ROOT_ID {
				eo.SetEntryTimeout(0)
			}
		}
	}
	return fuse.OK
}

// ReleaseDir closes a directory; listings keep no state.
func (s *FileSystem) ReleaseDir(in *fuse.ReleaseIn) {}

func direntMode(t uint8) uint32 {
	switch t {
	case 1:
		return syscall.S_IFREG
	case 2:
		return syscall.S_IFDIR
	case 3:
		return syscall.S_IFCHR
	case 4:
		return syscall.S_IFBLK
	case 5:
		return syscall.S_IFIFO
	case 6:
		return syscall.S_IFSOCK
	case 7:
		return syscall.S_IFLNK
	}
	return 0
}

// Readlink returns a symlink's target.
func (s *FileSystem) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	img, nid, pseudo, st := s.resolve(h.NodeId)
	if !st.Ok() {
		return nil, st
	}
	if pseudo {
		return nil, fuse.EINVAL
	}
	t, err := img.fs.Readlink(ctxOf(cancel, h), nid)
	img.fs.CountFop(nid, nfs.FopReadlink, err != nil)
	if err != nil {
		return nil, s.errno(err)
	}
	return []byte(t), fuse.OK
}

// GetXAttr returns one extended attribute.
func (s *FileSystem) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	img, nid, pseudo, st := s.resolve(h.NodeId)
	if !st.Ok() {
		return 0, st
	}
	if pseudo {
		return 0, fuse.ENODATA
	}
	v, err := img.fs.Xattr(ctxOf(cancel, h), nid, attr)
	img.fs.CountFop(nid, nfs.FopGetxattr, err != nil && !errors.Is(err, nfs.ErrNoAttr))
	if err != nil {
		return 0, s.errno(err)
	}
	if len(dest) < len(v) {
		return uint32(len(v)), fuse.ERANGE
	}
	return uint32(copy(dest, v)), fuse.OK
}

// ListXAttr lists extended attribute names.
func (s *FileSystem) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	img, nid, pseudo, st := s.resolve(h.NodeId)
	if !st.Ok() {
		return 0, st
	}
	if pseudo {
		return 0, fuse.OK
	}
	ino, err := img.fs.Inode(ctxOf(cancel, h), nid)
	if err != nil {
		return 0, s.errno(err)
	}
	var b []byte
	for _, x := range ino.Xattrs {
		b = append(append(b, x.Name...), 0)
	}
	if len(dest) < len(b) {
		return uint32(len(b)), fuse.ERANGE
	}
	return uint32(copy(dest, b)), fuse.OK
}

// StatFs reports a read-only filesystem.
func (s *FileSystem) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	out.Bsize = 4096
	out.Frsize = 4096
	out.NameLen = 255
	return fuse.OK
}

// Access allows every access the kernel's permission checks allowed.
func (s *FileSystem) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	if in.Mask&2 != 0 { // W_OK
		return fuse.EROFS
	}
	return fuse.OK
}
