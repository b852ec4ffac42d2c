// Package errdefs holds the error kinds shared by every package of
// Nydus-Go: what went wrong, independent of where. Packages wrap them
// (with %w) into errors that name the file, entry, offset, field or
// registry at fault; only the edges translate a kind, once: to a FUSE
// errno (pkg/fusefs), an HTTP status (pkg/daemon's API) or an exit code
// (cmd/).
//
// Each kind also matches its io/fs or errors counterpart with
// errors.Is, so code written against the standard library keeps
// working: ErrNotFound is fs.ErrNotExist, ErrPermission is
// fs.ErrPermission, ErrInvalid is fs.ErrInvalid and ErrUnsupported is
// errors.ErrUnsupported.
//
// Entry points: the kinds ([ErrNotFound], [ErrInvalid], [ErrCorrupt],
// [ErrUnsupported] and the others below), tested with [errors.Is], and
// [New], which makes a package's own sentinel error that matches a kind.
package errdefs

import (
	"errors"
	"fmt"
	"io/fs"
)

// kind is an error kind: a sentinel with a short message that also
// matches its standard-library counterpart, if any.
type kind struct {
	msg string
	std error
}

func (k *kind) Error() string { return k.msg }

// Is reports whether target is the kind's standard-library counterpart.
func (k *kind) Is(target error) bool { return k.std != nil && target == k.std }

// The error kinds.
var (
	// ErrNotFound: an image, blob, file, chunk or route does not exist
	// (HTTP 404, ENOENT). Matches fs.ErrNotExist.
	ErrNotFound error = &kind{"not found", fs.ErrNotExist}
	// ErrPermission: the caller may not do this (HTTP 401/403, EACCES).
	// Matches fs.ErrPermission.
	ErrPermission error = &kind{"permission denied", fs.ErrPermission}
	// ErrInvalid: a bad argument, request or configuration (HTTP 400,
	// EINVAL). Matches fs.ErrInvalid.
	ErrInvalid error = &kind{"invalid argument", fs.ErrInvalid}
	// ErrUnsupported: valid, but not implemented or not supported here
	// (HTTP 501, ENOTSUP). Matches errors.ErrUnsupported.
	ErrUnsupported error = &kind{"not supported", errors.ErrUnsupported}
	// ErrCorrupt: data failed a digest check or does not parse (EIO).
	ErrCorrupt error = &kind{"corrupt data", nil}
	// ErrUnavailable: a backend, registry or daemon cannot be reached or
	// answered with a server error; retrying later may work (HTTP 503,
	// EIO).
	ErrUnavailable error = &kind{"unavailable", nil}
	// ErrConflict: the operation conflicts with the current state, such
	// as mounting where something is mounted (HTTP 409, EEXIST).
	ErrConflict error = &kind{"conflict", nil}
)

// sentinel is a package's own sentinel error of a kind.
type sentinel struct {
	msg  string
	kind error
}

func (s *sentinel) Error() string        { return s.msg }
func (s *sentinel) Is(target error) bool { return errors.Is(s.kind, target) }

// New returns a sentinel error with its own message that matches kind
// (and kind's standard-library counterpart) with errors.Is: for a
// package whose errors say more than the kind, such as "corrupt blob
// data".
func New(kind error, msg string) error { return &sentinel{msg: msg, kind: kind} }

// kindError is an error of a kind: its message and cause are err's.
type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.err, e.kind} }

// Errorf formats an error as fmt.Errorf does (%w wraps a cause) and
// makes it of kind: errors.Is matches both the kind and the cause, and
// the message is the formatted one, without the kind's.
func Errorf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, err: fmt.Errorf(format, args...)}
}
