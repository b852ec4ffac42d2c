package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
)

// pushBlob uploads b monolithically and returns its digest.
func pushBlob(t *testing.T, base, repo string, b []byte) string {
	t.Helper()
	d := fmt.Sprintf("sha256:%x", sha256.Sum256(b))
	resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "application/octet-stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "http") {
		loc = base + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, _ := http.NewRequest(http.MethodPut, loc+sep+"digest="+d, bytes.NewReader(b))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %s", resp.Status)
	}
	return d
}

func TestReadRange(t *testing.T) {
	srv := httptest.NewServer(ggcr.New())
	defer srv.Close()
	data := bytes.Repeat([]byte("0123456789"), 1000)
	d := pushBlob(t, srv.URL, "test/app", data)
	host := strings.TrimPrefix(srv.URL, "http://")
	c, err := New(context.Background(), Config{Host: host, Repo: "test/app", Scheme: "http"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.ReadRange(context.Background(), d, 1234, 100)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data[1234:1334]) {
		t.Fatalf("range mismatch: %q", got)
	}
	// A bare hex id works too; a missing blob is a clear, permanent error.
	if _, err := c.ReadRange(context.Background(), strings.TrimPrefix(d, "sha256:"), 0, 10); err != nil {
		t.Fatal(err)
	}
	_, err = c.ReadRange(context.Background(), "sha256:"+strings.Repeat("0", 64), 0, 10)
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), host) {
		t.Fatalf("missing blob error: %v", err)
	}
}

// TestBasicAuthAndRedirect checks credentials are sent, never appear in
// errors, and that redirects to blob storage are followed with the Range.
func TestBasicAuthAndRedirect(t *testing.T) {
	reg := ggcr.New()
	storage := httptest.NewServer(reg)
	defer storage.Close()
	data := []byte(strings.Repeat("abcdefgh", 512))
	d := pushBlob(t, storage.URL, "secret/app", data)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != "alice" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if strings.Contains(r.URL.Path, "/blobs/") {
			http.Redirect(w, r, storage.URL+r.URL.Path, http.StatusTemporaryRedirect)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	defer front.Close()
	host := strings.TrimPrefix(front.URL, "http://")
	auth := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	c, err := New(context.Background(), Config{Host: host, Repo: "secret/app", Scheme: "http", Auth: auth})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.ReadRange(context.Background(), d, 8, 16)
	if err != nil || string(got) != "abcdefghabcdefgh" {
		t.Fatalf("got %q, %v", got, err)
	}
	bad := base64.StdEncoding.EncodeToString([]byte("alice:wrong"))
	c, err = New(context.Background(), Config{Host: host, Repo: "secret/app", Scheme: "http", Auth: bad})
	if err == nil {
		_, err = c.ReadRange(context.Background(), d, 0, 8)
	}
	if err == nil || strings.Contains(err.Error(), "wrong") || strings.Contains(err.Error(), bad) {
		t.Fatalf("bad credentials: %v", err)
	}
	t.Logf("bad credentials: %v", err)
}

// TestCACertFiles: ca_cert_files makes a registry whose certificate is
// signed by that CA trusted; without it the TLS handshake fails; a file
// without a certificate is refused by name.
func TestCACertFiles(t *testing.T) {
	blob := []byte("0123456789abcdef")
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(blob))
	}))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	host := srv.Listener.Addr().String()
	ctx := context.Background()

	c, err := New(ctx, Config{Host: host, Repo: "r", CACertFiles: []string{ca}, RetryLimit: 0})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.ReadRange(ctx, "sha256:"+strings.Repeat("a", 64), 4, 6); err != nil || string(got) != "456789" {
		t.Fatalf("with ca_cert_files: %q, %v", got, err)
	}
	if _, err := New(ctx, Config{Host: host, Repo: "r"}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without ca_cert_files: %v, want a certificate error", err)
	}
	empty := filepath.Join(dir, "empty.pem")
	os.WriteFile(empty, []byte("not a certificate\n"), 0o644)
	if _, err := New(ctx, Config{Host: host, Repo: "r", CACertFiles: []string{empty}}); err == nil || !strings.Contains(err.Error(), "ca_cert_files: "+empty) {
		t.Fatalf("a file without a certificate: %v", err)
	}
}
