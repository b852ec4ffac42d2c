// Package registry reads blobs from OCI distribution registries with HTTP
// Range requests, through go-containerregistry's authenticating transport
// (token flow, basic auth, redirects to blob storage). It is the storage
// backend of `nydus-image unpack --backend-type registry`, and of the
// converter and the daemon.
//
// Entry points: [New] makes a [Client] for one registry from a [Config]
// (mirrors, proxy, TLS and auth), [NewForRepository] one for a
// go-containerregistry repository; [Client.ReadRange], [Client.OpenRange]
// and [Client.ReadRanges] read byte ranges of a blob, and [Client.ReaderAt]
// wraps one as an io.ReaderAt.
package registry

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Config is the registry backend configuration, with the field names of
// upstream nydusd's `device.backend.config` (v1) / `backend.registry` (v2).
type Config struct {
	// Host is the registry host[:port], e.g. "127.0.0.1:5000".
	Host string `json:"host"`
	// Repo is the repository, e.g. "library/debian".
	Repo string `json:"repo"`
	// Scheme is "https" (default) or "http".
	Scheme string `json:"scheme,omitempty"`
	// Auth is base64("user:password").
	Auth string `json:"auth,omitempty"`
	// RegistryToken is a bearer token used as is.
	RegistryToken string `json:"registry_token,omitempty"`
	// SkipVerify disables TLS certificate verification and allows a
	// fallback to plain HTTP, as upstream does.
	SkipVerify bool `json:"skip_verify,omitempty"`
	// CACertFiles are PEM files of certificate authorities trusted
	// besides the system's (upstream's ca_cert_files).
	CACertFiles []string `json:"ca_cert_files,omitempty"`
	// Timeout bounds one request, in seconds (default 5, as upstream).
	Timeout int `json:"timeout,omitempty"`
	// ConnectTimeout bounds connection setup, in seconds.
	ConnectTimeout int `json:"connect_timeout,omitempty"`
	// RetryLimit is the number of retries of a failed read.
	RetryLimit int `json:"retry_limit,omitempty"`
	// BlobURLScheme and BlobRedirectedHost, when set, replace the scheme
	// and the host of the URL a blob request is redirected to (a CDN or
	// object store), as upstream's blob_url_scheme and
	// blob_redirected_host do.
	BlobURLScheme      string `json:"blob_url_scheme,omitempty"`
	BlobRedirectedHost string `json:"blob_redirected_host,omitempty"`
	// Proxy, when set with a URL, sends the registry's requests through
	// an HTTP proxy (Dragonfly's dfdaemon), with health checks and
	// fallback (ProxyConfig).
	Proxy *ProxyConfig `json:"-"`
	// Mirrors, tried in order before the registry itself for blobs and
	// manifests (MirrorConfig). A config may have a proxy or mirrors,
	// not both, as upstream's.
	Mirrors []MirrorConfig `json:"-"`
	// Log receives the proxy's health changes and fallbacks (nil: none).
	Log *slog.Logger `json:"-"`
}

// String describes the configuration without credentials.
func (c Config) String() string {
	return fmt.Sprintf("%s://%s/%s", c.scheme(), c.Host, c.Repo)
}

func (c Config) scheme() string {
	if c.Scheme == "" {
		return "https"
	}
	return c.Scheme
}

// maxIdlePerHost is how many idle connections a Client keeps to its
// registry: enough for nydusd's concurrent readers, read-ahead and
// prefetch workers.
const maxIdlePerHost = 32

// Client reads blobs of one repository.
type Client struct {
	cfg   Config
	repo  name.Repository
	base  string
	httpc *http.Client
	// swapped holds the client after SetAuth (nil: httpc).
	swapped atomic.Pointer[http.Client]
	newRT   func(ctx context.Context, auth authn.Authenticator) (http.RoundTripper, error)
	// ignoresRange is set once the server answered a range with the
	// whole object; onIgnoredRange (nil: none) is called then, once.
	ignoresRange   atomic.Bool
	onIgnoredRange func()
	// singleRanges is set once the server refused a multi-range request
	// (400 or 416): every later one is sent as single ranges.
	singleRanges atomic.Bool
	// multiWhole is set once the server answered a multi-range request
	// with the whole blob: later ones are sent as single ranges unless
	// the server ignores those too (ignoresRange).
	multiWhole atomic.Bool
	// proxy routes requests through Config.Proxy; nil without one.
	proxy *proxyTransport
	// mirrors routes requests to Config.Mirrors; nil without them.
	mirrors *mirrorTransport
}

// Close stops the proxy's and the mirrors' health checks. The client
// must not be used afterwards.
func (c *Client) Close() {
	if c.proxy != nil {
		c.proxy.close()
	}
	if c.mirrors != nil {
		c.mirrors.close()
	}
}

// MirrorStats reports what each mirror has done, in the configured
// order (nil without mirrors).
func (c *Client) MirrorStats() []MirrorStats {
	if c.mirrors == nil {
		return nil
	}
	return c.mirrors.stats()
}

// ProxyStats reports how many requests went through the proxy and how
// many fell back to the registry (zero without a proxy).
func (c *Client) ProxyStats() (proxied, fellBack int64) {
	if c.proxy == nil {
		return 0, 0
	}
	return c.proxy.proxied.Load(), c.proxy.fellBack.Load()
}

// IgnoresRange reports whether the server has answered a Range request
// with the whole object. Each such read costs the transfer of the blob up
// to the range's end (streamed, not kept), so callers should prefer fewer,
// larger reads.
func (c *Client) IgnoresRange() bool { return c.ignoresRange.Load() }

// OnIgnoredRange sets a function called once, when the server is first
// seen ignoring Range (for a warning in the caller's log).
func (c *Client) OnIgnoredRange(fn func()) { c.onIgnoredRange = fn }

// New returns a client for cfg. Authentication happens lazily, on the
// first request.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Host == "" || cfg.Repo == "" {
		return nil, errors.New("registry backend: host and repo are required")
	}
	switch cfg.scheme() {
	case "http", "https":
	default:
		return nil, fmt.Errorf("registry backend: invalid scheme %q (want http or https)", cfg.Scheme)
	}
	var opts []name.Option
	if cfg.scheme() == "http" || cfg.SkipVerify {
		opts = append(opts, name.Insecure)
	}
	repo, err := name.NewRepository(cfg.Host+"/"+cfg.Repo, opts...)
	if err != nil {
		return nil, fmt.Errorf("registry backend: %w", err)
	}
	auth, err := authenticator(cfg.RegistryToken, cfg.Auth)
	if err != nil {
		return nil, err
	}
	connect := time.Duration(cfg.ConnectTimeout) * time.Second
	if connect <= 0 {
		connect = 5 * time.Second
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.TLSHandshakeTimeout = connect
	// Go's default keeps 2 idle connections per host: readers, read-ahead
	// and prefetch workers beyond that would open and close connections
	// (a TCP and TLS handshake each) all the time.
	base.MaxIdleConnsPerHost = maxIdlePerHost
	if cfg.SkipVerify {
		base.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	} else if len(cfg.CACertFiles) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		for _, f := range cfg.CACertFiles {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("registry backend: ca_cert_files: %w", err)
			}
			if !pool.AppendCertsFromPEM(b) {
				return nil, fmt.Errorf("registry backend: ca_cert_files: %s holds no PEM certificate", f)
			}
		}
		base.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	var under http.RoundTripper = base
	var pt *proxyTransport
	var mt *mirrorTransport
	switch {
	case cfg.Proxy != nil && cfg.Proxy.URL != "" && len(cfg.Mirrors) > 0:
		return nil, errors.New("registry backend: proxy and mirrors cannot be configured at the same time (as upstream's): choose one")
	case cfg.Proxy != nil && cfg.Proxy.URL != "":
		if pt, err = newProxyTransport(*cfg.Proxy, base, connect, cfg.Log); err != nil {
			return nil, err
		}
		under = pt
	case len(cfg.Mirrors) > 0:
		if mt, err = newMirrorTransport(cfg.Mirrors, base, connect, cfg.Log); err != nil {
			return nil, err
		}
		under = mt
	}
	newRT := func(ctx context.Context, auth authn.Authenticator) (http.RoundTripper, error) {
		return transport.NewWithContext(ctx, repo.Registry, auth, under, []string{repo.Scope(transport.PullScope)})
	}
	rt, err := newRT(ctx, auth)
	if err != nil {
		if pt != nil {
			pt.close()
		}
		if mt != nil {
			mt.close()
		}
		return nil, fmt.Errorf("registry backend %s: %w", cfg, err)
	}
	timeout := time.Duration(cfg.Timeout) * time.Second
	if timeout <= 0 {
		timeout = 5 * time.Second // upstream's default: a stalled backend fails, never hangs
	}
	c := &Client{
		cfg:     cfg,
		repo:    repo,
		base:    fmt.Sprintf("%s://%s/v2/%s/blobs/", repo.Registry.Scheme(), repo.RegistryStr(), repo.RepositoryStr()),
		httpc:   &http.Client{Transport: rt, Timeout: timeout, CheckRedirect: cfg.redirect},
		newRT:   newRT,
		proxy:   pt,
		mirrors: mt,
	}
	return c, nil
}

// redirect applies BlobURLScheme and BlobRedirectedHost to the URL a
// request is redirected to (http.Client.CheckRedirect), keeping Go's
// limit of 10 redirects.
func (c Config) redirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if c.BlobURLScheme != "" {
		req.URL.Scheme = c.BlobURLScheme
	}
	if c.BlobRedirectedHost != "" {
		req.URL.Host = c.BlobRedirectedHost
		req.Host = ""
	}
	return nil
}

// authenticator turns the config's token or base64 "user:password" into
// an authenticator (anonymous when both are empty).
func authenticator(token, auth string) (authn.Authenticator, error) {
	switch {
	case token != "":
		return &authn.Bearer{Token: token}, nil
	case auth != "":
		raw, err := base64.StdEncoding.DecodeString(auth)
		if err != nil || !strings.Contains(string(raw), ":") {
			return nil, errors.New("registry backend: field auth is not base64 of user:password")
		}
		user, pass, _ := strings.Cut(string(raw), ":")
		return &authn.Basic{Username: user, Password: pass}, nil
	}
	return authn.Anonymous, nil
}

// SetAuth replaces the credentials (base64 "user:password", as in the
// config's auth field and nydusd's registry_auth renewal); requests
// started afterwards use them.
func (c *Client) SetAuth(ctx context.Context, auth string) error {
	if c.newRT == nil {
		return errors.New("registry backend: credentials of this client cannot be changed")
	}
	a, err := authenticator("", auth)
	if err != nil {
		return err
	}
	rt, err := c.newRT(ctx, a)
	if err != nil {
		return fmt.Errorf("registry backend %s: %w", c.cfg, err)
	}
	c.swapped.Store(&http.Client{Transport: rt, Timeout: c.httpc.Timeout, CheckRedirect: c.httpc.CheckRedirect})
	return nil
}

// client is the HTTP client for the current credentials.
func (c *Client) client() *http.Client {
	if h := c.swapped.Load(); h != nil {
		return h
	}
	return c.httpc
}

// ReadRange returns n bytes at off of blob digest ("sha256:<hex>" or a
// bare hex id), retrying transient failures RetryLimit times.
func (c *Client) ReadRange(ctx context.Context, digest string, off, n int64) ([]byte, error) {
	if !strings.Contains(digest, ":") {
		digest = "sha256:" + digest
	}
	var b []byte
	err := c.retry(ctx, func(ctx context.Context) (err error) {
		b, err = c.readRange(ctx, digest, off, n)
		return err
	})
	return b, err
}

// retry runs op until it succeeds, fails permanently or ctx ends, at
// most RetryLimit times more, backing off 100 ms, 200 ms, 400 ms, ...
// between tries; it returns op's last error. With a proxy that may fall
// back, or with mirrors, the last retry goes to the registry directly.
func (c *Client) retry(ctx context.Context, op func(ctx context.Context) error) error {
	var last error
	for attempt := 0; attempt <= c.cfg.RetryLimit; attempt++ {
		actx := ctx
		if attempt > 0 && attempt == c.cfg.RetryLimit && (c.proxy != nil && c.proxy.cfg.Fallback || c.mirrors != nil) {
			actx = withoutProxy(ctx) // upstream: the last retry bypasses the proxy
		}
		if attempt > 0 {
			select {
			case <-time.After(time.Duration(100<<min(attempt-1, 6)) * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		err := op(actx)
		if err == nil {
			return nil
		}
		last = err
		var pe *permanentError
		if errors.As(err, &pe) || ctx.Err() != nil {
			break
		}
	}
	return last
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func (c *Client) readRange(ctx context.Context, digest string, off, n int64) ([]byte, error) {
	rc, err := c.openRange(ctx, digest, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(rc, b); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, err // it names the range already
		}
		return nil, fmt.Errorf("registry %s: blob %s bytes %d-%d: %w", c.cfg, digest, off, off+n-1, err)
	}
	return b, nil
}

// RangeBody extracts [off, off+size) from a response to a Range request,
// streaming: it holds at most about 2*size bytes, whatever the body's
// length. A 206 body is the range. A 200 body is either the range (some
// proxies, such as nydus-snapshotter's content proxy, answer ranges with
// 200) or the whole object, which a server that ignores Range sends; the
// two are told apart by Content-Length, or when it is absent by whether
// the body ends after size bytes. Bytes before off are discarded as they
// arrive, and the body is not read past the range.
func RangeBody(resp *http.Response, off, size uint64) ([]byte, error) {
	b, _, err := rangeBody(resp, off, size)
	return b, err
}

// maxSkip bounds how far into a whole-object answer a range may start.
const maxSkip = 1 << 40

// rangeBody is RangeBody; whole reports that the server sent the whole
// object. (Client.openRange streams, and uses it only for a 200 without
// Content-Length, which must be probed.)
func rangeBody(resp *http.Response, off, size uint64) (data []byte, whole bool, err error) {
	if resp.StatusCode == http.StatusPartialContent {
		if cr := resp.Header.Get("Content-Range"); cr != "" {
			var start, end int64
			if _, err := fmt.Sscanf(cr, "bytes %d-%d/", &start, &end); err != nil || uint64(start) != off || uint64(end) != off+size-1 {
				return nil, false, fmt.Errorf("server answered range bytes=%d-%d with Content-Range %q", off, off+size-1, cr)
			}
		}
		if resp.ContentLength >= 0 && uint64(resp.ContentLength) != size {
			return nil, false, fmt.Errorf("server answered range bytes=%d-%d with %d bytes", off, off+size-1, resp.ContentLength)
		}
		buf := make([]byte, size)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			return nil, false, err
		}
		return buf, false, nil
	}
	switch cl := resp.ContentLength; {
	case cl >= 0 && uint64(cl) == size:
		// The range itself: a whole object of size bytes could only
		// answer a range at 0, and then the bytes are the same.
		buf := make([]byte, size)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			return nil, false, err
		}
		return buf, false, nil
	case cl >= 0 && uint64(cl) < off+size:
		return nil, true, fmt.Errorf("server ignored the Range header and sent %d bytes, which end before bytes %d-%d", cl, off, off+size-1)
	case cl < 0:
		// No length: read size bytes; if the body ends there it was the
		// range, else it is the object from its start.
		prefix := make([]byte, size+1)
		n, err := io.ReadFull(resp.Body, prefix)
		if uint64(n) == size && (err == io.ErrUnexpectedEOF || err == io.EOF) {
			return prefix[:size], false, nil
		}
		if err != nil {
			return nil, false, err
		}
		return skipTo(resp.Body, prefix, off, size)
	}
	return skipTo(resp.Body, nil, off, size)
}

// skipTo returns bytes [off, off+size) of an object whose first
// len(prefix) bytes were already read into prefix and whose rest is r.
func skipTo(r io.Reader, prefix []byte, off, size uint64) ([]byte, bool, error) {
	if off > maxSkip {
		return nil, true, fmt.Errorf("server ignored the Range header and offset %d is too far to skip", off)
	}
	have := uint64(len(prefix))
	out := make([]byte, 0, size)
	if off < have {
		out = append(out, prefix[off:min(have, off+size)]...)
	} else if _, err := io.CopyN(io.Discard, r, int64(off-have)); err != nil {
		return nil, true, fmt.Errorf("server ignored the Range header; skipping to offset %d: %w", off, unexpected(err))
	}
	if rest := size - uint64(len(out)); rest > 0 {
		buf := out[len(out):size]
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, true, fmt.Errorf("server ignored the Range header; reading bytes %d-%d: %w", off, off+size-1, unexpected(err))
		}
		out = out[:size]
	}
	return out, true, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// NewForRepository returns a client for repo that authenticates with a
// keychain (e.g. authn.DefaultKeychain) over the given base transport
// (nil: http.DefaultTransport).
func NewForRepository(ctx context.Context, repo name.Repository, kc authn.Keychain, base http.RoundTripper) (*Client, error) {
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	if base == nil {
		base = http.DefaultTransport
	}
	auth, err := kc.Resolve(repo)
	if err != nil {
		return nil, fmt.Errorf("registry %s: credentials: %w", repo, err)
	}
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, base, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", repo, err)
	}
	return &Client{
		cfg:   Config{Host: repo.RegistryStr(), Repo: repo.RepositoryStr(), Scheme: repo.Registry.Scheme(), RetryLimit: 2},
		repo:  repo,
		base:  fmt.Sprintf("%s://%s/v2/%s/blobs/", repo.Registry.Scheme(), repo.RegistryStr(), repo.RepositoryStr()),
		httpc: &http.Client{Transport: rt},
	}, nil
}

// ReaderAt returns an io.ReaderAt over one blob of known size, reading
// through Range requests.
func (c *Client) ReaderAt(ctx context.Context, digest string, size int64) *BlobReaderAt {
	return &BlobReaderAt{ctx: ctx, c: c, digest: digest, size: size}
}

// BlobReaderAt reads a registry blob with Range requests.
type BlobReaderAt struct {
	ctx    context.Context
	c      *Client
	digest string
	size   int64
}

// ReadAt implements io.ReaderAt.
func (r *BlobReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	n := int64(len(p))
	short := false
	if off+n > r.size {
		n, short = r.size-off, true
	}
	b, err := r.c.ReadRange(r.ctx, r.digest, off, n)
	if err != nil {
		return 0, err
	}
	copy(p, b)
	if short {
		return len(b), io.EOF
	}
	return len(b), nil
}

// Size returns the blob size.
func (r *BlobReaderAt) Size() int64 { return r.size }

// OpenRange streams n bytes at off of blob digest: the returned reader
// yields the range's bytes as they arrive (it fails with
// io.ErrUnexpectedEOF if the body ends early), so a large range is
// consumed while it is still coming. Sending the request is retried as
// ReadRange's is; a failure while the body streams is the caller's to
// handle. A 206 must carry the range asked for; a 200 with the whole
// blob is skipped through to the range, and a 200 whose length does not
// tell is read whole (at most about 2*n bytes held), as ReadRange does.
func (c *Client) OpenRange(ctx context.Context, digest string, off, n int64) (io.ReadCloser, error) {
	if !strings.Contains(digest, ":") {
		digest = "sha256:" + digest
	}
	if off < 0 || n <= 0 {
		return nil, fmt.Errorf("registry %s: blob %s: invalid range %d+%d", c.cfg, digest, off, n)
	}
	var rc io.ReadCloser
	err := c.retry(ctx, func(ctx context.Context) (err error) {
		rc, err = c.openRange(ctx, digest, off, n)
		return err
	})
	return rc, err
}

func (c *Client) openRange(ctx context.Context, digest string, off, n int64) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+digest, nil)
	if err != nil {
		return nil, &permanentError{err}
	}
	last := off + n - 1
	req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-"+strconv.FormatInt(last, 10))
	resp, err := c.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("registry %s: GET blob %s: %w", c.cfg, digest, err)
	}
	what := fmt.Sprintf("registry %s: blob %s bytes %d-%d", c.cfg, digest, off, last)
	fail := func(err error) (io.ReadCloser, error) {
		resp.Body.Close()
		return nil, err
	}
	switch resp.StatusCode {
	case http.StatusPartialContent, http.StatusOK:
	case http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden, http.StatusRequestedRangeNotSatisfiable:
		return fail(&permanentError{fmt.Errorf("%s: HTTP %s", what, resp.Status)})
	default:
		return fail(fmt.Errorf("registry %s: GET blob %s: HTTP %s", c.cfg, digest, resp.Status))
	}
	if resp.StatusCode == http.StatusPartialContent {
		if cr := resp.Header.Get("Content-Range"); cr != "" {
			var start, end int64
			if _, err := fmt.Sscanf(cr, "bytes %d-%d/", &start, &end); err != nil || start != off || end != last {
				return fail(fmt.Errorf("%s: server answered with Content-Range %q", what, cr))
			}
		}
		if resp.ContentLength >= 0 && resp.ContentLength != n {
			return fail(fmt.Errorf("%s: server answered with %d bytes", what, resp.ContentLength))
		}
		return &rangeStream{exactReader: exactReader{r: resp.Body, n: n, what: what}, body: resp.Body}, nil
	}
	switch cl := resp.ContentLength; {
	case cl == n:
		// The range itself (a whole object of n bytes can only answer a
		// range at 0, and then the bytes are the same).
		return &rangeStream{exactReader: exactReader{r: resp.Body, n: n, what: what}, body: resp.Body}, nil
	case cl >= 0 && cl < off+n:
		return fail(fmt.Errorf("%s: server ignored the Range header and sent %d bytes, which end before the range", what, cl))
	case cl > 0 || c.ignoresRange.Load():
		// The whole blob: skip to the range, then stream it; the body is
		// closed, not drained, past the range.
		if !c.ignoresRange.Swap(true) && c.onIgnoredRange != nil {
			c.onIgnoredRange()
		}
		if off > maxSkip {
			return fail(fmt.Errorf("%s: server ignored the Range header and offset %d is too far to skip", what, off))
		}
		if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
			return fail(fmt.Errorf("%s: server ignored the Range header; skipping to the range: %w", what, unexpected(err)))
		}
		return &rangeStream{exactReader: exactReader{r: resp.Body, n: n, what: what}, body: resp.Body, noDrain: true}, nil
	}
	// No length: tell the range from the whole blob as ReadRange does.
	b, whole, err := rangeBody(resp, uint64(off), uint64(n))
	resp.Body.Close()
	if whole && !c.ignoresRange.Swap(true) && c.onIgnoredRange != nil {
		c.onIgnoredRange()
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// exactReader yields n bytes of r and fails with io.ErrUnexpectedEOF if
// r ends before them.
type exactReader struct {
	r    io.Reader
	n    int64
	what string
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.n {
		p = p[:e.n]
	}
	k, err := e.r.Read(p)
	e.n -= int64(k)
	switch {
	case err == io.EOF && e.n > 0:
		return k, fmt.Errorf("%s: body ended %d bytes early: %w", e.what, e.n, io.ErrUnexpectedEOF)
	case err == io.EOF:
		err = nil
	}
	return k, err
}

// rangeStream is a streamed range's body.
type rangeStream struct {
	exactReader
	body    io.ReadCloser
	noDrain bool // a whole-blob answer: closing is cheaper than draining
}

// Close reaches the end of a fully read range's body, so the connection
// goes back to the pool, and closes it.
func (s *rangeStream) Close() error {
	if s.n == 0 && !s.noDrain {
		io.CopyN(io.Discard, s.body, 4096)
	}
	return s.body.Close()
}
