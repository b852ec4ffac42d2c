package daemon

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nydus-go/nydus/pkg/blobcache"
	"github.com/nydus-go/nydus/pkg/daemon/api"
	"github.com/nydus-go/nydus/pkg/errdefs"
	"github.com/nydus-go/nydus/pkg/fetch"
	nfs "github.com/nydus-go/nydus/pkg/fs"
	"github.com/nydus-go/nydus/pkg/fusefs"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/registry"
	"github.com/nydus-go/nydus/pkg/storage"
)

// Options configure a daemon.
type Options struct {
	// ID identifies the daemon (--id).
	ID string
	// Supervisor is the failover supervisor socket (--supervisor).
	Supervisor string
	// Mountpoint is the FUSE mountpoint (--mountpoint).
	Mountpoint string
	// EventLog, if set, holds the daemon's events for subscribers
	// (GET /api/v1/events); the caller also routes Events to it.
	EventLog *EventLog
	// MountRecord, if set, is where the daemon records the bootstrap and
	// its digest for each mountpoint, so that a daemon restarted with the
	// same record refuses a bootstrap that changed since it was mounted
	// (nydusd: beside the API socket).
	MountRecord string
	// OpenJournal, if set, is where the FUSE layer keeps how the kernel
	// has each file open, for a successor after a failover or a hot
	// upgrade (fusefs.Options.Journal).
	OpenJournal string
	// Version is reported by GET /api/v1/daemon.
	Version api.Version
	// Log receives diagnostics.
	Log *slog.Logger
	// Events receives security and failure events.
	Events func(fetch.Event)
	// Debug logs every FUSE request.
	Debug bool
	// MetaCacheBytes bounds the memory kept for image metadata, shared by
	// every image: half for verified bootstrap blocks, half for decoded
	// inodes (fs.InodeCache). 0 keeps none (every lookup reads the
	// bootstrap file again).
	MetaCacheBytes int64
	// HotCacheBytes bounds the memory kept for the chunks verified last,
	// shared by every image (fetch.HotCache): the kernel reads a 1 MiB
	// chunk in 128 KiB pieces, and each would otherwise read and verify
	// the whole chunk from the cache again. 0 keeps none.
	HotCacheBytes int64
	// CacheMaxBytes caps each cache directory (0: no cap); blobs not in
	// use are evicted, least recently used first.
	CacheMaxBytes int64
	// Passthrough keeps a whole-file copy of every fully read (or
	// prefetched) file under <work_dir>/nydus-go-files and hands it to
	// the kernel through FUSE passthrough, so later reads of the file
	// never reach the daemon. It needs a cache work_dir.
	Passthrough bool
	// Dependencies fetches a program's interpreter and libraries in the
	// background when it is opened (fs.Options.Dependencies).
	Dependencies bool
	// Siblings fetches a directory's small files when one of them
	// missed the cache (fs.Options.Siblings).
	Siblings bool
	// DigestValidate re-verifies cached chunks on every read for every
	// image, whatever the image config's digest_validate says.
	DigestValidate bool
	// FailoverPolicy is what a daemon that took a connection over does
	// with the requests its predecessor read but never answered:
	// "resend" (default) asks the kernel to send them again, "flush"
	// asks through the fuse control filesystem when the kernel has
	// it (falling back to resend), "none" leaves them.
	FailoverPolicy string
}

// Daemon is a running nydusd.
type Daemon struct {
	o     Options      // immutable after New
	state atomic.Value // string: api.State*; read and set by any goroutine

	// mu guards the fields below, up to rec. Nothing but map and field
	// operations is done under it: what needs I/O reserves
	// its place under mu, does the I/O unlocked and publishes under mu.
	mu     sync.Mutex
	fsys   *fusefs.FileSystem // the served file system; set with sess
	sess   *fusefs.Session    // the FUSE connection; nil before it is set up and after Close
	shared bool               // fsys is a shared daemon's (set with sess)
	// starting reserves the connection (sess) for the MountDedicated,
	// StartShared or takeover setting it up.
	starting bool
	mounts   map[string]*instance // by API mountpoint ("/" in dedicated mode)
	// busy holds the API mountpoints a Mount or Umount is working on:
	// reserved, not (or no longer) in mounts.
	busy   map[string]bool
	caches map[string]*cacheSlot // by work_dir
	closed bool                  // Close has begun: nothing is opened or mounted any more

	rec mountRecord // has its own lock; never taken with mu held

	// Shared by every image, bounded by Options (each has its own lock).
	blocks *bootBlocks     // verified bootstrap blocks
	inodes *nfs.InodeCache // decoded inodes
	hot    *fetch.HotCache // verified chunk data
	metas  metaShare       // decoded chunk-info tables, while in use

	exiting atomic.Bool   // PUT /api/v1/daemon/exit: leave the mount to the successor
	exit    chan struct{} // closed on exit
	exitMu  sync.Once     // closes exit once
	ended   chan struct{} // closed when a served FUSE connection ends
	endOnce sync.Once     // closes ended once
}

// cacheSlot is the chunk cache of a work directory, or its opening in
// progress: the first caller opens it unlocked while later ones wait for
// ready.
type cacheSlot struct {
	ready chan struct{}    // closed once c and err are set
	c     *blobcache.Cache // set (under Daemon.mu) before ready is closed
	err   error            // the opening's error, likewise
}

// errClosed is the refusal of work asked of a daemon being closed.
var errClosed = errors.New("the daemon is stopping")

// instance is one mounted image.
type instance struct {
	// digest is the sha256 of the bootstrap as it was read at mount
	// ("sha256:…"): reported in the API and events, and checked when a
	// successor mounts the bootstrap again (failover, hot upgrade).
	digest       string
	image        string // the backend's registry/repository, if any
	stopPrefetch context.CancelFunc
	fs           *nfs.FS
	cfg          *api.ConfigV1
	bootstrap    string
	backend      string
	be           fetch.Backend
	closer       func()
	pctx         context.Context
	// slot is the image's place in the FUSE node ids, kept across a
	// takeover.
	slot uint64
	// shared: the image is one of a shared daemon's (its inode numbers
	// carry slot).
	shared        bool
	prefetchFiles []string
}

// prefetch starts background prefetch as the configuration asks.
func (d *Daemon) prefetch(inst *instance, files []string) {
	pf := inst.cfg.FSPrefetch
	var paths []string
	if pf.Enable {
		paths = append(inst.fs.PrefetchTablePaths(inst.pctx), files...)
	}
	if len(paths) == 0 && !(pf.Enable && pf.PrefetchAll) {
		// No hot set to stream: fetch what nearly every container runs
		// first (the shell and its libraries) while it is created.
		inst.fs.SpeculateStartup()
	}
	if !pf.Enable {
		return
	}
	workers := pf.ThreadsCount
	if workers <= 0 || workers > 64 {
		workers = 8
	}
	merge := int64(pf.MergingSize)
	if merge <= 0 || merge > 64<<20 {
		merge = fetch.DefaultMergeSize
	}
	o := nfs.PrefetchOptions{Paths: paths, All: pf.PrefetchAll, Workers: workers, MergeSize: merge, BytesPerSecond: int64(pf.BandwidthRate)}
	// In the filesystem's goroutine group, so closing it (unmount)
	// waits for the streams to end and none writes to the cache after
	// its handles are released; stopped by the image's prefetch context
	// or the filesystem's, whichever ends first.
	inst.fs.Go(func(bg context.Context) {
		ctx, cancel := context.WithCancel(inst.pctx)
		defer cancel()
		defer context.AfterFunc(bg, cancel)()
		inst.fs.Prefetch(ctx, o)
	})
}

// New returns a daemon in state INIT.
func New(o Options) *Daemon {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Events == nil {
		o.Events = func(fetch.Event) {}
	}
	d := &Daemon{o: o, rec: mountRecord{path: o.MountRecord}, blocks: newBootBlocks(o.MetaCacheBytes / 2),
		inodes: nfs.NewInodeCache(o.MetaCacheBytes / 2), hot: fetch.NewHotCache(o.HotCacheBytes), mounts: map[string]*instance{}, busy: map[string]bool{}, caches: map[string]*cacheSlot{}, exit: make(chan struct{}), ended: make(chan struct{})}
	d.state.Store(api.StateInit)
	return d
}

// State returns the daemon state.
func (d *Daemon) State() string { return d.state.Load().(string) }

// SetState sets the daemon state.
func (d *Daemon) SetState(s string) { d.state.Store(s) }

// openImage loads a bootstrap and connects its backend.
func (d *Daemon) openImage(ctx context.Context, bootstrap string, cfg *api.ConfigV1) (*instance, error) {
	boot, digest, err := openBootFile(bootstrap, d.blocks)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, errdefs.Errorf(errdefs.ErrNotFound, "%w", err)
		}
		return nil, errdefs.Errorf(errdefs.ErrInvalid, "%w", err)
	}
	be, beCloser, err := newBackend(ctx, cfg, d.o.Log)
	if err != nil {
		boot.Close()
		return nil, err
	}
	closer := func() { beCloser(); boot.Close() }
	rd, err := rafs.Open(ctx, boot, boot.Size())
	if err != nil {
		closer()
		return nil, errdefs.Errorf(errdefs.ErrInvalid, "bootstrap %s: %w", bootstrap, err)
	}
	image := ""
	if bc := cfg.Device.Backend.Config; cfg.Device.Backend.Type == "registry" && bc.Host != "" && bc.Repo != "" {
		image = bc.Host + "/" + bc.Repo
	}
	events := func(e fetch.Event) {
		e.BootstrapDigest, e.Image = digest, image
		d.o.Events(e)
	}
	fo := nfs.Options{Fetch: fetch.Options{Logger: d.o.Log, Events: events, Validate: cfg.Validate() || d.o.DigestValidate, Amplify: amplify(cfg),
		Hot: d.hot}, Inodes: d.inodes,
		ReadAhead: readAhead(cfg), Dependencies: d.o.Dependencies, Siblings: d.o.Siblings, FileStats: cfg.IOStatsFiles || cfg.AccessPattern}
	if cfg.AccessPattern {
		fo.Fetch.LogSize = fetchLogSize
	}
	var cc *chunkCache
	if wd := cfg.Device.Cache.Config.WorkDir; wd != "" && cfg.Device.Cache.Type != "dummycache" && cfg.Device.Cache.Type != "" {
		c, err := d.cache(ctx, wd)
		if err != nil {
			closer()
			return nil, err
		}
		cc = newChunkCache(c, rd, &d.metas)
		fo.Fetch.Cache = cc
		fo.Fetch.Metas = cc
		if d.o.Passthrough {
			fo.Copies = c.Files()
		}
	}
	f, err := nfs.OpenReader(ctx, rd, be, fo)
	if err != nil {
		closer()
		return nil, fmt.Errorf("bootstrap %s: %w", bootstrap, err)
	}
	boot.onChanged = func(_ int64, err error) {
		f.Metrics.AtRestFailures.Add(1)
		d.o.Log.Error("bootstrap changed on disk since it was mounted; its reads fail", "bootstrap", bootstrap, "err", err)
		events(fetch.Event{Kind: "bootstrap-changed", Path: bootstrap, Err: err.Error()})
	}
	pctx, stop := context.WithCancel(context.Background())
	done := func() { stop(); f.Close(); closer() }
	if cc != nil {
		done = func() { stop(); f.Close(); cc.release(); closer() }
	}
	return &instance{digest: digest, image: image, fs: f, cfg: cfg, bootstrap: bootstrap, backend: cfg.Device.Backend.Type, be: be, closer: done, stopPrefetch: stop, pctx: pctx}, nil
}

// cache returns the chunk cache of a work directory, shared by every
// image using it. The first caller for a directory opens it (a scan of
// the directory, and eviction) without Daemon.mu held; callers for the
// same directory meanwhile wait for it, and one whose opening failed is
// followed by a new attempt. A cache opened while the daemon was being
// closed is closed again.
func (d *Daemon) cache(ctx context.Context, dir string) (*blobcache.Cache, error) {
	for {
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			return nil, fmt.Errorf("cache %s: %w", dir, errClosed)
		}
		s, found := d.caches[dir]
		if !found {
			s = &cacheSlot{ready: make(chan struct{})}
			d.caches[dir] = s
		}
		d.mu.Unlock()
		if !found {
			return d.openCache(ctx, dir, s)
		}
		select {
		case <-s.ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("cache %s: %w", dir, ctx.Err())
		}
		if s.err == nil {
			return s.c, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("cache %s: %w", dir, err)
		}
		// The opening failed (and its slot is gone): try again.
	}
}

// openCache opens the cache of dir for its reserved slot s, and
// publishes it (or its error) there.
func (d *Daemon) openCache(ctx context.Context, dir string, s *cacheSlot) (*blobcache.Cache, error) {
	// Every chunk read back from the cache is verified (the fetch engine
	// passes the check): data changed on disk is never served.
	c, err := blobcache.Open(ctx, blobcache.Options{Dir: dir, ValidateOnRead: true, MaxBytes: d.o.CacheMaxBytes, Log: d.o.Log,
		OnEvict: func(id string, n int64) {
			d.o.Events(fetch.Event{Kind: "evict", BlobID: id, Err: fmt.Sprintf("%d bytes freed to stay under the cache cap", n)})
		}})
	if err != nil {
		err = fmt.Errorf("cache %s: %w", dir, err)
	}
	d.mu.Lock()
	closed := d.closed
	if err == nil && closed {
		err = fmt.Errorf("cache %s: %w", dir, errClosed)
	}
	if err != nil {
		// Not kept: the next caller opens the directory again. (Close
		// already dropped the slot if it ran.)
		if d.caches[dir] == s {
			delete(d.caches, dir)
		}
		s.err = err
	} else {
		s.c = c
	}
	close(s.ready)
	d.mu.Unlock()
	if closed && c != nil {
		c.Close()
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// openCachesLocked returns the caches opened; mu is held.
func (d *Daemon) openCachesLocked() []*blobcache.Cache {
	var out []*blobcache.Cache
	for _, s := range d.caches {
		select {
		case <-s.ready:
			if s.c != nil {
				out = append(out, s.c)
			}
		default: // still opening
		}
	}
	return out
}

// UnderlyingFiles lists the cache files of blobs in use (for the
// snapshotter's cache GC).
func (d *Daemon) UnderlyingFiles() []string {
	d.mu.Lock()
	caches := d.openCachesLocked()
	d.mu.Unlock()
	out := []string{}
	for _, c := range caches {
		out = append(out, c.UnderlyingFiles()...)
	}
	return out
}

// newBackend builds the blob backend of a configuration.
func newBackend(ctx context.Context, cfg *api.ConfigV1, log *slog.Logger) (fetch.Backend, func(), error) {
	bc := cfg.Device.Backend.Config
	switch cfg.Device.Backend.Type {
	case "localfs":
		if bc.Dir == "" && bc.BlobFile == "" {
			return nil, nil, errdefs.Errorf(errdefs.ErrInvalid, "invalid nydusd config: field device.backend.config.dir is empty")
		}
		fs := &storage.FileSource{Dir: bc.Dir, File: bc.BlobFile, AltDirs: bc.AltDirs}
		return fs, func() { fs.Close() }, nil
	case "registry":
		auth := bc.Auth
		if env := os.Getenv("IMAGE_PULL_AUTH"); env != "" {
			auth = env
		}
		if auth != "" {
			if _, err := base64.StdEncoding.DecodeString(auth); err != nil {
				return nil, nil, errdefs.Errorf(errdefs.ErrInvalid, "invalid nydusd config: field device.backend.config.auth is not base64")
			}
		}
		rc := registry.Config{Host: bc.Host, Repo: bc.Repo, Scheme: bc.Scheme, Auth: auth,
			RegistryToken: bc.RegistryToken, SkipVerify: bc.SkipVerify, CACertFiles: bc.CACertFiles, Timeout: bc.Timeout,
			ConnectTimeout: bc.ConnectTimeout, RetryLimit: max(bc.RetryLimit, 2),
			BlobURLScheme: bc.BlobURLScheme, BlobRedirectedHost: bc.BlobRedirectedHost, Log: log}
		if p := bc.Proxy; p != nil && p.URL != "" {
			rc.Proxy = &registry.ProxyConfig{URL: p.URL, PingURL: p.PingURL, Fallback: p.FallbackOn(), UseHTTP: p.UseHTTP,
				CheckInterval: time.Duration(p.CheckInterval) * time.Second, CheckPauseElapsed: time.Duration(p.CheckPauseElapsed) * time.Second}
		}
		for i, m := range bc.Mirrors {
			if m.Host == "" {
				return nil, nil, errdefs.Errorf(errdefs.ErrInvalid, "invalid nydusd config: field device.backend.config.mirrors[%d].host is empty", i)
			}
			rc.Mirrors = append(rc.Mirrors, registry.MirrorConfig{Host: m.Host, PingURL: m.PingURL, Headers: m.Headers,
				AuthThrough: m.AuthThrough, HealthCheckInterval: time.Duration(m.HealthCheckInterval) * time.Second,
				FailureLimit: m.FailureLimit, HealthCheckPauseElapsed: time.Duration(m.HealthCheckPauseElapsed) * time.Second})
		}
		c, err := registry.New(ctx, rc)
		if err != nil {
			return nil, nil, err
		}
		c.OnIgnoredRange(func() {
			log.Warn("the registry ignores Range requests and sends whole blobs: every read streams the blob up to the range's end (memory stays bounded, the network does not)", "registry", bc.Host, "repo", bc.Repo)
		})
		return c, c.Close, nil
	}
	return nil, nil, fmt.Errorf("backend type %q is not supported yet", cfg.Device.Backend.Type)
}

// MountDedicated mounts one image at the mountpoint and enters RUNNING;
// prefetchFiles (--prefetch-files) are fetched first when prefetch is on.
func (d *Daemon) MountDedicated(ctx context.Context, bootstrap string, cfg *api.ConfigV1, prefetchFiles []string) error {
	if err := d.reserveSession(); err != nil {
		return err
	}
	inst, err := d.openImage(ctx, bootstrap, cfg)
	if err != nil {
		d.publishSession(nil, nil, false, nil)
		return err
	}
	if err := d.admit("/", inst); err != nil {
		inst.closer()
		d.publishSession(nil, nil, false, nil)
		return err
	}
	inst.slot, inst.prefetchFiles = 1, prefetchFiles
	fsys := fusefs.NewDedicated(inst.fs, d.fuseOptions())
	sess, err := fusefs.Mount(d.o.Mountpoint, fsys)
	if err != nil {
		inst.closer()
		d.publishSession(nil, nil, false, nil)
		return err
	}
	insts := map[string]*instance{"/": inst}
	if !d.publishSession(fsys, sess, false, insts) {
		d.discard(sess, insts)
		return errClosed
	}
	d.serve(sess)
	d.SetState(api.StateRunning)
	d.o.Events(fetch.Event{Kind: "mount", Path: d.o.Mountpoint, BootstrapDigest: inst.digest, Image: inst.image})
	d.prefetch(inst, prefetchFiles)
	return nil
}

func (d *Daemon) fuseOptions() fusefs.Options {
	return fusefs.Options{Debug: d.o.Debug, Passthrough: d.o.Passthrough, Log: d.o.Log, Journal: d.o.OpenJournal}
}

// StartShared mounts an empty directory at the mountpoint; images are
// added below it with Mount.
func (d *Daemon) StartShared(ctx context.Context) error {
	if err := d.reserveSession(); err != nil {
		return err
	}
	fsys := fusefs.NewShared(d.fuseOptions())
	sess, err := fusefs.Mount(d.o.Mountpoint, fsys)
	if err != nil {
		d.publishSession(nil, nil, false, nil)
		return err
	}
	if !d.publishSession(fsys, sess, true, nil) {
		d.discard(sess, nil)
		return errClosed
	}
	d.serve(sess)
	d.SetState(api.StateRunning)
	return nil
}

// Mount adds an image below a shared daemon's mountpoint at sub
// ("/<snapshot id>").
func (d *Daemon) Mount(ctx context.Context, sub string, req api.MountRequest) error {
	name := strings.Trim(sub, "/")
	if name == "" || strings.Contains(name, "/") || name == "." || name == ".." {
		return errdefs.Errorf(errdefs.ErrInvalid, "invalid mountpoint %q: want /<name>", sub)
	}
	if req.FsType != "" && req.FsType != "rafs" {
		return errdefs.Errorf(errdefs.ErrInvalid, "unsupported fs_type %q (want rafs)", req.FsType)
	}
	cfg, unknown, err := api.ParseConfig([]byte(req.Config))
	if err != nil {
		return errdefs.Errorf(errdefs.ErrInvalid, "%w", err)
	}
	for _, u := range unknown {
		d.o.Log.Warn("ignoring unknown config field", "field", u)
	}
	for _, u := range cfg.Unimplemented() {
		d.o.Log.Warn("config field ignored", "field", u)
	}
	mp := "/" + name
	// The mountpoint is reserved (busy) while the image is opened and
	// added, unlocked; a concurrent Mount or Umount of it is refused.
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return errdefs.Errorf(errdefs.ErrConflict, "mount %s: %w", mp, errClosed)
	}
	if !d.shared {
		d.mu.Unlock()
		return errdefs.Errorf(errdefs.ErrInvalid, "the daemon serves one image (started with --bootstrap); mounts need a shared daemon")
	}
	if _, ok := d.mounts[mp]; ok {
		d.mu.Unlock()
		return errdefs.Errorf(errdefs.ErrConflict, "mountpoint %s is already mounted", mp)
	}
	if d.busy[mp] {
		d.mu.Unlock()
		return errdefs.Errorf(errdefs.ErrConflict, "mountpoint %s is being mounted or unmounted", mp)
	}
	d.busy[mp] = true
	fsys := d.fsys
	d.mu.Unlock()
	unreserve := func() {
		d.mu.Lock()
		delete(d.busy, mp)
		d.mu.Unlock()
	}
	inst, err := d.openImage(ctx, req.Source, cfg)
	if err != nil {
		unreserve()
		return err
	}
	if err := d.admit(mp, inst); err != nil {
		inst.closer()
		unreserve()
		return errdefs.Errorf(errdefs.ErrInvalid, "mount %s: %w", mp, err)
	}
	slot, err := fsys.Add(name, 0, inst.fs)
	if err != nil {
		inst.closer()
		unreserve()
		return errdefs.Errorf(errdefs.ErrConflict, "mountpoint %s: %w", mp, err)
	}
	inst.slot, inst.prefetchFiles, inst.shared = slot, req.PrefetchFiles, true
	d.mu.Lock()
	delete(d.busy, mp)
	closed := d.closed
	if !closed {
		d.mounts[mp] = inst
	}
	d.mu.Unlock()
	if closed {
		// Close took the mounts before this one was published: undo it,
		// as an umount would.
		fsys.Remove(name)
		inst.closer()
		if err := d.rec.drop(mp); err != nil {
			d.o.Log.Warn("mount: the mount record keeps the image", "mountpoint", mp, "err", err)
		}
		return errdefs.Errorf(errdefs.ErrConflict, "mount %s: %w", mp, errClosed)
	}
	d.o.Events(fetch.Event{Kind: "mount", Path: "/" + name, BootstrapDigest: inst.digest, Image: inst.image})
	d.prefetch(inst, req.PrefetchFiles)
	return nil
}

// Umount removes an image from a shared daemon.
func (d *Daemon) Umount(ctx context.Context, sub string) error {
	name := strings.Trim(sub, "/")
	mp := "/" + name
	d.mu.Lock()
	inst, ok := d.mounts[mp]
	if !ok || !d.shared {
		d.mu.Unlock()
		return errdefs.Errorf(errdefs.ErrNotFound, "mountpoint %s is not mounted", mp)
	}
	// Busy until the image is gone and the record forgets it: a Mount
	// of the mountpoint meanwhile is refused.
	delete(d.mounts, mp)
	d.busy[mp] = true
	fsys := d.fsys
	d.mu.Unlock()
	fsys.Remove(name)
	inst.closer()
	if err := d.rec.drop(mp); err != nil {
		d.o.Log.Warn("umount: the mount record keeps the image", "mountpoint", mp, "err", err)
	}
	d.mu.Lock()
	delete(d.busy, mp)
	d.mu.Unlock()
	d.o.Events(fetch.Event{Kind: "umount", Path: "/" + name, BootstrapDigest: inst.digest, Image: inst.image})
	return nil
}

// admit checks a bootstrap being mounted at the API mountpoint mp
// against the mount record (a restart refuses a bootstrap that changed
// since it was mounted, with a bootstrap-changed event), and records it.
func (d *Daemon) admit(mp string, inst *instance) error {
	err := d.rec.admit(mp, inst.bootstrap, inst.digest)
	var cb *changedBootstrap
	if errors.As(err, &cb) {
		d.refused(mp, inst, cb)
	}
	return err
}

// refused reports a bootstrap refused because it changed since it was
// mounted.
func (d *Daemon) refused(mp string, inst *instance, cb *changedBootstrap) {
	d.o.Log.Error("refusing a bootstrap that changed since it was mounted", "mountpoint", mp, "bootstrap", cb.bootstrap, "then", cb.then, "now", cb.now)
	path := mp
	if mp == "/" {
		path = d.o.Mountpoint // dedicated: named as its mount event names it
	}
	d.o.Events(fetch.Event{Kind: "bootstrap-changed", Path: path, BootstrapDigest: inst.digest, Image: inst.image,
		Err: fmt.Sprintf("bootstrap %s was %s when it was mounted", cb.bootstrap, cb.then)})
}

// Instances returns the mounted images by API mountpoint.
func (d *Daemon) Instances() map[string]*nfs.FS {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]*nfs.FS{}
	for k, v := range d.mounts {
		out[k] = v.fs
	}
	return out
}

// backends returns each mounted image's backend, by mountpoint.
func (d *Daemon) backends() map[string]fetch.Backend {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]fetch.Backend{}
	for k, v := range d.mounts {
		out[k] = v.be
	}
	return out
}

// authSetter is a backend whose registry credentials can be renewed.
type authSetter interface {
	SetAuth(ctx context.Context, auth string) error
}

// SetRegistryAuth renews the registry credentials (base64 "user:password")
// of the image mounted at id ("/" in dedicated mode, "/NAME" in shared
// mode; "" for every registry-backed image), as nydus-snapshotter's
// PUT /api/v1/config {"registry_auth"} asks.
//
// An empty auth is refused: it would silently turn the mount anonymous,
// and a token that expired is renewed, never removed.
func (d *Daemon) SetRegistryAuth(ctx context.Context, id, auth string) error {
	if auth == "" {
		return errdefs.Errorf(errdefs.ErrInvalid, "registry_auth is empty: refusing to drop the mount's credentials (send base64 user:password)")
	}
	d.mu.Lock()
	var targets []authSetter
	found := false
	for mp, inst := range d.mounts {
		if id != "" && id != mp {
			continue
		}
		found = true
		if a, ok := inst.be.(authSetter); ok {
			targets = append(targets, a)
		}
	}
	d.mu.Unlock()
	if !found {
		return errdefs.Errorf(errdefs.ErrNotFound, "no image mounted at %q", id)
	}
	for _, a := range targets {
		if err := a.SetAuth(ctx, auth); err != nil {
			return errdefs.Errorf(errdefs.ErrInvalid, "registry_auth: %w", err)
		}
	}
	return nil
}

// serve starts answering on sess and watches for its end.
func (d *Daemon) serve(sess *fusefs.Session) {
	sess.Serve()
	go func() {
		<-sess.Done()
		d.endOnce.Do(func() { close(d.ended) })
	}()
}

// Ended is closed when the FUSE connection the daemon serves ends
// (unmounted or aborted).
func (d *Daemon) Ended() <-chan struct{} { return d.ended }

// Close unmounts everything, unless the daemon handed its connection to
// a successor (PUT /api/v1/daemon/exit in a hot upgrade): then the mount
// stays and only background work stops.
//
// After a handover this process still shares the FUSE connection with
// its successor until it exits: a request it reads in that window must
// be answered from open images, not with EIO. So the images, caches and
// their descriptors and locks stay open for the kernel to release at
// exit; a request read but not answered before the exit is resent when
// the successor starts (PUT /api/v1/daemon/start, failover policy
// resend), which is why the successor starts after its predecessor
// exited, the order nydus-snapshotter uses.
//
// A Mount, MountDedicated, StartShared or takeover still in progress
// when Close begins undoes its own work and fails (errClosed), as does a
// cache still being opened.
func (d *Daemon) Close() error {
	d.mu.Lock()
	d.closed = true
	sess := d.sess
	d.sess = nil
	insts := d.mounts
	d.mounts = map[string]*instance{}
	d.mu.Unlock()
	if d.exiting.Load() {
		for _, i := range insts {
			i.stopPrefetch()
		}
		d.SetState(api.StateStopped)
		return nil
	}
	err := d.teardown(sess, insts)
	d.mu.Lock()
	caches := d.openCachesLocked()
	d.caches = map[string]*cacheSlot{}
	d.mu.Unlock()
	for _, c := range caches {
		c.Close()
	}
	d.SetState(api.StateStopped)
	return err
}

// teardown unmounts sess (if any) and closes insts; Daemon.mu is not
// held.
func (d *Daemon) teardown(sess *fusefs.Session, insts map[string]*instance) error {
	var err error
	if sess != nil {
		err = sess.Unmount()
	}
	for mp, i := range insts {
		i.closer()
		// The mount ended: a daemon started later may mount another
		// version of the bootstrap. A failed unmount keeps the record
		// (as does a handover, see Close) for the successor.
		if err == nil {
			if derr := d.rec.drop(mp); derr != nil {
				d.o.Log.Warn("stop: the mount record keeps the image", "mountpoint", mp, "err", derr)
			}
		}
	}
	return err
}

// reserveSession reserves the daemon's FUSE connection for a
// MountDedicated, StartShared or takeover, which sets it up unlocked and
// ends the reservation with publishSession.
func (d *Daemon) reserveSession() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errClosed
	}
	if d.sess != nil || d.starting {
		return errdefs.Errorf(errdefs.ErrConflict, "the daemon serves %s already", d.o.Mountpoint)
	}
	d.starting = true
	return nil
}

// publishSession ends the reservation of reserveSession and, unless sess
// is nil (the setup failed) or the daemon was closed meanwhile,
// publishes the connection and its mounts; it reports whether it did.
// The caller undoes a setup that was not published (discard).
func (d *Daemon) publishSession(fsys *fusefs.FileSystem, sess *fusefs.Session, shared bool, insts map[string]*instance) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.starting = false
	if sess == nil || d.closed {
		return false
	}
	d.fsys, d.sess, d.shared = fsys, sess, shared
	for mp, inst := range insts {
		d.mounts[mp] = inst
	}
	return true
}

// discard undoes a setup that Close overtook, as Close would have had
// it been published: unmounted and closed (after a handover, Exit, the
// mount is the successor's: only the images are closed).
func (d *Daemon) discard(sess *fusefs.Session, insts map[string]*instance) {
	if d.exiting.Load() {
		for _, i := range insts {
			i.closer()
		}
		return
	}
	if err := d.teardown(sess, insts); err != nil {
		d.o.Log.Warn("stop: unmounting a mount set up while the daemon stopped", "mountpoint", d.o.Mountpoint, "err", err)
	}
}

// fetchLogSize is how many backend fetches an image with access_pattern
// keeps for GET /api/v1/metrics/fetches (about 2.5 MiB at most).
const fetchLogSize = 16384

// defaultAmplify is upstream's default amplify_io.
const defaultAmplify = 1 << 20

// amplify returns how far a miss is extended to the following chunks of
// its blob in the same request: amplify_io (0 turns it off), upstream's
// 1 MiB when unset.
func amplify(cfg *api.ConfigV1) int64 {
	if cfg.AmplifyIO == nil {
		return defaultAmplify
	}
	return int64(*cfg.AmplifyIO)
}

// readAhead is how far past a fetched chunk sequential reads fetch in the
// background: amplify_io, but at least 4 MiB.
func readAhead(cfg *api.ConfigV1) int64 {
	ra := int64(4 << 20)
	if cfg.AmplifyIO != nil && int64(*cfg.AmplifyIO) > ra {
		ra = int64(*cfg.AmplifyIO)
	}
	return ra
}
