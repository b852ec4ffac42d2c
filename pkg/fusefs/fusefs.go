// Package fusefs serves a Nydus image (package fs) through the kernel's
// FUSE with go-fuse: immutable entries and attributes are cached by the
// kernel for long, file data is kept in the page cache (KEEP_CACHE).
package fusefs

import (
	"context"
	"errors"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	nfs "github.com/nydus-go/nydus/pkg/fs"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// Options configure a mount.
type Options struct {
	// Timeout is how long the kernel caches entries and attributes (the
	// image is immutable; default 1 hour).
	Timeout time.Duration
	// Debug logs every FUSE request.
	Debug bool
	// FsName is shown in /proc/mounts (default "nydus").
	FsName string
	// InoBase is added to every nid to form inode numbers, so that images
	// sharing one FUSE mount (shared daemon mode) never collide.
	InoBase uint64
	// Passthrough serves files that have a whole-file cache through
	// FUSE passthrough (Linux ≥ 6.9, root): the kernel reads the cache
	// file itself.
	Passthrough bool
}

// errno translates fs errors at the edge.
func errno(err error) syscall.Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, nfs.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, nfs.ErrNotDir):
		return syscall.ENOTDIR
	case errors.Is(err, nfs.ErrNoAttr):
		return syscall.ENODATA
	case errors.Is(err, context.Canceled):
		return syscall.EINTR
	}
	return syscall.EIO
}

type node struct {
	gofs.Inode
	f   *nfs.FS
	nid uint64
	o   *Options
}

var (
	_ gofs.NodeGetattrer   = (*node)(nil)
	_ gofs.NodeLookuper    = (*node)(nil)
	_ gofs.NodeReaddirer   = (*node)(nil)
	_ gofs.NodeReadlinker  = (*node)(nil)
	_ gofs.NodeOpener      = (*node)(nil)
	_ gofs.NodeReader      = (*node)(nil)
	_ gofs.NodeGetxattrer  = (*node)(nil)
	_ gofs.NodeListxattrer = (*node)(nil)
)

func fillAttr(ino *nfs.Inode, out *fuse.Attr, base uint64) {
	out.Ino = base + ino.Nid
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

func (n *node) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ino, err := n.f.Inode(ctx, n.nid)
	if err != nil {
		return errno(err)
	}
	fillAttr(ino, &out.Attr, n.o.InoBase)
	out.SetTimeout(n.o.Timeout)
	return 0
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ino, err := n.f.Lookup(ctx, n.nid, name)
	if err != nil {
		return nil, errno(err)
	}
	fillAttr(ino, &out.Attr, n.o.InoBase)
	out.SetEntryTimeout(n.o.Timeout)
	out.SetAttrTimeout(n.o.Timeout)
	child := n.NewInode(ctx, &node{f: n.f, nid: ino.Nid, o: n.o}, gofs.StableAttr{Mode: ino.Mode & rafs.ModeType, Ino: n.o.InoBase + ino.Nid})
	return child, 0
}

// OpendirHandle lets the kernel cache directory listings
// (FOPEN_CACHE_DIR): the image never changes, so a directory is listed by
// the daemon once.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	ds, e := n.Readdir(ctx)
	if e != 0 {
		return nil, 0, e
	}
	return ds, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

func (n *node) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	ents, err := n.f.ReadDir(ctx, n.nid)
	if err != nil {
		return nil, errno(err)
	}
	out := make([]fuse.DirEntry, 0, len(ents))
	for _, e := range ents {
		out = append(out, fuse.DirEntry{Name: e.Name, Ino: n.o.InoBase + e.Nid, Mode: direntMode(e.Type)})
	}
	return gofs.NewListDirStream(out), 0
}

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

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	s, err := n.f.Readlink(ctx, n.nid)
	if err != nil {
		return nil, errno(err)
	}
	return []byte(s), 0
}

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	// A file whose whole content is verified and cached locally is
	// handed to the kernel (FUSE passthrough): reads bypass the daemon.
	if n.o.Passthrough {
		if fd, err := n.f.WholeFile(ctx, n.nid, false); err == nil && fd != nil {
			return gofs.NewLoopbackFileFromOS(fd), 0, 0
		}
	}
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (n *node) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	c, err := n.f.Read(ctx, n.nid, dest, off)
	if err != nil {
		return nil, errno(err)
	}
	if n.o.Passthrough && c > 0 {
		if ino, err := n.f.Inode(ctx, n.nid); err == nil && uint64(off)+uint64(c) >= ino.Size {
			// Read to the end: every chunk is cached now; assemble the
			// whole file in the background for the next opens.
			n.f.Go(func(ctx context.Context) { n.f.EnsureWholeFile(ctx, n.nid) })
		}
	}
	return fuse.ReadResultData(dest[:c]), 0
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, err := n.f.Xattr(ctx, n.nid, attr)
	if err != nil {
		return 0, errno(err)
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	ino, err := n.f.Inode(ctx, n.nid)
	if err != nil {
		return 0, errno(err)
	}
	var b []byte
	for _, x := range ino.Xattrs {
		b = append(append(b, x.Name...), 0)
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}

func (o *Options) defaults() {
	if o.Timeout == 0 {
		o.Timeout = time.Hour
	}
	if o.FsName == "" {
		o.FsName = "nydus"
	}
}

// Root returns the root node of an image, to attach below another node
// (shared daemon mode) with NewPersistentInode and StableAttr{Mode:
// S_IFDIR, Ino: RootIno(f, o)}.
func Root(f *nfs.FS, o Options) gofs.InodeEmbedder {
	o.defaults()
	return &node{f: f, nid: f.RootNid(), o: &o}
}

// RootIno is the inode number of an image's root for the given options.
func RootIno(f *nfs.FS, o Options) uint64 { return o.InoBase + f.RootNid() }

// MountOptions are the FUSE mount options of an immutable image.
func MountOptions(o Options, debug bool) fuse.MountOptions {
	o.defaults()
	return fuse.MountOptions{
		FsName:       o.FsName,
		Name:         "rafs",
		AllowOther:   true,
		DirectMount:  true,
		Debug:        debug,
		MaxReadAhead: 1 << 20,
		// Immutable image: symlink targets are cached by the kernel too.
		EnableSymlinkCaching: true,
	}
}

// Mount serves f at dir and returns the server; call Unmount (or
// server.Unmount) to stop.
func Mount(dir string, f *nfs.FS, o Options) (*fuse.Server, error) {
	o.defaults()
	root := &node{f: f, nid: f.RootNid(), o: &o}
	to := o.Timeout
	srv, err := gofs.Mount(dir, root, &gofs.Options{
		EntryTimeout:    &to,
		AttrTimeout:     &to,
		NegativeTimeout: &to,
		MountOptions:    MountOptions(o, o.Debug),
		RootStableAttr:  &gofs.StableAttr{Ino: o.InoBase + f.RootNid(), Mode: syscall.S_IFDIR},
	})
	if err != nil {
		return nil, err
	}
	return srv, nil
}
