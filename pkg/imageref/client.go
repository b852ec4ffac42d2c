package imageref

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// RegistryOptions configure registry access.
type RegistryOptions struct {
	// Keychain supplies credentials (default: Docker's config.json and
	// credential helpers through authn.DefaultKeychain).
	Keychain authn.Keychain
	// PlainHTTP talks HTTP instead of HTTPS (needed for 127.0.0.1 too).
	PlainHTTP bool
	// SkipTLSVerify disables certificate verification; a registry that
	// turns out to speak plain HTTP is then retried over HTTP, as
	// upstream nydusify does.
	SkipTLSVerify bool
	// Retries is the number of retries of a failed request (0 means
	// the default, 3), with exponential backoff from RetryDelay (default
	// 1 s).
	Retries    int
	RetryDelay time.Duration
	// Jobs is the number of concurrent blob uploads (default 4).
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

// Client is registry access for one set of RegistryOptions: one HTTP
// transport, one go-containerregistry puller and one pusher, reused by
// every call made through Options, so connections and bearer tokens are
// reused too. It is safe for concurrent use.
type Client struct {
	opts   RegistryOptions
	rt     http.RoundTripper // Options' transport: idle timeout over the base
	base   http.RoundTripper // the base transport, for other registry clients
	puller *remote.Puller
	pusher *remote.Pusher
}

// NewClient returns a Client for ro.
func NewClient(ro RegistryOptions) (*Client, error) {
	c := &Client{opts: ro}
	if ro.Transport != nil {
		c.base = ro.Transport
	} else {
		connect := orDefault(ro.ConnectTimeout, DefaultConnectTimeout)
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.DialContext = (&net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}).DialContext
		t.TLSHandshakeTimeout = connect
		t.ResponseHeaderTimeout = orDefault(ro.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)
		if ro.SkipTLSVerify {
			t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
		}
		c.base = t
	}
	c.rt = &idleTimeoutTransport{rt: c.base, idle: orDefault(ro.IdleTimeout, DefaultIdleTimeout)}
	var err error
	if c.puller, err = remote.NewPuller(c.options()...); err != nil {
		return nil, fmt.Errorf("registry client: %w", err)
	}
	if c.pusher, err = remote.NewPusher(c.options()...); err != nil {
		return nil, fmt.Errorf("registry client: %w", err)
	}
	return c, nil
}

// RegistryOptions returns the options the client was made with.
func (c *Client) RegistryOptions() RegistryOptions { return c.opts }

// Transport returns the client's base HTTP transport (TLS and timeouts
// of its options), for other registry clients such as pkg/registry's
// range reader.
func (c *Client) Transport() http.RoundTripper { return c.base }

// options are the go-containerregistry options of the client, without a
// context.
func (c *Client) options() []remote.Option {
	kc := c.opts.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	retries := c.opts.Retries
	if retries <= 0 {
		retries = 3
	}
	delay := c.opts.RetryDelay
	if delay <= 0 {
		delay = time.Second
	}
	jobs := c.opts.Jobs
	if jobs <= 0 {
		jobs = 4
	}
	return []remote.Option{
		remote.WithAuthFromKeychain(kc),
		remote.WithTransport(c.rt),
		remote.WithRetryBackoff(remote.Backoff{Duration: delay, Factor: 2, Jitter: 0.1, Steps: retries + 1}),
		remote.WithRetryStatusCodes(http.StatusRequestTimeout, http.StatusTooManyRequests,
			http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout),
		remote.WithJobs(jobs),
		remote.WithUserAgent("nydus-go"),
	}
}

// Options returns the go-containerregistry options for one call bound to
// ctx: the client's transport, credentials, retries and its puller and
// pusher (so the call reuses their connections and tokens).
func (c *Client) Options(ctx context.Context) []remote.Option {
	return append(c.options(), remote.WithContext(ctx), remote.Reuse(c.puller), remote.Reuse(c.pusher))
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
