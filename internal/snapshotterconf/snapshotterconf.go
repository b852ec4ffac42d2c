// Package snapshotterconf writes the configuration file of upstream
// nydus-snapshotter when it drives our nydusd, for the harnesses that
// run it: the e2e tests and the startup benchmark.
package snapshotterconf

import "fmt"

// Config is nydus-snapshotter's config.toml (version 1) as the harnesses
// use it: FUSE, no system controller, no cgroups, no metrics listener,
// logs on stdout.
type Config struct {
	// Root is the snapshotter's state directory, Address its gRPC socket.
	Root, Address string
	// DaemonMode is "dedicated" (a nydusd per image) or "shared" (one
	// nydusd mounting every image through its API).
	DaemonMode string
	// NydusdConfig is the nydusd configuration template (JSON);
	// NydusdPath and NydusImagePath the binaries.
	NydusdConfig, NydusdPath, NydusImagePath string
	// RecoverPolicy is "none" (default), "restart" or "failover".
	RecoverPolicy string
	// LogLevel is the snapshotter's (default "warn").
	LogLevel string
}

// TOML returns the configuration file.
func (c Config) TOML() string {
	recover := c.RecoverPolicy
	if recover == "" {
		recover = "none"
	}
	level := c.LogLevel
	if level == "" {
		level = "warn"
	}
	return fmt.Sprintf(`version = 1
root = %q
address = %q
daemon_mode = %q
[system]
enable = false
[daemon]
nydusd_config = %q
nydusd_path = %q
nydusimage_path = %q
fs_driver = "fusedev"
recover_policy = %q
[cgroup]
enable = false
[log]
log_to_stdout = true
level = %q
[metrics]
address = ""
`, c.Root, c.Address, c.DaemonMode, c.NydusdConfig, c.NydusdPath, c.NydusImagePath, recover, level)
}
