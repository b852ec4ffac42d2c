package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"testing"

	"github.com/nydus-go/nydus/pkg/errdefs"
)

// TestHTTPStatus: the API maps an error's kind, wherever it is in the
// chain, to upstream's status and code; an error of no kind (a network
// failure while opening an image, say) is a server error, not the
// caller's fault.
func TestHTTPStatus(t *testing.T) {
	_, missing := os.Open("/nonexistent/image.boot")
	for _, c := range []struct {
		err    error
		status int
		code   string
	}{
		{errdefs.Errorf(errdefs.ErrInvalid, "bad %s", "config"), 400, "EINVAL"},
		{fmt.Errorf("bootstrap: %w", errdefs.ErrCorrupt), 400, "EINVAL"},
		{fmt.Errorf("mount: %w", missing), 404, "ENOENT"},
		{errdefs.Errorf(errdefs.ErrConflict, "busy"), 409, "EEXIST"},
		{errdefs.Errorf(errdefs.ErrUnsupported, "no"), 501, "ENOTSUP"},
		{fmt.Errorf("registry: %w", errdefs.ErrUnavailable), 503, "EIO"},
		{fmt.Errorf("registry: %w", &net.OpError{Op: "dial", Err: errors.New("connection refused")}), 500, "EIO"},
	} {
		if st, code := httpStatus(c.err); st != c.status || code != c.code {
			t.Errorf("%v: %d %s, want %d %s", c.err, st, code, c.status, c.code)
		}
	}
}
