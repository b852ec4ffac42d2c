// Package registrytest is a test helper that runs a real OCI distribution
// registry for Go tests: Debian's `docker-registry` (distribution 2.8) with
// filesystem storage in a temporary directory, optionally behind htpasswd
// basic auth or token authentication (an in-process token server signs
// the tokens), optionally as a pull-through cache of another registry (a
// registry mirror), which [Registry.Stop] and [Registry.Restart] take down
// and back.
//
// Entry points: [Start] runs a [Registry] for a test ([Options] choose
// auth and mirroring); [Registry.Stats] counts its traffic; [PushImage]
// and [PushIndex] push test images to it.
//
// Clients talk to the registry through an in-process counting reverse proxy,
// so tests can assert how many blob bytes a tool uploaded or downloaded, how
// many uploads it completed and whether it used cross-repository mounts (see
// [Stats]). [PushImage] and [PushIndex] build small OCI images from tar
// layers and push them with go-containerregistry.
//
// The `docker-registry` binary must be on PATH (Debian package
// docker-registry). [Start] fails the test, rather than skipping it, when the
// binary is missing, so that a CI machine without it cannot pass silently.
//
// Every registry process is stopped by PID in a t.Cleanup function; on Linux
// it is also started with a parent-death signal, so a test binary killed by a
// timeout does not leave registries behind.
//
// This package is meant for _test.go files only.
package registrytest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Binary is the name of the registry executable looked up on PATH.
const Binary = "docker-registry"

const (
	// readyTimeout bounds the wait for the registry to answer GET /v2/.
	readyTimeout = 10 * time.Second
	// stopTimeout bounds the wait for the registry to exit after SIGKILL.
	stopTimeout = 10 * time.Second
	// startAttempts is the number of ports tried when the chosen free port
	// is taken by someone else before the registry binds it.
	startAttempts = 3
)

// Options configures a registry started by [Start].
type Options struct {
	// Htpasswd maps user names to passwords. When it is non-empty the
	// registry requires HTTP basic auth: Start writes an htpasswd file with
	// bcrypt hashes of these passwords (the only hash distribution accepts).
	Htpasswd map[string]string
	// TokenAuth makes the registry use Docker token authentication
	// instead of basic auth, as most public registries do: an
	// in-process token server (the realm its 401 answers name) checks
	// the Htpasswd users' credentials and signs tokens the registry
	// verifies.
	TokenAuth bool
	// Remote, when set ("http://127.0.0.1:5000"), makes the registry a
	// pull-through cache of that registry (distribution's
	// proxy.remoteurl): a registry mirror that fetches what it lacks
	// from the remote and keeps it in its storage. It then refuses
	// pushes. RemoteUser and RemotePassword are its credentials for the
	// remote, if it needs any.
	Remote, RemoteUser, RemotePassword string
}

// Registry is a running docker-registry process and the counting proxy in
// front of it. It is safe for concurrent use.
type Registry struct {
	// Host is "127.0.0.1:PORT", the address clients should use in image
	// references (e.g. Host+"/test/image:tag"). It points at the counting
	// proxy, not at the registry itself; it speaks plain HTTP, so
	// go-containerregistry references need name.Insecure.
	Host string
	// Dir is the root directory of the registry's filesystem storage
	// driver; blobs live under Dir/docker/registry/v2/blobs (see BlobPath).
	Dir string

	backend  string // "127.0.0.1:PORT" of docker-registry itself
	logPath  string // registry stdout+stderr
	pid      int
	bin      string // docker-registry
	cfgPath  string
	auth     bool         // htpasswd: GET /v2/ answers 401
	kill     func()       // stops the running docker-registry (Stop)
	srv      *http.Server // the counting proxy
	tokens   *tokenServer // with Options.TokenAuth
	served   chan struct{}
	proxyLog lockedBuffer
	stats    counters
	offline  atomic.Bool
}

// Stats are the counters of the proxy in front of the registry, since Start
// or the last ResetStats. Blob endpoints are recognised by path:
// /v2/<name>/blobs/uploads/[<uuid>] for uploads and /v2/<name>/blobs/<digest>
// for blobs.
type Stats struct {
	// UploadBytes is the number of request body bytes sent to blob upload
	// endpoints (POST, PATCH and PUT on /v2/<name>/blobs/uploads/...),
	// counted as the proxy forwards them.
	UploadBytes int64
	// UploadsCompleted is the number of upload requests carrying a
	// digest= query parameter (the closing PUT ?digest=) that the registry
	// answered with 201 Created.
	UploadsCompleted int64
	// MountRequests is the number of POST .../blobs/uploads/?mount=
	// requests (cross-repository mount attempts).
	MountRequests int64
	// Mounts is the number of MountRequests answered with 201 Created, i.e.
	// blobs actually mounted. When the source blob is unknown the registry
	// answers 202 and opens an ordinary upload session instead.
	Mounts int64
	// BlobGets is the number of GET /v2/<name>/blobs/<digest> requests,
	// ranged or not, whatever their status.
	BlobGets int64
	// BlobBytesServed is the number of response body bytes of successful
	// (2xx) blob GETs forwarded to clients.
	BlobBytesServed int64
	// BlobHeads is the number of HEAD /v2/<name>/blobs/<digest> requests
	// (existence checks).
	BlobHeads int64
	// Authorized is the number of requests, to any endpoint, that
	// carried an Authorization header: credentials a client sent here.
	Authorized int64
}

type counters struct {
	uploadBytes, uploadsCompleted, mountRequests, mounts atomic.Int64
	blobGets, blobBytesServed, blobHeads, authorized     atomic.Int64
}

// Stats returns a snapshot of the proxy's counters.
func (r *Registry) Stats() Stats {
	c := &r.stats
	return Stats{
		UploadBytes:      c.uploadBytes.Load(),
		UploadsCompleted: c.uploadsCompleted.Load(),
		MountRequests:    c.mountRequests.Load(),
		Mounts:           c.mounts.Load(),
		BlobGets:         c.blobGets.Load(),
		BlobBytesServed:  c.blobBytesServed.Load(),
		BlobHeads:        c.blobHeads.Load(),
		Authorized:       c.authorized.Load(),
	}
}

// ResetStats sets all counters to zero, e.g. between the setup of a test
// (pushing a source image) and the operation it measures.
func (r *Registry) ResetStats() {
	c := &r.stats
	for _, v := range []*atomic.Int64{&c.uploadBytes, &c.uploadsCompleted, &c.mountRequests,
		&c.mounts, &c.blobGets, &c.blobBytesServed, &c.blobHeads, &c.authorized} {
		v.Store(0)
	}
}

// Start starts docker-registry with filesystem storage under t.TempDir(),
// deletes enabled and, when o.Htpasswd is set, basic auth; waits (at most
// about 10 s) until it answers GET /v2/; and starts the counting proxy that
// Host points at. t.Cleanup stops the proxy, then kills the registry by PID
// and waits for it, failing the test if it cannot be stopped or if it died
// during the test. Start calls t.Fatal when docker-registry is not on PATH
// or does not come up.
func Start(t testing.TB, o Options) *Registry {
	t.Helper()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		t.Fatalf("registrytest: %s not found on PATH (%v): install the Debian package docker-registry "+
			"(apt-get install -y docker-registry); tests that need a registry fail rather than skip", Binary, err)
	}

	dir := t.TempDir()
	r := &Registry{
		Dir:     filepath.Join(dir, "storage"),
		logPath: filepath.Join(dir, "registry.log"),
	}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	// The counting proxy's address is the registry's (Host), known
	// before the registry's configuration is written: the token realm is
	// on it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("registrytest: proxy listen: %v", err)
	}
	htpasswd := ""
	if o.TokenAuth {
		if len(o.Htpasswd) == 0 {
			t.Fatal("registrytest: TokenAuth needs Htpasswd users")
		}
		r.tokens = newTokenServer(t, o.Htpasswd, filepath.Join(dir, "token.pem"), "http://"+ln.Addr().String()+"/token")
	} else if len(o.Htpasswd) > 0 {
		htpasswd = filepath.Join(dir, "htpasswd")
		if err := writeHtpasswd(htpasswd, o.Htpasswd); err != nil {
			t.Fatalf("registrytest: %v", err)
		}
	}

	var lastErr error
	for attempt := 0; attempt < startAttempts; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("registrytest: %v", err)
		}
		r.backend = fmt.Sprintf("127.0.0.1:%d", port)
		cfgPath := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfgPath, []byte(configYAML(r.Dir, r.backend, htpasswd, r.tokens, o)), 0o600); err != nil {
			t.Fatalf("registrytest: %v", err)
		}
		r.bin, r.cfgPath, r.auth = bin, cfgPath, htpasswd != "" || r.tokens != nil
		var retry bool
		retry, lastErr = r.startProcess(t)
		if lastErr == nil {
			break
		}
		if !retry {
			t.Fatalf("registrytest: %v\nregistry log:\n%s", lastErr, r.Log())
		}
	}
	if lastErr != nil {
		t.Fatalf("registrytest: %v\nregistry log:\n%s", lastErr, r.Log())
	}

	r.Host = ln.Addr().String()
	r.startProxy(t, ln)
	return r
}

// Stop stops the registry the way a host goes down: the docker-registry
// process is killed and Host refuses connections (open ones are closed)
// until Restart.
func (r *Registry) Stop(t testing.TB) {
	t.Helper()
	if r.kill == nil {
		t.Fatal("registrytest: Stop: the registry is not running")
	}
	r.srv.Close()
	<-r.served
	r.kill()
	r.kill = nil
}

// GarbageCollect runs the registry's garbage collector (docker-registry
// garbage-collect) on its storage: blobs no manifest references are
// deleted. The registry is stopped for it and started again.
func (r *Registry) GarbageCollect(t testing.TB) {
	t.Helper()
	r.Stop(t)
	out, err := exec.Command(r.bin, "garbage-collect", r.cfgPath).CombinedOutput()
	if err != nil {
		t.Fatalf("registrytest: garbage-collect: %v\n%s", err, out)
	}
	r.Restart(t)
}

// Restart starts a stopped registry again, at the same Host and with the
// same storage.
func (r *Registry) Restart(t testing.TB) {
	t.Helper()
	if r.kill != nil {
		t.Fatal("registrytest: Restart: the registry is running")
	}
	if _, err := r.startProcess(t); err != nil {
		t.Fatalf("registrytest: restart: %v\nregistry log:\n%s", err, r.Log())
	}
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the closed listener's port may linger briefly
		if ln, err = net.Listen("tcp", r.Host); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("registrytest: restart: listen on %s again: %v", r.Host, err)
	}
	r.startProxy(t, ln)
}

// startProcess runs docker-registry once and waits until it is ready. The
// process is stopped by a t.Cleanup registered as soon as it has started. It
// reports retry=true when the process exited because its port was taken.
func (r *Registry) startProcess(t testing.TB) (retry bool, err error) {
	bin, cfgPath, auth := r.bin, r.cfgPath, r.auth
	logf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return false, err
	}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Dir = filepath.Dir(cfgPath)
	cmd.SysProcAttr = sysProcAttr()
	// The parent-death signal fires when the OS thread that forked the child
	// exits, not only the process: start and wait from a goroutine locked to
	// its thread, so that no other goroutine can end that thread early.
	started := make(chan error, 1)
	done := make(chan struct{})
	var waitErr error
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the child
		err := cmd.Start()
		started <- err
		if err != nil {
			return
		}
		waitErr = cmd.Wait()
		close(done)
	}()
	err = <-started
	logf.Close() // the child has its own descriptor
	if err != nil {
		return false, fmt.Errorf("starting %s: %w", bin, err)
	}
	r.pid = cmd.Process.Pid

	var stopped atomic.Bool // set when the cleanup or Stop (not a crash) ends the process
	stop := func() {
		stopped.Store(true)
		if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Errorf("registrytest: killing docker-registry (pid %d): %v", cmd.Process.Pid, err)
		}
		select {
		case <-done:
		case <-time.After(stopTimeout):
			t.Errorf("registrytest: docker-registry (pid %d) still running %v after SIGKILL", cmd.Process.Pid, stopTimeout)
		}
	}
	r.kill = stop
	t.Cleanup(func() {
		select {
		case <-done:
			if !stopped.Load() && waitErr != nil {
				t.Errorf("registrytest: docker-registry (pid %d) exited during the test: %v\nregistry log:\n%s",
					cmd.Process.Pid, waitErr, r.Log())
			}
			return
		default:
		}
		stop()
	})

	want := http.StatusOK
	if auth {
		want = http.StatusUnauthorized
	}
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(readyTimeout)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-done:
			stopped.Store(true) // already reported here; not a crash during the test
			logText := r.Log()
			return strings.Contains(logText, "address already in use"),
				fmt.Errorf("docker-registry (pid %d) exited before it was ready: %v", cmd.Process.Pid, waitErr)
		default:
		}
		resp, err := client.Get("http://" + r.backend + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return false, nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false, fmt.Errorf("docker-registry (pid %d) did not answer GET /v2/ with %d within %v (last: %s)",
		cmd.Process.Pid, want, readyTimeout, last)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// configYAML renders the registry configuration. Strings are written as
// double-quoted YAML scalars (JSON strings are valid YAML).
func configYAML(root, addr, htpasswd string, tokens *tokenServer, o Options) string {
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	var b strings.Builder
	fmt.Fprintf(&b, `version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: %s
`, q(root), q(addr), q(hex.EncodeToString(secret)))
	if htpasswd != "" {
		fmt.Fprintf(&b, `auth:
  htpasswd:
    realm: registrytest
    path: %s
`, q(htpasswd))
	}
	if tokens != nil {
		fmt.Fprintf(&b, `auth:
  token:
    realm: %s
    service: %s
    issuer: %s
    rootcertbundle: %s
`, q(tokens.url), q(tokenService), q(tokenIssuer), q(filepath.Join(filepath.Dir(root), "token.pem")))
	}
	if o.Remote != "" {
		fmt.Fprintf(&b, "proxy:\n  remoteurl: %s\n", q(o.Remote))
		if o.RemoteUser != "" {
			fmt.Fprintf(&b, "  username: %s\n  password: %s\n", q(o.RemoteUser), q(o.RemotePassword))
		}
	}
	return b.String()
}

// writeHtpasswd writes users' bcrypt hashes. The minimum cost keeps the
// registry fast: it checks the hash on every request.
func writeHtpasswd(path string, users map[string]string) error {
	names := make([]string, 0, len(users))
	for u := range users {
		if u == "" || strings.ContainsAny(u, ":\n") {
			return fmt.Errorf("invalid htpasswd user name %q", u)
		}
		names = append(names, u)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, u := range names {
		h, err := bcrypt.GenerateFromPassword([]byte(users[u]), bcrypt.MinCost)
		if err != nil {
			return fmt.Errorf("hashing the password of %q: %w", u, err)
		}
		fmt.Fprintf(&b, "%s:%s\n", u, h)
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// BlobPath returns the path of the data file of blob digest
// ("sha256:<hex>") in the filesystem storage:
// Dir/docker/registry/v2/blobs/sha256/<first 2 hex>/<hex>/data. Tests can
// corrupt it to check digest verification. It returns "" for a malformed
// digest. The file exists only once the blob has been pushed.
func (r *Registry) BlobPath(digest string) string {
	alg, enc, ok := strings.Cut(digest, ":")
	if !ok || alg == "" || len(enc) < 2 || strings.ContainsAny(digest, `/\`) {
		return ""
	}
	return filepath.Join(r.Dir, "docker", "registry", "v2", "blobs", alg, enc[:2], enc, "data")
}

// Holds reports whether repository repo has blob digest in the storage:
// its data and the repository's link to it, complete (it names the
// digest), which a pull-through mirror writes last when it keeps a blob.
// A mirror killed while it stores a blob may leave a truncated link,
// after which it answers that blob with 500 ("invalid checksum digest
// format").
func (r *Registry) Holds(repo, digest string) bool {
	data := r.BlobPath(digest)
	if data == "" {
		return false
	}
	if _, err := os.Stat(data); err != nil {
		return false
	}
	alg, enc, _ := strings.Cut(digest, ":")
	link, err := os.ReadFile(filepath.Join(r.Dir, "docker", "registry", "v2", "repositories", filepath.FromSlash(repo), "_layers", alg, enc, "link"))
	return err == nil && string(link) == digest
}

// DockerConfig writes a Docker config.json granting user:pass for Host into
// a new temporary directory and returns that directory, to be used as
// DOCKER_CONFIG (e.g. with authn.DefaultKeychain or a CLI under test).
func (r *Registry) DockerConfig(t testing.TB, user, pass string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := map[string]any{
		"auths": map[string]any{
			r.Host: map[string]string{
				"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass)),
			},
		},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), append(b, '\n'), 0o600); err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	return dir
}

// Log returns what docker-registry has logged so far (its access log and
// application log), followed by the proxy's own errors if any. Useful in
// failure messages.
func (r *Registry) Log() string {
	b, err := os.ReadFile(r.logPath)
	if err != nil {
		b = []byte(fmt.Sprintf("(reading %s: %v)\n", r.logPath, err))
	}
	if p := r.proxyLog.String(); p != "" {
		b = append(b, "--- proxy ---\n"...)
		b = append(b, p...)
	}
	return string(b)
}

// TokensIssued is how many tokens the token server of a registry
// started with Options.TokenAuth has issued.
func (r *Registry) TokensIssued() int64 {
	if r.tokens == nil {
		return 0
	}
	return r.tokens.issued.Load()
}

// PID returns the process ID of the docker-registry process.
func (r *Registry) PID() int { return r.pid }

// lockedBuffer is a bytes.Buffer safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// The proxy.

var (
	// uploadPath matches /v2/<name>/blobs/uploads/ and .../uploads/<uuid>.
	uploadPath = regexp.MustCompile(`^/v2/.+/blobs/uploads/[^/]*$`)
	// blobPath matches /v2/<name>/blobs/<algorithm>:<encoded>.
	blobPath = regexp.MustCompile(`^/v2/.+/blobs/[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`)
)

type endpoint int

const (
	otherEndpoint endpoint = iota
	uploadEndpoint
	blobEndpoint
)

func classify(u *url.URL) endpoint {
	switch {
	case uploadPath.MatchString(u.Path):
		return uploadEndpoint
	case blobPath.MatchString(u.Path):
		return blobEndpoint
	}
	return otherEndpoint
}

// startProxy starts the counting reverse proxy on ln (r.Host). Bodies are
// streamed, never buffered whole.
func (r *Registry) startProxy(t testing.TB, ln net.Listener) {
	t.Helper()
	backend := &url.URL{Scheme: "http", Host: r.backend}
	transport := &http.Transport{
		Proxy:               nil, // never go through an environment proxy
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	errLog := log.New(&r.proxyLog, "", log.LstdFlags|log.Lmicroseconds)
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// SetURL also sets the outbound Host header to the backend, so
			// the registry builds its absolute Location URLs with the
			// backend address; modifyResponse maps them back to r.Host.
			pr.SetURL(backend)
			r.countRequest(pr.Out)
		},
		ModifyResponse: r.modifyResponse,
		Transport:      transport,
		ErrorLog:       errLog,
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.offline.Load() {
			r.dropConnection(w)
			return
		}
		if r.tokens != nil && req.URL.Path == "/token" {
			r.tokens.serve(w, req)
			return
		}
		rp.ServeHTTP(w, req)
	})
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          errLog,
	}
	served := make(chan struct{})
	r.srv, r.served = srv, served
	go func() {
		defer close(served)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errLog.Printf("serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		<-served
		transport.CloseIdleConnections()
	})
}

// SetOffline makes the registry unreachable (true) or reachable again
// (false). While offline, the proxy closes the connection of every request
// without answering, the way a client sees a registry whose host went down
// mid-transfer; connections kept alive by clients are closed on their next
// request too.
func (r *Registry) SetOffline(offline bool) { r.offline.Store(offline) }

// dropConnection closes the client connection of w without a response.
func (r *Registry) dropConnection(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	// No hijacking (HTTP/2): abort the handler, which resets the stream.
	panic(http.ErrAbortHandler)
}

// countRequest updates the request-side counters and wraps upload bodies in
// a counting reader.
func (r *Registry) countRequest(out *http.Request) {
	c := &r.stats
	if out.Header.Get("Authorization") != "" {
		c.authorized.Add(1)
	}
	switch classify(out.URL) {
	case uploadEndpoint:
		switch out.Method {
		case http.MethodPost, http.MethodPatch, http.MethodPut:
		default:
			return
		}
		if out.Method == http.MethodPost && out.URL.Query().Has("mount") {
			c.mountRequests.Add(1)
		}
		if out.Body != nil && out.Body != http.NoBody {
			out.Body = &countingBody{rc: out.Body, n: &c.uploadBytes}
		}
	case blobEndpoint:
		switch out.Method {
		case http.MethodGet:
			c.blobGets.Add(1)
		case http.MethodHead:
			c.blobHeads.Add(1)
		}
	}
}

// modifyResponse rewrites backend URLs to the proxy and updates the
// response-side counters.
func (r *Registry) modifyResponse(resp *http.Response) error {
	for _, h := range []string{"Location", "Content-Location", "Link"} {
		vs := resp.Header[h] // canonical keys
		for i, v := range vs {
			vs[i] = r.rewriteURLs(v)
		}
	}
	req := resp.Request
	if req == nil {
		return nil
	}
	c := &r.stats
	switch classify(req.URL) {
	case uploadEndpoint:
		if resp.StatusCode != http.StatusCreated {
			return nil
		}
		q := req.URL.Query()
		switch {
		case req.Method == http.MethodPost && q.Has("mount"):
			c.mounts.Add(1)
		case q.Has("digest") && (req.Method == http.MethodPut || req.Method == http.MethodPost):
			c.uploadsCompleted.Add(1)
		}
	case blobEndpoint:
		if req.Method == http.MethodGet && resp.StatusCode/100 == 2 && resp.Body != nil {
			resp.Body = &countingBody{rc: resp.Body, n: &c.blobBytesServed}
		}
	}
	return nil
}

// rewriteURLs replaces absolute URLs pointing at the backend by the same
// URLs on the proxy. Relative URLs are left alone: they resolve against the
// proxy already.
func (r *Registry) rewriteURLs(v string) string {
	for _, scheme := range []string{"http://", "https://"} {
		v = replaceHost(v, scheme+r.backend, "http://"+r.Host)
	}
	return v
}

// replaceHost replaces prefix old (scheme://host) by new wherever it is
// followed by the end of the string or a URL delimiter, so that
// 127.0.0.1:500 does not match 127.0.0.1:5000.
func replaceHost(v, old, new string) string {
	var b strings.Builder
	for {
		i := strings.Index(v, old)
		if i < 0 {
			b.WriteString(v)
			return b.String()
		}
		end := i + len(old)
		if end == len(v) || strings.ContainsRune("/?#>; ,\"", rune(v[end])) {
			b.WriteString(v[:i])
			b.WriteString(new)
		} else {
			b.WriteString(v[:end])
		}
		v = v[end:]
	}
}

// countingBody adds the bytes read through it to n.
type countingBody struct {
	rc io.ReadCloser
	n  *atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	k, err := c.rc.Read(p)
	c.n.Add(int64(k))
	return k, err
}

func (c *countingBody) Close() error { return c.rc.Close() }
