package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"testing"

	"github.com/nydus-go/nydus/pkg/blob"
)

func hdrLink(name, target string) tar.Header {
	return tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target}
}

func sha256hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// extractBootstrap writes the inline bootstrap of a layer blob to p.
func extractBootstrap(t *testing.T, b []byte, p string) {
	t.Helper()
	_ = context.Background()
	r, err := blob.Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	boot, err := r.Bootstrap()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, boot, 0o644); err != nil {
		t.Fatal(err)
	}
}
