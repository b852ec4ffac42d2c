package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nydus-go/nydus/pkg/fetch"
)

// DefaultTimeout bounds each request of a Client made without
// WithTimeout, on top of any deadline of the request's context. A long
// poll (Events with a wait) gets its wait on top.
const DefaultTimeout = 30 * time.Second

// maxBody bounds the answers a Client reads (a fetch log can be large).
const maxBody = 256 << 20

// Client talks to nydusd's HTTP API on its unix socket (the --apisock
// of `nydusd fuse`). Its methods are safe for concurrent use; each
// honours its context and is bounded by the client's timeout. An
// answer that is not 2xx is a *StatusError.
type Client struct {
	socket  string
	timeout time.Duration
	http    *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithTimeout bounds each request to d (0: only the context bounds it).
func WithTimeout(d time.Duration) Option {
	return func(c *Client) { c.timeout = d }
}

// NewClient returns a client of the nydusd API on the unix socket
// socketPath. It connects on the first request.
func NewClient(socketPath string, opts ...Option) *Client {
	c := &Client{socket: socketPath, timeout: DefaultTimeout}
	for _, o := range opts {
		o(c)
	}
	c.http = &http.Client{Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     time.Minute,
	}}
	return c
}

// Socket is the path of the API socket the client talks to.
func (c *Client) Socket() string { return c.socket }

// Close closes the client's idle connections. The client stays usable.
func (c *Client) Close() error {
	c.http.CloseIdleConnections()
	return nil
}

// StatusError is a non-2xx answer of the API: its status and upstream's
// error body ({"code": ..., "message": ...}). Use errors.As to get it
// from an error a Client returned.
type StatusError struct {
	// Socket, Method and Path (with its query) name the request.
	Socket, Method, Path string
	// StatusCode is the HTTP status (404).
	StatusCode int
	// Code is the error body's code ("ENOENT"), empty when the body was
	// not an error body.
	Code string
	// Message is the error body's message, or the body itself, trimmed,
	// when it was not an error body.
	Message string
}

// Error reads as one line: the request, the status, the code and the
// message.
func (e *StatusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "nydusd API %s: %s %s: %d %s", e.Socket, e.Method, e.Path, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Code != "" {
		b.WriteString(": " + e.Code)
	}
	if m := strings.Join(strings.Fields(e.Message), " "); m != "" {
		b.WriteString(": " + m)
	}
	return b.String()
}

// Do sends a request with body (JSON-encoded; nil for none) to path
// ("/api/v1/daemon", with any query) and returns the answer whatever its
// status: the escape hatch for routes the client has no method for. The
// caller closes the answer's body, which also releases the request's
// timeout.
func (c *Client) Do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	return c.send(ctx, method, path, body, 0)
}

// Get returns the body of a GET of path, an error unless it is 2xx.
func (c *Client) Get(ctx context.Context, path string) ([]byte, error) {
	resp, err := c.expect(ctx, http.MethodGet, path, nil, 0)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err == nil && len(b) > maxBody {
		err = fmt.Errorf("answer larger than %d bytes", maxBody)
	}
	if err != nil {
		return nil, c.errorf(http.MethodGet, path, err)
	}
	return b, nil
}

// GetJSON GETs path and decodes its JSON answer into v.
func (c *Client) GetJSON(ctx context.Context, path string, v any) error {
	return c.call(ctx, http.MethodGet, path, nil, v, 0)
}

// DaemonInfo is GET /api/v1/daemon: the daemon's id, version, state and
// mounts.
func (c *Client) DaemonInfo(ctx context.Context) (*DaemonInfo, error) {
	var info DaemonInfo
	if err := c.call(ctx, http.MethodGet, "/api/v1/daemon", nil, &info, 0); err != nil {
		return nil, err
	}
	return &info, nil
}

// Mount is POST /api/v1/mount?mountpoint=: it mounts an image at
// mountpoint ("/img1") of a shared daemon.
func (c *Client) Mount(ctx context.Context, mountpoint string, req MountRequest) error {
	return c.call(ctx, http.MethodPost, withQuery("/api/v1/mount", "mountpoint", mountpoint), req, nil, 0)
}

// Umount is DELETE /api/v1/mount?mountpoint=: it unmounts the image at
// mountpoint.
func (c *Client) Umount(ctx context.Context, mountpoint string) error {
	return c.call(ctx, http.MethodDelete, withQuery("/api/v1/mount", "mountpoint", mountpoint), nil, nil, 0)
}

// Start is PUT /api/v1/daemon/start: a daemon that took over (READY)
// starts serving.
func (c *Client) Start(ctx context.Context) error {
	return c.call(ctx, http.MethodPut, "/api/v1/daemon/start", nil, nil, 0)
}

// Exit is PUT /api/v1/daemon/exit: the daemon exits without unmounting
// (the end of a hot upgrade).
func (c *Client) Exit(ctx context.Context) error {
	return c.call(ctx, http.MethodPut, "/api/v1/daemon/exit", nil, nil, 0)
}

// SendFD is PUT /api/v1/daemon/fuse/sendfd: the daemon sends its FUSE
// connection and state to its supervisor.
func (c *Client) SendFD(ctx context.Context) error {
	return c.call(ctx, http.MethodPut, "/api/v1/daemon/fuse/sendfd", nil, nil, 0)
}

// TakeOver is PUT /api/v1/daemon/fuse/takeover: a daemon started for a
// failover or an upgrade (INIT) takes its predecessor's FUSE connection
// and state from the supervisor.
func (c *Client) TakeOver(ctx context.Context) error {
	return c.call(ctx, http.MethodPut, "/api/v1/daemon/fuse/takeover", nil, nil, 0)
}

// SetRegistryAuth is PUT /api/v1/config?id= with {"registry_auth":
// auth}: it renews the registry credentials (base64 "user:password") of
// the image mounted at id.
func (c *Client) SetRegistryAuth(ctx context.Context, id, auth string) error {
	return c.call(ctx, http.MethodPut, withQuery("/api/v1/config", "id", id), map[string]string{"registry_auth": auth}, nil, 0)
}

// FsMetrics is GET /api/v1/metrics[?id=]: the filesystem's counters, of
// the image mounted at id or, with id empty, of them all.
func (c *Client) FsMetrics(ctx context.Context, id string) (*FsMetrics, error) {
	var m FsMetrics
	if err := c.call(ctx, http.MethodGet, withQuery("/api/v1/metrics", "id", id), nil, &m, 0); err != nil {
		return nil, err
	}
	return &m, nil
}

// BlobCacheMetrics is GET /api/v1/metrics/blobcache[?id=]: the blob
// cache's counters and files.
func (c *Client) BlobCacheMetrics(ctx context.Context, id string) (*BlobCacheMetrics, error) {
	var m BlobCacheMetrics
	if err := c.call(ctx, http.MethodGet, withQuery("/api/v1/metrics/blobcache", "id", id), nil, &m, 0); err != nil {
		return nil, err
	}
	return &m, nil
}

// BackendMetrics is GET /api/v1/metrics/backend: the backends' counters.
func (c *Client) BackendMetrics(ctx context.Context) (*BackendMetrics, error) {
	var m BackendMetrics
	if err := c.call(ctx, http.MethodGet, "/api/v1/metrics/backend", nil, &m, 0); err != nil {
		return nil, err
	}
	return &m, nil
}

// FileMetrics is GET /api/v1/metrics/files[?id=]: the files the image
// mounted at id (the only one when empty) read, by inode number. It
// needs iostats_files in the image's config.
func (c *Client) FileMetrics(ctx context.Context, id string) (map[string]FileMetrics, error) {
	var m map[string]FileMetrics
	if err := c.call(ctx, http.MethodGet, withQuery("/api/v1/metrics/files", "id", id), nil, &m, 0); err != nil {
		return nil, err
	}
	return m, nil
}

// AccessPattern is GET /api/v1/metrics/pattern[?id=]: the files the
// image mounted at id (the only one when empty) read, in first-read
// order. It needs access_pattern in the image's config.
func (c *Client) AccessPattern(ctx context.Context, id string) ([]AccessPattern, error) {
	var p []AccessPattern
	if err := c.call(ctx, http.MethodGet, withQuery("/api/v1/metrics/pattern", "id", id), nil, &p, 0); err != nil {
		return nil, err
	}
	return p, nil
}

// FetchLog is GET /api/v1/metrics/fetches[?id=]: the backend fetches of
// the image mounted at id (the only one when empty), in order. It needs
// access_pattern in the image's config.
func (c *Client) FetchLog(ctx context.Context, id string) (*fetch.Log, error) {
	var l fetch.Log
	if err := c.call(ctx, http.MethodGet, withQuery("/api/v1/metrics/fetches", "id", id), nil, &l, 0); err != nil {
		return nil, err
	}
	return &l, nil
}

// Events is GET /api/v1/events?since=&wait=: the events of the daemon's
// log after sequence number since (at most 256). With wait > 0 the
// daemon waits up to that long (at most a minute) for one when there is
// none yet; the client's timeout is extended by wait.
func (c *Client) Events(ctx context.Context, since uint64, wait time.Duration) ([]CloudEvent, error) {
	q := url.Values{"since": {strconv.FormatUint(since, 10)}}
	if wait > 0 {
		q.Set("wait", wait.String())
	} else {
		wait = 0
	}
	var evs []CloudEvent
	if err := c.call(ctx, http.MethodGet, "/api/v1/events?"+q.Encode(), nil, &evs, wait); err != nil {
		return nil, err
	}
	return evs, nil
}

// withQuery adds ?key=value to path unless value is empty.
func withQuery(path, key, value string) string {
	if value == "" {
		return path
	}
	return path + "?" + url.Values{key: {value}}.Encode()
}

// call sends a request, expects a 2xx answer and decodes its JSON into v
// (v nil: the answer is dropped).
func (c *Client) call(ctx context.Context, method, path string, body, v any, extra time.Duration) error {
	resp, err := c.expect(ctx, method, path, body, extra)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if v == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		// The lifecycle routes answer 204 No Content, and nothing else
		// means success (nydus-snapshotter's client checks the same).
		if resp.StatusCode != http.StatusNoContent {
			return c.errorf(method, path, fmt.Errorf("answered %s, want 204 No Content", resp.Status))
		}
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(v); err != nil {
		return c.errorf(method, path, fmt.Errorf("decoding the answer: %w", err))
	}
	return nil
}

// expect sends a request and returns its answer if it is 2xx, else a
// *StatusError.
func (c *Client) expect(ctx context.Context, method, path string, body any, extra time.Duration) (*http.Response, error) {
	resp, err := c.send(ctx, method, path, body, extra)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	se := &StatusError{Socket: c.socket, Method: method, Path: path, StatusCode: resp.StatusCode}
	var eb ErrorBody
	if json.Unmarshal(b, &eb) == nil && (eb.Code != "" || eb.Message != "") {
		se.Code, se.Message = eb.Code, eb.Message
	} else {
		se.Message = strings.TrimSpace(string(b))
		if len(se.Message) > 512 {
			se.Message = se.Message[:512] + "…"
		}
	}
	return nil, se
}

// send sends a request, bounded by ctx and the client's timeout plus
// extra; closing the answer's body releases the timeout.
func (c *Client) send(ctx context.Context, method, path string, body any, extra time.Duration) (*http.Response, error) {
	var rd io.Reader = http.NoBody
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, c.errorf(method, path, fmt.Errorf("encoding the request: %w", err))
		}
		rd = bytes.NewReader(b)
	}
	cancel := context.CancelFunc(func() {})
	if c.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, c.timeout+extra)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://nydusd"+path, rd)
	if err != nil {
		cancel()
		return nil, c.errorf(method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		cancel()
		return nil, c.errorf(method, path, err)
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// errorf wraps err with the request it is about. A *url.Error is
// unwrapped: the request is named already.
func (c *Client) errorf(method, path string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("nydusd API %s: %s %s: %w", c.socket, method, path, err)
}

// cancelBody releases a request's timeout when its answer is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
