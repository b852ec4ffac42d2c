// Package fs is the FUSE-independent read-only filesystem of a mounted
// Nydus image: inodes, directories, symlinks and xattrs come from the
// RAFS v6 bootstrap; file data is read lazily chunk by chunk through the
// fetch engine (package fetch), which fetches each chunk from a blob
// backend, verifies it against its digest and keeps it in a chunk cache.
// On top of it the filesystem reads ahead, prefetches the hot set,
// speculates on what a reader needs next (a program's libraries, a
// directory's small files) and builds whole-file copies. Package fusefs
// serves it through the kernel.
//
// # Concurrency
//
// Every method of [FS] is safe for concurrent use. An FS is used by:
//
//   - FUSE request goroutines (package fusefs): Inode, Lookup, Child,
//     ReadDir, Read, Readlink, Xattr, Opened, CountFop, WholeFile,
//     VerifiedWholeFile, Go;
//   - its background goroutines, started by Go (and the internal spawn):
//     read-ahead, the speculation started by Opened, sibling streams,
//     whole-file checks and builds, and nydusd's prefetch;
//   - nydusd's API goroutines: FileStats, Paths, FetchLog, Metrics;
//   - the goroutine that calls Close, once.
//
// The fields set by [OpenReader] (the bootstrap reader, the engine, the
// options, the background context, id, owner, the inode cache and the
// file-stats table) are immutable afterwards. The rest is guarded as
// follows:
//
//   - FS.goMu (RWMutex) guards FS.closing. [FS.Go] holds the read side
//     while it checks closing and adds to FS.bgWG; Close takes the write
//     side to set closing before it waits on bgWG. So no goroutine is
//     added once the wait may have begun (a WaitGroup misuse), and work
//     asked for once Close has begun is not started.
//   - FS.raSem (a channel of 4) bounds the read-ahead goroutines; a read
//     that finds it full starts none.
//   - FS.mu guards FS.prefetched (the files Prefetch collected).
//   - depState.mu (FS.deps) guards done, bytes, speculating and dirs;
//     depState.sem (a channel) bounds the files fetched at once.
//     depState.gccOnce and cacheOnce guard gcc and cache: their functions
//     read the image (and may fetch from the backend) while concurrent
//     callers wait, so they must never call gccDirs or ldCache.
//   - siblingState.mu (FS.sibs) guards done.
//   - fileStats.mu (FS.fstats) guards the per-file map; the counters in
//     a [FileStats] and in [Metrics] are atomics, updated by any
//     goroutine and read without a lock (each on its own: a set of
//     counters read together is not a snapshot).
//   - [InodeCache] is an internal/lru cache, with its own mutex; one may
//     be shared by every FS of a daemon. Its entries are keyed by FS.id;
//     Close drops the filesystem's, and a read still in flight may add
//     one after that, which the cache evicts in its turn.
//
// Lock order. The locks of this package are leaves: none is held while
// another lock is taken, nor across I/O or a call into the fetch engine,
// the chunk cache, the [CopyStore] or the [InodeCache] (treeCache.dir
// drops depState.mu while it resolves a directory), except goMu's read
// side, held only around bgWG.Add. Callers may hold their own locks
// when they call in: fusefs holds FileSystem.mu while it calls
// WholeFile without build (which reads the inode cache, asks the
// CopyStore, blobcache.Files, for a verified copy, checks the engine's
// local chunk records and may call Go), so this package never calls
// into fusefs, and nothing it does under such a call waits for
// background work.
//
// Never do, while holding a lock of this package: I/O, a call into the
// engine or the CopyStore, or a wait on a channel. Never call Close from
// a goroutine started by Go: Close waits for them.
//
// Process-wide state: owners (an atomic counter) numbers every FS of the
// process, naming it in the InodeCache (FS.id) and to the CopyStore
// (FS.owner). Both may be shared by filesystems that different callers
// opened, so the ids must be unique in the process; no instance owns
// that namespace. The package's other variables (the sentinel errors,
// startupFiles) are never written.
package fs
