package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/nydus-go/nydus/internal/roottest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/converter"
	"github.com/nydus-go/nydus/pkg/registry/registrytest"
)

// squid is Debian's squid run as a forward HTTP proxy on loopback (what
// Dragonfly's dfdaemon is to nydusd), with its access log.
type squid struct {
	dir  string
	port int
	cmd  *exec.Cmd
}

// startSquid starts squid on port (0: a free one).
func startSquid(t *testing.T, s *squid) *squid {
	t.Helper()
	bin, err := exec.LookPath("squid")
	if err != nil {
		t.Fatalf("squid is not installed (make deps installs Debian's): %v", err)
	}
	if s == nil {
		// Not under t.TempDir, whose parent only root may enter.
		dir, err := os.MkdirTemp("", "squid-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		s = &squid{dir: dir}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s.port = l.Addr().(*net.TCPAddr).Port
		l.Close()
		// squid drops to user proxy: its directory must be its own.
		os.Chmod(s.dir, 0o755)
		if u, err := user.Lookup("proxy"); err == nil {
			uid, _ := strconv.Atoi(u.Uid)
			os.Chown(s.dir, uid, -1)
		}
		// log_mime_hdrs: the access log shows every request's headers,
		// so that a credential sent through squid would be seen.
		conf := fmt.Sprintf("http_port 127.0.0.1:%d\nhttp_access allow all\ncache deny all\nlog_mime_hdrs on\naccess_log stdio:%s/access.log\ncache_log %s/cache.log\npid_filename %s/squid.pid\ncoredump_dir %s\nshutdown_lifetime 0 seconds\n",
			s.port, s.dir, s.dir, s.dir, s.dir)
		os.WriteFile(filepath.Join(s.dir, "squid.conf"), []byte(conf), 0o644)
	}
	s.cmd = exec.Command(bin, "-N", "-f", filepath.Join(s.dir, "squid.conf"))
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.port)); err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(s.dir, "cache.log"))
			t.Fatalf("squid did not start:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends squid by PID and waits for its port to close.
func (s *squid) stop() {
	if s.cmd == nil || s.cmd.Process == nil || s.cmd.ProcessState != nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	os.Remove(filepath.Join(s.dir, "squid.pid"))
}

// log returns squid's access log.
func (s *squid) log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "access.log"))
	return string(b)
}

// TestRegistryProxySquid: with upstream's proxy section, nydusd reads
// blobs through a real forward proxy (squid) and pings it every
// check_interval; squid killed in the middle of reading a large file,
// the reads go on from the registry directly, with the right bytes and
// no EIO; squid back, traffic returns to it after the next ping. The
// registry wants token authentication: the credentials nydusd is given
// go to the token realm directly, never through squid, whose log shows
// the request headers it relayed (the registry's bearer tokens).
func TestRegistryProxySquid(t *testing.T) {
	roottest.RequireFUSE(t)
	const user, pass = "user", "s3cret"
	r := registrytest.Start(t, registrytest.Options{Htpasswd: map[string]string{user: pass}, TokenAuth: true})
	big := treetest.Random(21, 24<<20)
	other := treetest.Random(22, 8<<20)
	boot, img := convertImageAs(t, r, "px", treetest.Tar([]treetest.File{
		treetest.Reg("big.bin", 0o644, big), treetest.Reg("other.bin", 0o644, other),
	}), converter.Options{}, &authn.Basic{Username: user, Password: pass})
	mf, _ := img.Manifest()
	blobDigest := mf.Layers[0].Digest.String()
	sq := startSquid(t, nil)
	proxyURL := fmt.Sprintf("http://127.0.0.1:%d", sq.port)
	ping := proxyURL + "/squid-internal-mgr/info"
	cfg := fmt.Sprintf(`{"device":{"backend":{"type":"registry","config":{"host":%q,"repo":"px","scheme":"http","auth":"dXNlcjpzM2NyZXQ=","timeout":5,"connect_timeout":2,"retry_limit":2,
		"proxy":{"url":%q,"ping_url":%q,"check_interval":1,"fallback":true}}},"cache":{"type":"blobcache","config":{"work_dir":%q}}},
		"mode":"direct","digest_validate":false,"amplify_io":1048576,"fs_prefetch":{"enable":false}}`, r.Host, proxyURL, ping, t.TempDir())
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	d := start(t, "--bootstrap", boot, "--config", cfgPath, "--dependency-prefetch=false", "--sibling-prefetch=false")
	viaSquid := func() int { return strings.Count(sq.log(), "/v2/px/blobs/"+blobDigest) }

	// Through squid.
	f, err := os.Open(filepath.Join(d.mnt, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(big))
	if _, err := io.ReadFull(f, got[:6<<20]); err != nil {
		t.Fatal(err)
	}
	if viaSquid() == 0 {
		t.Fatalf("no blob request went through squid:\n%s", sq.log())
	}
	// squid killed mid-read: the rest comes from the registry.
	sq.stop()
	before := r.Stats().BlobBytesServed
	if _, err := io.ReadFull(f, got[6<<20:]); err != nil {
		t.Fatalf("reading on with squid down: %v", err)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("big.bin read across the proxy's failure differs from the source")
	}
	if r.Stats().BlobBytesServed == before {
		t.Fatal("nothing was read from the registry directly while squid was down")
	}
	// The next ping fails: the proxy is taken as down.
	d.waitLog(t, "registry proxy unhealthy")
	// squid back: after the next ping, blobs go through it again.
	startSquid(t, sq)
	n0 := viaSquid()
	d.waitLog(t, "registry proxy recovered")
	if !strings.Contains(sq.log(), "squid-internal-mgr/info") {
		t.Fatalf("squid's log shows no ping:\n%s", sq.log())
	}
	b, err := os.ReadFile(filepath.Join(d.mnt, "other.bin"))
	if err != nil || !bytes.Equal(b, other) {
		t.Fatalf("other.bin after squid's return: %v", err)
	}
	if viaSquid() == n0 {
		t.Fatalf("no blob request went through squid after it came back:\n%s", sq.log())
	}
	for _, route := range []string{"proxy", "direct"} {
		if v, ok := d.metric(t, `nydusd_registry_proxy_requests_total{mountpoint="/",route="`+route+`"}`); !ok || v == 0 {
			t.Fatalf("no %s requests in /metrics (%v)", route, ok)
		}
	}
	l := sq.log()
	if !strings.Contains(l, "Bearer") {
		t.Fatalf("squid's log shows no relayed Authorization header: the credential check below could not fail:\n%s", l)
	}
	if strings.Contains(l, "dXNlcjpzM2NyZXQ") || strings.Contains(l, "s3cret") {
		t.Fatal("a credential reached squid's log")
	}
	if strings.Contains(d.log.String(), "s3cret") || strings.Contains(d.log.String(), "dXNlcjpzM2NyZXQ") {
		t.Fatal("a credential reached nydusd's log")
	}
}
