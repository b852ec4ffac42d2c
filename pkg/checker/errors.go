package checker

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Sentinel errors, wrapped by the one-line errors Check returns.
var (
	// ErrNotNydus reports a target that is not a Nydus image.
	ErrNotNydus = errors.New("not a Nydus image")
	// ErrSourceIsNydus reports a source that is itself a Nydus image.
	ErrSourceIsNydus = errors.New("source is a Nydus image")
	// ErrNoPlatform reports an index without a manifest for a requested
	// platform.
	ErrNoPlatform = errors.New("no manifest for the requested platform")
	// ErrNotFound reports an image or blob the registry does not have
	// (HTTP 404).
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized reports HTTP 401 or 403 from the registry.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrUnreachable reports a registry that cannot be connected to.
	ErrUnreachable = errors.New("registry unreachable")
	// ErrNotSupported reports a requested feature that is not available.
	ErrNotSupported = errors.New("not supported yet")
)

// checkError is a one-line error that still unwraps to its kind (one of
// the sentinels above) and to the underlying error.
type checkError struct {
	msg  string
	kind error
	err  error
}

func (e *checkError) Error() string { return e.msg }

func (e *checkError) Unwrap() []error {
	var out []error
	if e.kind != nil {
		out = append(out, e.kind)
	}
	if e.err != nil {
		out = append(out, e.err)
	}
	return out
}

func newError(kind, err error, format string, args ...any) error {
	return &checkError{msg: oneLine(fmt.Sprintf(format, args...)), kind: kind, err: err}
}

// oneLine folds a multi-line message into one line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.Join(strings.Fields(s), " ")
}

// describeRemote turns a go-containerregistry or transport error about
// what (e.g. `target "host/repo:tag"`) into a short one-line error.
func describeRemote(what, host string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return newError(nil, err, "%s: %v", what, err)
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
			return newError(ErrUnauthorized, err, "%s: registry %s requires authentication: HTTP 401 Unauthorized%s; log in (docker login %s) or check the credentials", what, host, detail, host)
		case http.StatusForbidden:
			return newError(ErrUnauthorized, err, "%s: registry %s denied access: HTTP 403 Forbidden%s", what, host, detail)
		case http.StatusNotFound:
			return newError(ErrNotFound, err, "%s: not found in registry %s: HTTP 404%s", what, host, detail)
		}
		return newError(nil, err, "%s: registry %s answered HTTP %d %s%s", what, host, te.StatusCode, http.StatusText(te.StatusCode), detail)
	}
	if errors.Is(err, http.ErrSchemeMismatch) {
		return newError(ErrUnreachable, err, "%s: registry %s speaks plain HTTP, not HTTPS: use plain HTTP (--plain-http) or --*-insecure", what, host)
	}
	var ue x509.UnknownAuthorityError
	var he x509.HostnameError
	var ce x509.CertificateInvalidError
	if errors.As(err, &ue) || errors.As(err, &he) || errors.As(err, &ce) {
		return newError(ErrUnreachable, err, "%s: TLS certificate of registry %s not trusted: %v (use --*-insecure to skip verification)", what, host, innermost(err))
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return newError(ErrUnreachable, err, "%s: registry %s unreachable: cannot resolve host %s", what, host, dns.Name)
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return newError(ErrUnreachable, err, "%s: registry %s unreachable: %v", what, host, op.Err)
	}
	return newError(nil, err, "%s: %v", what, err)
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
