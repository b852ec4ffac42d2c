package errdefs_test

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"

	"github.com/nydus-go/nydus/pkg/errdefs"
)

func TestKindsMatchTheStandardLibrary(t *testing.T) {
	for _, c := range []struct{ kind, std error }{
		{errdefs.ErrNotFound, fs.ErrNotExist},
		{errdefs.ErrPermission, fs.ErrPermission},
		{errdefs.ErrInvalid, fs.ErrInvalid},
		{errdefs.ErrUnsupported, errors.ErrUnsupported},
	} {
		err := fmt.Errorf("blob %s: %w", "abc", c.kind)
		if !errors.Is(err, c.kind) || !errors.Is(err, c.std) {
			t.Errorf("%v: does not match its kind or %v", err, c.std)
		}
	}
	if errors.Is(errdefs.ErrCorrupt, fs.ErrNotExist) || errors.Is(errdefs.ErrNotFound, fs.ErrInvalid) {
		t.Error("a kind matches a foreign standard error")
	}
}

// Errors name what failed and wrap a kind; the edge translates the kind.
func Example() {
	err := fmt.Errorf("registry 127.0.0.1:5000: image app:1: %w", errdefs.ErrNotFound)
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		fmt.Println("exit 2:", err)
	default:
		fmt.Println("exit 1:", err)
	}
	// Output: exit 2: registry 127.0.0.1:5000: image app:1: not found
}

func TestNew(t *testing.T) {
	errBlob := errdefs.New(errdefs.ErrCorrupt, "corrupt blob data")
	err := fmt.Errorf("chunk 3: %w", errBlob)
	if !errors.Is(err, errBlob) || !errors.Is(err, errdefs.ErrCorrupt) || errors.Is(err, errdefs.ErrNotFound) {
		t.Fatal("a package sentinel does not match its kind alone")
	}
	if !errors.Is(errdefs.New(errdefs.ErrNotFound, "no such path"), fs.ErrNotExist) {
		t.Fatal("a package sentinel does not match its kind's standard error")
	}
	if err.Error() != "chunk 3: corrupt blob data" {
		t.Fatal(err)
	}
}

func TestErrorf(t *testing.T) {
	cause := errors.New("disk on fire")
	err := errdefs.Errorf(errdefs.ErrConflict, "mount %s: %w", "/a", cause)
	if err.Error() != "mount /a: disk on fire" || !errors.Is(err, errdefs.ErrConflict) || !errors.Is(err, cause) || errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("%v: kind or cause lost", err)
	}
}
