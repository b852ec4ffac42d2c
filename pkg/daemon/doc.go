// Package daemon is nydusd's core: it mounts Nydus images through FUSE,
// either one image at the mountpoint (dedicated mode) or several images
// below it, added and removed through the API (shared mode), and serves
// the HTTP API nydus-snapshotter drives, on a unix socket.
//
// Entry points: [MountImage] mounts an image from its registry reference
// in one call (see ExampleMountImage); [New] makes a daemon that
// [Daemon.MountDedicated] or [Daemon.StartShared] starts and
// [Daemon.ServeAPI] exposes, as nydusd does; [api.Client] talks to a
// running one.
//
// # Concurrency
//
// Every exported method of [Daemon], [EventLog] and [EventSink] is safe
// for concurrent use. A daemon is used by:
//
//   - the goroutine that starts and stops it (nydusd's main):
//     MountDedicated or StartShared, ServeAPI, Close;
//   - the API's HTTP goroutines, one per request: Mount, Umount,
//     TakeOver, Start, SendStates, Exit, SetRegistryAuth, the metrics
//     (Instances, UnderlyingFiles, the Prometheus collector), events;
//   - FUSE request goroutines and the images' background goroutines,
//     which reach the daemon only through what it handed each image at
//     mount (its chunkCache, the shared caches below, Options.Events),
//     never through Daemon.mu;
//   - blobcache's eviction, which calls Options.Events (OnEvict) with
//     blobcache.Cache.mu held, and the runtime's cleanup goroutine
//     (metaShare).
//
// Options, the shared caches' pointers and the mount record's path are
// immutable after [New]; an instance (a mounted image) is immutable once
// it is published in Daemon.mounts. The rest is guarded as follows:
//
//   - Daemon.mu guards fsys, sess, shared, starting, mounts, busy,
//     caches (the map, and each cacheSlot's c and err) and closed. It is
//     a leaf, and nothing but map and field operations is done under it:
//     no I/O (files, network, cache scans, FUSE mounts and unmounts), no
//     call into blobcache, fusefs, fs or a backend, no Options.Events or
//     log call. Work that needs I/O reserves its place under mu, does the
//     I/O unlocked, then publishes the result under mu:
//     a mountpoint is reserved in busy by Mount (and by Umount until the
//     image is gone), so a concurrent Mount or Umount of it is refused
//     (409); the connection is reserved by starting for MountDedicated,
//     StartShared or a takeover; a work directory's cache is a cacheSlot
//     whose first caller opens it while the others wait on ready. Close
//     sets closed first: a setup finishing after that undoes its own work
//     (as Close would have: unmounted, images closed, the mount record
//     dropped) and fails, and a cache opened after that is closed.
//   - mountRecord.mu (Daemon.rec) serialises the record file's
//     read-modify-write and is held across its I/O; it is a leaf, never
//     taken with Daemon.mu held.
//   - chunkCache.mu (one per image) guards the image's open blob
//     handles; it is held while one is opened (blobcache.Cache.Blob, file
//     I/O) or released, so it is taken before blobcache's locks, and
//     never under them or under Daemon.mu.
//   - metaShare.mu guards the daemon's weak pointers to decoded
//     chunk-info tables; a leaf.
//   - bootBlocks (verified bootstrap blocks), fs.InodeCache and
//     fetch.HotCache, shared by every image, each have their own lock, a
//     leaf (internal/lru); bootBlocks.files, the numbering of bootstrap
//     files, is atomic. A bootFile's onChanged is set before its image is
//     published and called once (its sync.Once).
//   - EventLog.mu guards the log's file, size, sequence and notify
//     channel; it is held across the file's writes and reads, which it
//     keeps in order, and no other lock is taken under it. EventSink's
//     counters are atomics; the rest of it is immutable once started.
//   - Daemon.state (atomic.Value), Daemon.exiting (atomic.Bool), and
//     the exit and ended channels (each closed once, by its sync.Once)
//     need no lock.
//
// Lock order: chunkCache.mu, then blobcache's locks (see package
// blobcache: Cache.evictMu, Cache.mu, ...), then EventLog.mu (eviction
// reports through Options.Events, which nydusd routes to the log).
// Daemon.mu, mountRecord.mu and metaShare.mu are taken with no other
// lock held and take none. So Options.Events must never take Daemon.mu
// or call into the blob cache: it may run under blobcache.Cache.mu.
// fusefs.FileSystem.mu comes before them all: fusefs may call into an
// image (and so its chunkCache) with it held, and this package never
// holds a lock of its own when it calls fusefs (FileSystem.Add and
// Remove, Mount, Resume, Session.Unmount).
//
// Process-wide state: none is mutable. The API's Prometheus registry is
// made per [Daemon.Handler]; the API socket is made 0600 without
// changing the process's umask (listenUnix). What remains global is the
// Go runtime's profiles served by net/http/pprof, the IMAGE_PULL_AUTH
// environment variable (read at mount), and read-only tables (promMetrics
// and the sentinel errors).
package daemon
