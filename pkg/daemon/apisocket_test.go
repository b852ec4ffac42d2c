package daemon

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/nydus-go/nydus/pkg/daemon/api"
)

// TestAPISocketMode: the API socket is 0600 whatever the umask, which
// ServeAPI leaves as it was, and it answers.
func TestAPISocketMode(t *testing.T) {
	for _, mask := range []int{0, 0o022, 0o777} {
		sock := filepath.Join(t.TempDir(), "api.sock")
		old := syscall.Umask(mask)
		closeAPI, err := quietDaemon(Options{}).ServeAPI(context.Background(), sock)
		now := syscall.Umask(old)
		if err != nil {
			t.Fatal(err)
		}
		if now != mask {
			t.Errorf("umask %#o: ServeAPI left it %#o", mask, now)
		}
		st, err := os.Lstat(sock)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
			t.Errorf("umask %#o: the socket's mode is %v, want 0600", mask, st.Mode())
		}
		c := api.NewClient(sock)
		if _, err := c.DaemonInfo(t.Context()); err != nil {
			t.Errorf("GET /api/v1/daemon: %v", err)
		}
		c.Close()
		closeAPI()
		if _, err := os.Lstat(sock); !os.IsNotExist(err) {
			t.Errorf("the socket is left after the API is closed: %v", err)
		}
	}
}
