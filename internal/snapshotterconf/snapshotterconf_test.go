package snapshotterconf

import (
	"strings"
	"testing"
)

func TestTOML(t *testing.T) {
	s := Config{Root: "/r", Address: "/r/s.sock", DaemonMode: "shared", NydusdConfig: "/c.json", NydusdPath: "/bin/nydusd", NydusImagePath: "/bin/nydus-image"}.TOML()
	for _, want := range []string{`root = "/r"`, `daemon_mode = "shared"`, `nydusd_path = "/bin/nydusd"`, `recover_policy = "none"`, `level = "warn"`, `fs_driver = "fusedev"`} {
		if !strings.Contains(s, want) {
			t.Errorf("config lacks %s:\n%s", want, s)
		}
	}
}
