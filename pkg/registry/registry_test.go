package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

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
