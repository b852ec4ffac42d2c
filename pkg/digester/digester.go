package digester

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"

	"github.com/zeebo/blake3"

	"github.com/nydus-go/nydus/pkg/errdefs"
)

// Algorithm identifies a digest algorithm by its on-disk value.
type Algorithm uint32

// On-disk values of the digest algorithms (upstream digest::Algorithm).
const (
	// Blake3 is BLAKE3 with a 32-byte output, the upstream default.
	Blake3 Algorithm = 0
	// Sha256 is SHA-256; forced by upstream for ref and tarfs conversions.
	Sha256 Algorithm = 1
)

// Size is the length of a digest in bytes.
const Size = 32

// ErrUnsupported is returned for an unknown algorithm name or value. It
// matches errdefs.ErrUnsupported.
var ErrUnsupported = errdefs.New(errdefs.ErrUnsupported, "unsupported digest algorithm")

// String returns the command-line name of a, "blake3" or "sha256", or
// "Algorithm(N)" for an unknown value. (Upstream's Rust Display prints
// "Blake3"/"Sha256"; its parser accepts only the lower-case names.)
func (a Algorithm) String() string {
	switch a {
	case Blake3:
		return "blake3"
	case Sha256:
		return "sha256"
	}
	return fmt.Sprintf("Algorithm(%d)", uint32(a))
}

// Valid reports whether a is a known algorithm.
func (a Algorithm) Valid() bool {
	return a == Blake3 || a == Sha256
}

// ParseAlgorithm parses "blake3" or "sha256".
func ParseAlgorithm(s string) (Algorithm, error) {
	switch s {
	case "blake3":
		return Blake3, nil
	case "sha256":
		return Sha256, nil
	}
	return Blake3, fmt.Errorf("parse digest algorithm %q: %w (want blake3 or sha256)", s, ErrUnsupported)
}

// Digest is a 32-byte BLAKE3 or SHA-256 digest.
type Digest [Size]byte

// String returns d as 64 lower-case hex characters.
func (d Digest) String() string {
	return hex.EncodeToString(d[:])
}

// IsZero reports whether every byte of d is zero; upstream uses the zero
// digest to mean "not set".
func (d Digest) IsZero() bool {
	return d == Digest{}
}

// ParseDigest parses 64 hex characters into a Digest.
func ParseDigest(s string) (Digest, error) {
	var d Digest
	if len(s) != 2*Size {
		return d, fmt.Errorf("parse digest %q: length %d, want %d hex characters", s, len(s), 2*Size)
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, fmt.Errorf("parse digest %q: %w", s, err)
	}
	return d, nil
}

// Sum returns the digest of data under algo. It panics if algo is not
// valid; validate values read from disk with [Algorithm.Valid] first.
func Sum(algo Algorithm, data []byte) Digest {
	switch algo {
	case Blake3:
		return Digest(blake3.Sum256(data))
	case Sha256:
		return Digest(sha256.Sum256(data))
	}
	panic(fmt.Sprintf("digester.Sum: %v: unsupported digest algorithm", algo))
}

// New returns a new hash.Hash computing algo; its Sum appends 32 bytes. It
// panics if algo is not valid; validate values read from disk with
// [Algorithm.Valid] first.
func New(algo Algorithm) hash.Hash {
	switch algo {
	case Blake3:
		return blake3.New()
	case Sha256:
		return sha256.New()
	}
	panic(fmt.Sprintf("digester.New: %v: unsupported digest algorithm", algo))
}
