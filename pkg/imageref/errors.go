package imageref

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/nydus-go/nydus/pkg/errdefs"
)

// Error is a one-line error that unwraps to its kind (an errdefs kind
// or a caller's sentinel) and to the error it describes.
type Error struct {
	msg  string
	kind error
	err  error
}

// Error returns the one-line message.
func (e *Error) Error() string { return e.msg }

// Unwrap returns the kind and the described error.
func (e *Error) Unwrap() []error {
	var out []error
	if e.kind != nil {
		out = append(out, e.kind)
	}
	if e.err != nil {
		out = append(out, e.err)
	}
	return out
}

// Errorf returns an Error of the given kind (nil: none) describing err
// (nil: none), with the formatted message folded into one line.
func Errorf(kind, err error, format string, args ...any) error {
	return &Error{msg: OneLine(fmt.Sprintf(format, args...)), kind: kind, err: err}
}

// OneLine folds a multi-line message into one line.
func OneLine(s string) string {
	s = strings.TrimSpace(s)
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.Join(strings.Fields(s), " ")
}

// Describe turns a go-containerregistry or transport error about what
// (e.g. `target "host/repo:tag"`) at registry host into a one-line
// Error: HTTP 401/403 are ErrPermission (with a hint to log in), 404 is
// ErrNotFound, an unreachable registry, a TLS failure or a scheme
// mismatch are ErrUnavailable.
func Describe(what, host string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return Errorf(nil, err, "%s: %v", what, err)
	}
	var te *transport.Error
	if errors.As(err, &te) {
		var codes []string
		for _, d := range te.Errors {
			s := string(d.Code)
			if d.Message != "" {
				s += " " + d.Message
			}
			codes = append(codes, s)
		}
		detail := ""
		if len(codes) > 0 {
			detail = " (" + strings.Join(codes, "; ") + ")"
		}
		switch te.StatusCode {
		case http.StatusUnauthorized:
			return Errorf(errdefs.ErrPermission, err, "%s: registry %s requires authentication: HTTP 401 Unauthorized%s; log in (docker login %s) or check the credentials", what, host, detail, host)
		case http.StatusForbidden:
			return Errorf(errdefs.ErrPermission, err, "%s: registry %s denied access: HTTP 403 Forbidden%s", what, host, detail)
		case http.StatusNotFound:
			return Errorf(errdefs.ErrNotFound, err, "%s: not found in registry %s: HTTP 404%s", what, host, detail)
		}
		kind := error(nil)
		if te.StatusCode >= 500 {
			kind = errdefs.ErrUnavailable
		}
		return Errorf(kind, err, "%s: registry %s answered HTTP %d %s%s", what, host, te.StatusCode, http.StatusText(te.StatusCode), detail)
	}
	if errors.Is(err, http.ErrSchemeMismatch) {
		return Errorf(errdefs.ErrUnavailable, err, "%s: registry %s speaks plain HTTP, not HTTPS: use plain HTTP (--plain-http) or --*-insecure", what, host)
	}
	var ue x509.UnknownAuthorityError
	var he x509.HostnameError
	var ce x509.CertificateInvalidError
	if errors.As(err, &ue) || errors.As(err, &he) || errors.As(err, &ce) {
		return Errorf(errdefs.ErrUnavailable, err, "%s: TLS certificate of registry %s not trusted: %v (use --*-insecure to skip verification)", what, host, innermost(err))
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return Errorf(errdefs.ErrUnavailable, err, "%s: registry %s unreachable: cannot resolve host %s", what, host, dns.Name)
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return Errorf(errdefs.ErrUnavailable, err, "%s: registry %s unreachable: %v", what, host, op.Err)
	}
	return Errorf(nil, err, "%s: %v", what, err)
}

// innermost returns the deepest error of a single-unwrap chain.
func innermost(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}
