// Package version holds the build's version strings, set with -ldflags.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release version, e.g. v0.1.0.
var Version = "v0.1.0-dev"

// GitCommit is the commit the binary was built from.
var GitCommit = ""

// BuildTime is the UTC build timestamp.
var BuildTime = ""

// Commit returns GitCommit, falling back to the VCS info Go embeds.
func Commit() string {
	if GitCommit != "" {
		return GitCommit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

// String renders the multi-line version report upstream tools parse
// (`Version:\s*(v.*)` and a `Git Commit:` line).
func String(binary string) string {
	bt := BuildTime
	if bt == "" {
		bt = "unknown"
	}
	return fmt.Sprintf("Version: \t%s\nGit Commit: \t%s\nBuild Time: \t%s\nProfile: \trelease\nGo: \t%s %s %s/%s\nBinary: \t%s\n",
		Version, Commit(), bt, runtime.Compiler, runtime.Version(), runtime.GOOS, runtime.GOARCH, binary)
}
