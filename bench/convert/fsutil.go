package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/nydus-go/nydus/internal/sysproc"
)

// removeTree unmounts whatever is mounted at or below dir and removes
// it; it refuses to remove a tree that still holds a mount point, so
// that a bind of /dev is never descended into.
func removeTree(dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	if err := sysproc.UnmountUnder(abs); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	if ms := sysproc.MountsUnder(abs); len(ms) > 0 {
		return fmt.Errorf("remove %s: still mounted: %v", dir, ms)
	}
	return os.RemoveAll(abs)
}

// touch creates path or sets its modification time to now.
func touch(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	now := time.Now()
	return os.Chtimes(path, now, now)
}

// newer reports whether a exists and was modified after b, or b does
// not exist (test's -nt).
func newer(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	if err != nil {
		return true
	}
	return sa.ModTime().After(sb.ModTime())
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
