package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"github.com/nydus-go/nydus/internal/atomicfile"
)

// mountRecord is the durable list of what a daemon has mounted: for each
// API mountpoint, the bootstrap and its digest when it was first
// mounted. It lives beside the API socket (Options.MountRecord), so that
// a daemon restarted on the same socket (the snapshotter's
// recover_policy "restart", or a crash and a manual restart) finds it,
// and refuses to mount, at the same mountpoint, the same bootstrap file
// with other content. A takeover checks the digest its predecessor sent
// (failoverState) the same way.
//
// An umount drops the mountpoint's entry; a stop keeps them all (the
// restart needs them). Mounting another bootstrap file at a mountpoint
// replaces its entry.
type mountRecord struct {
	path string // "" keeps nothing

	mu sync.Mutex // guards the file (load, change, store): held across its I/O; never with Daemon.mu
}

// recordedMount is one entry of a mount record.
type recordedMount struct {
	Bootstrap string `json:"bootstrap"`
	Digest    string `json:"bootstrap_digest"`
}

// load reads the record; a missing file is an empty record.
func (r *mountRecord) load() (map[string]recordedMount, error) {
	m := map[string]recordedMount{}
	b, err := os.ReadFile(r.path)
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mount record: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("mount record %s: %w", r.path, err)
	}
	return m, nil
}

// store writes the record atomically (removing it when empty).
func (r *mountRecord) store(m map[string]recordedMount) error {
	if len(m) == 0 {
		if err := os.Remove(r.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("mount record: %w", err)
		}
		return nil
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(r.path, b, 0o600); err != nil {
		return fmt.Errorf("mount record: %w", err)
	}
	return nil
}

// admit checks a mount of bootstrap, whose content has digest, at the
// API mountpoint mp against the record, and records it. A record it
// cannot read refuses the mount: it may hold the digest to check.
func (r *mountRecord) admit(mp, bootstrap, digest string) error {
	return r.update(func(m map[string]recordedMount) (bool, error) {
		if old, ok := m[mp]; ok && old.Bootstrap == bootstrap {
			if old.Digest != digest {
				return false, &changedBootstrap{bootstrap: bootstrap, then: old.Digest, now: digest}
			}
			return false, nil
		}
		m[mp] = recordedMount{Bootstrap: bootstrap, Digest: digest}
		return true, nil
	})
}

// drop removes mp's entry (an umount).
func (r *mountRecord) drop(mp string) error {
	return r.update(func(m map[string]recordedMount) (bool, error) {
		_, ok := m[mp]
		delete(m, mp)
		return ok, nil
	})
}

// update loads the record, lets fn change it, and stores it if fn says
// it changed.
func (r *mountRecord) update(fn func(map[string]recordedMount) (changed bool, err error)) error {
	if r.path == "" {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	m, err := r.load()
	if err != nil {
		return err
	}
	changed, err := fn(m)
	if err != nil || !changed {
		return err
	}
	return r.store(m)
}

// changedBootstrap is the refusal of a bootstrap whose content differs
// from what it was when it was mounted.
type changedBootstrap struct {
	bootstrap, then, now string
}

func (e *changedBootstrap) Error() string {
	return fmt.Sprintf("bootstrap %s changed since it was mounted: %s then, %s now; refusing it", e.bootstrap, e.then, e.now)
}
