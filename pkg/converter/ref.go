package converter

import (
	"archive/tar"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Ref locates an image: a registry reference, an OCI layout directory
// (`oci:DIR[:TAG]`, our extension) or an OCI layout tar archive
// (upstream's --source-archive/--target-archive).
type Ref struct {
	// Name is the registry reference, when the image is in a registry.
	Name name.Reference
	// Dir and Tag locate an image in an OCI layout directory.
	Dir, Tag string
	// Archive is an OCI layout tar archive.
	Archive string
	raw     string
}

// String returns the reference as given.
func (r Ref) String() string { return r.raw }

// IsRegistry reports whether the image lives in a registry.
func (r Ref) IsRegistry() bool { return r.Name != nil }

// RegistryOptions configure registry access.
type RegistryOptions struct {
	// Keychain supplies credentials (default: Docker's config.json and
	// credential helpers through authn.DefaultKeychain).
	Keychain authn.Keychain
	// PlainHTTP talks HTTP instead of HTTPS (needed for 127.0.0.1 too).
	PlainHTTP bool
	// SkipTLSVerify disables certificate verification.
	SkipTLSVerify bool
	// Retries is the number of retries of a failed request (0 means
	// the default, 3), with exponential backoff from RetryDelay (default
	// 1 s).
	Retries    int
	RetryDelay time.Duration
	// Jobs is the number of concurrent blob uploads.
	Jobs int
	// Transport, when set, replaces the base HTTP transport (and so
	// SkipTLSVerify, ConnectTimeout and ResponseHeaderTimeout, which
	// configure the default one); IdleTimeout still applies.
	Transport http.RoundTripper
	// ConnectTimeout bounds TCP connection and TLS handshake (default
	// DefaultConnectTimeout).
	ConnectTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for a response's headers once
	// the request is sent (default DefaultResponseHeaderTimeout): a
	// registry that accepts connections and never answers fails.
	ResponseHeaderTimeout time.Duration
	// IdleTimeout fails a transfer whose body sends nothing for this long
	// (default DefaultIdleTimeout).
	IdleTimeout time.Duration
}

// Default network timeouts of RegistryOptions.
const (
	DefaultConnectTimeout        = 10 * time.Second
	DefaultResponseHeaderTimeout = 30 * time.Second
	DefaultIdleTimeout           = 60 * time.Second
)

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// ParseRef parses an image reference. `oci:DIR[:TAG]` names an OCI
// layout directory; with archive set, s is an OCI layout tar file.
func ParseRef(s string, archive bool, ro RegistryOptions) (Ref, error) {
	if archive {
		return Ref{Archive: s, raw: s}, nil
	}
	if rest, ok := strings.CutPrefix(s, "oci:"); ok {
		dir, tag := rest, ""
		if i := strings.LastIndexByte(rest, ':'); i > 0 && !strings.Contains(rest[i:], "/") {
			dir, tag = rest[:i], rest[i+1:]
		}
		if dir == "" {
			return Ref{}, fmt.Errorf("invalid reference %q: empty OCI layout directory", s)
		}
		return Ref{Dir: dir, Tag: tag, raw: s}, nil
	}
	var opts []name.Option
	if ro.PlainHTTP {
		opts = append(opts, name.Insecure)
	}
	n, err := name.ParseReference(s, opts...)
	if err != nil {
		return Ref{}, fmt.Errorf("invalid image reference %q: %w", s, err)
	}
	return Ref{Name: n, raw: s}, nil
}

// Remote returns the go-containerregistry options for ro.
func (ro RegistryOptions) Remote(ctx context.Context) []remote.Option {
	kc := ro.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	connect := orDefault(ro.ConnectTimeout, DefaultConnectTimeout)
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.DialContext = (&net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}).DialContext
	base.TLSHandshakeTimeout = connect
	base.ResponseHeaderTimeout = orDefault(ro.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)
	if ro.SkipTLSVerify {
		base.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	}
	var rt http.RoundTripper = base
	if ro.Transport != nil {
		rt = ro.Transport
	}
	rt = &idleTimeoutTransport{rt: rt, idle: orDefault(ro.IdleTimeout, DefaultIdleTimeout)}
	retries := ro.Retries
	if retries <= 0 {
		retries = 3
	}
	delay := ro.RetryDelay
	if delay <= 0 {
		delay = time.Second
	}
	jobs := ro.Jobs
	if jobs <= 0 {
		jobs = 4
	}
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(kc),
		remote.WithTransport(rt),
		remote.WithRetryBackoff(remote.Backoff{Duration: delay, Factor: 2, Jitter: 0.1, Steps: retries + 1}),
		remote.WithRetryStatusCodes(http.StatusRequestTimeout, http.StatusTooManyRequests,
			http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout),
		remote.WithJobs(jobs),
		remote.WithUserAgent("nydus-go"),
	}
}

// idleTimeoutTransport cancels a request whose response body sends
// nothing for idle: http.Transport bounds connecting and the headers, but
// not a body that stalls.
type idleTimeoutTransport struct {
	rt   http.RoundTripper
	idle time.Duration
}

func (t *idleTimeoutTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	resp, err := t.rt.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel(nil)
		return nil, err
	}
	b := &idleBody{rc: resp.Body, cancel: cancel, idle: t.idle, host: req.URL.Host}
	b.timer = time.AfterFunc(t.idle, b.expire)
	resp.Body = b
	return resp, nil
}

// errIdle is the cause of a transfer cancelled by IdleTimeout.
var errIdle = errors.New("transfer idle")

type idleBody struct {
	rc     io.ReadCloser
	cancel context.CancelCauseFunc
	timer  *time.Timer
	idle   time.Duration
	host   string
	fired  atomic.Bool
}

func (b *idleBody) expire() {
	b.fired.Store(true)
	b.cancel(errIdle)
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.timer.Reset(b.idle)
	}
	if err != nil && err != io.EOF && b.fired.Load() {
		err = fmt.Errorf("%s sent nothing for %s: %w", b.host, b.idle, err)
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	err := b.rc.Close()
	b.cancel(nil)
	return err
}

// source is a resolved source image or index.
type source struct {
	ref    Ref
	index  v1.ImageIndex // set for an index
	image  v1.Image      // set for a single image
	digest v1.Hash
	mt     types.MediaType
	// repo is the registry repository, for cross-repository mounts.
	repo  *name.Repository
	close func()
}

// openSource resolves a reference.
func openSource(ctx context.Context, ref Ref, ro RegistryOptions, workDir string) (*source, error) {
	switch {
	case ref.Name != nil:
		desc, err := remote.Get(ref.Name, ro.Remote(ctx)...)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", ref, describeRemoteErr(err))
		}
		repo := ref.Name.Context()
		s := &source{ref: ref, digest: desc.Digest, mt: desc.MediaType, repo: &repo, close: func() {}}
		if desc.MediaType.IsIndex() {
			if s.index, err = desc.ImageIndex(); err != nil {
				return nil, fmt.Errorf("resolve %s: %w", ref, err)
			}
		} else if desc.MediaType.IsImage() {
			if s.image, err = desc.Image(); err != nil {
				return nil, fmt.Errorf("resolve %s: %w", ref, err)
			}
		} else {
			return nil, fmt.Errorf("resolve %s: unsupported manifest media type %q", ref, desc.MediaType)
		}
		return s, nil
	case ref.Dir != "":
		return openLayout(ref, ref.Dir, func() {})
	case ref.Archive != "":
		dir, err := os.MkdirTemp(workDir, "source-archive-")
		if err != nil {
			return nil, err
		}
		if err := untar(ref.Archive, dir); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("source archive %s: %w", ref.Archive, err)
		}
		return openLayout(ref, dir, func() { os.RemoveAll(dir) })
	}
	return nil, errors.New("empty source reference")
}

func openLayout(ref Ref, dir string, closeFn func()) (*source, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		closeFn()
		return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		closeFn()
		return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		closeFn()
		return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	var pick *v1.Descriptor
	for i, d := range im.Manifests {
		if ref.Tag == "" || d.Annotations["org.opencontainers.image.ref.name"] == ref.Tag {
			if pick != nil && ref.Tag == "" {
				closeFn()
				return nil, fmt.Errorf("OCI layout %s holds several images; name one with oci:%s:TAG", dir, dir)
			}
			pick = &im.Manifests[i]
		}
	}
	if pick == nil {
		closeFn()
		return nil, fmt.Errorf("OCI layout %s has no image tagged %q", dir, ref.Tag)
	}
	s := &source{ref: ref, digest: pick.Digest, mt: pick.MediaType, close: closeFn}
	if pick.MediaType.IsIndex() {
		s.index, err = idx.ImageIndex(pick.Digest)
	} else {
		s.image, err = idx.Image(pick.Digest)
	}
	if err != nil {
		closeFn()
		return nil, fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	return s, nil
}

// untar extracts an OCI layout archive, refusing paths that escape dir.
func untar(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			out, err := os.Create(p)
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, tr); err != nil {
				out.Close()
				return err
			}
			if err := out.Close(); err != nil {
				return err
			}
		}
	}
}

// describeRemoteErr shortens go-containerregistry errors to one line.
func describeRemoteErr(err error) error {
	return err
}
