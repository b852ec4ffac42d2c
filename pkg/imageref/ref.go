package imageref

import (
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Ref locates an image: a registry reference, an OCI layout directory
// (`oci:DIR[:TAG]`, a Nydus-Go extension) or an OCI layout tar archive
// (upstream nydusify's --source-archive/--target-archive).
type Ref struct {
	// Name is the registry reference, when the image is in a registry.
	Name name.Reference
	// Dir and Tag locate an image in an OCI layout directory; an empty
	// Tag picks the layout's only image.
	Dir, Tag string
	// Archive is an OCI layout tar archive.
	Archive string
	raw     string
}

// String returns the reference as given.
func (r Ref) String() string { return r.raw }

// IsRegistry reports whether the image lives in a registry.
func (r Ref) IsRegistry() bool { return r.Name != nil }

// Parse parses an image reference. `oci:DIR[:TAG]` names an OCI layout
// directory; with archive set, s is an OCI layout tar file. A registry
// reference to a plain-HTTP registry needs ro.PlainHTTP.
func Parse(s string, archive bool, ro RegistryOptions) (Ref, error) {
	if archive {
		if s == "" {
			return Ref{}, fmt.Errorf("invalid reference: empty OCI layout archive path")
		}
		return Ref{Archive: s, raw: s}, nil
	}
	if rest, ok := strings.CutPrefix(s, "oci:"); ok {
		dir, tag := rest, ""
		if i := strings.LastIndexByte(rest, ':'); i > 0 && !strings.Contains(rest[i:], "/") {
			dir, tag = rest[:i], rest[i+1:]
		}
		if dir == "" {
			return Ref{}, fmt.Errorf("invalid reference %q: empty OCI layout directory", s)
		}
		return Ref{Dir: dir, Tag: tag, raw: s}, nil
	}
	var opts []name.Option
	if ro.PlainHTTP {
		opts = append(opts, name.Insecure)
	}
	n, err := name.ParseReference(s, opts...)
	if err != nil {
		return Ref{}, fmt.Errorf("invalid image reference %q: %w", s, err)
	}
	return Ref{Name: n, raw: s}, nil
}
