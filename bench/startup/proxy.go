package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// profile is a network profile applied by the proxy in front of the
// registry.
type profile struct {
	// Name is shown in the report.
	Name string
	// Mbit is the bandwidth shared by all responses, 0 for unlimited.
	Mbit float64
	// RTT is added to every request before it is forwarded.
	RTT time.Duration
}

func (p profile) String() string {
	if p.Mbit == 0 && p.RTT == 0 {
		return p.Name + " (loopback, no limits)"
	}
	return p.Name + " (" + ftoa(p.Mbit) + " Mbit/s, +" + p.RTT.String() + " per request)"
}

// counters of the proxy since the last reset.
type counters struct {
	requests, blobGets, blobBytes atomic.Int64
}

// snapshot of the counters.
type traffic struct {
	Requests  int64 // every request
	BlobGets  int64 // GET /v2/<name>/blobs/<digest>
	BlobBytes int64 // response bytes of blob GETs
}

var blobPath = regexp.MustCompile(`^/v2/.+/blobs/[a-z0-9]+:[a-f0-9]+$`)

// proxy is an HTTP reverse proxy in front of the registry that applies a
// network profile and counts what clients fetch. All systems pull through
// it, so they see the same network.
type proxy struct {
	Addr    string
	srv     *http.Server
	prof    atomic.Pointer[profile]
	limiter atomic.Pointer[rate.Limiter]
	c       counters
}

func startProxy(backend string) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{Addr: ln.Addr().String()}
	p.setProfile(profile{Name: "unlimited"})
	target := &url.URL{Scheme: "http", Host: backend}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(target); r.Out.Host = r.In.Host },
		Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64,
			DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext},
		ModifyResponse: p.modify,
		FlushInterval:  -1,
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.c.requests.Add(1)
		if rtt := p.prof.Load().RTT; rtt > 0 {
			time.Sleep(rtt)
		}
		rp.ServeHTTP(w, r)
	})}
	go p.srv.Serve(ln)
	return p, nil
}

func (p *proxy) setProfile(pr profile) {
	p.prof.Store(&pr)
	if pr.Mbit > 0 {
		bps := pr.Mbit * 1e6 / 8
		p.limiter.Store(rate.NewLimiter(rate.Limit(bps), 64<<10))
	} else {
		p.limiter.Store(nil)
	}
}

func (p *proxy) reset() {
	p.c.requests.Store(0)
	p.c.blobGets.Store(0)
	p.c.blobBytes.Store(0)
}

func (p *proxy) traffic() traffic {
	return traffic{Requests: p.c.requests.Load(), BlobGets: p.c.blobGets.Load(), BlobBytes: p.c.blobBytes.Load()}
}

func (p *proxy) modify(resp *http.Response) error {
	blob := resp.Request.Method == http.MethodGet && blobPath.MatchString(resp.Request.URL.Path)
	if blob {
		p.c.blobGets.Add(1)
	}
	resp.Body = &shapedBody{rc: resp.Body, lim: p.limiter.Load(), count: blob, c: &p.c, ctx: resp.Request.Context()}
	return nil
}

func (p *proxy) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if p.srv.Shutdown(ctx) != nil {
		p.srv.Close()
	}
}

// shapedBody paces a response body through the shared limiter and counts
// blob bytes as they are sent.
type shapedBody struct {
	rc    io.ReadCloser
	lim   *rate.Limiter
	count bool
	c     *counters
	ctx   context.Context
}

func (b *shapedBody) Read(buf []byte) (int, error) {
	if b.lim != nil && len(buf) > 32<<10 {
		buf = buf[:32<<10]
	}
	n, err := b.rc.Read(buf)
	if n > 0 {
		if b.count {
			b.c.blobBytes.Add(int64(n))
		}
		if b.lim != nil {
			if werr := b.lim.WaitN(b.ctx, n); werr != nil && err == nil {
				err = werr
			}
		}
	}
	return n, err
}

func (b *shapedBody) Close() error { return b.rc.Close() }
