package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/nydus-go/nydus/bench/internal/benchkit"
)

// cpuProfile runs the profile subcommand of this program (self) on the
// layer and returns the profile's `go tool pprof -top` text for the
// report (flat, then cumulative, 25 nodes each) and its summary.
func cpuProfile(ctx context.Context, goCmd, self, outDir, layer string) (top, summary string, err error) {
	logf("CPU profile of one in-process build of %s", layer)
	prof := filepath.Join(outDir, "cpu.pprof")
	cmd := exec.CommandContext(ctx, self, "profile", "-cpuprofile", prof, "-o", filepath.Join(outDir, "profile.blob"), layer)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if _, err := benchkit.Run(cmd); err != nil {
		return "", "", fmt.Errorf("profile build: %w", err)
	}
	pprof := func(args ...string) (string, error) {
		args = append(append([]string{"tool", "pprof"}, args...), self, prof)
		out, err := exec.CommandContext(ctx, goCmd, args...).Output()
		if err != nil {
			return "", fmt.Errorf("%s tool pprof: %w", goCmd, err)
		}
		return string(out), nil
	}
	flat, err := pprof("-top", "-nodecount=25")
	if err != nil {
		return "", "", err
	}
	cum, err := pprof("-top", "-cum", "-nodecount=25")
	if err != nil {
		return "", "", err
	}
	all, err := pprof("-top", "-cum", "-nodecount=1000")
	if err != nil {
		return "", "", err
	}
	return formatProfile(flat, cum), summariseProfile(all), nil
}

// cumHeader replaces pprof's preamble and column header in the
// cumulative listing.
const cumHeader = "      flat  flat%   sum%        cum   cum%  (sorted by cum)"

var flatHeaderRE = regexp.MustCompile(`^ *flat`)

// formatProfile joins the flat listing (without its "File:" and "Build
// ID:" lines) and the cumulative one (without its preamble, under
// cumHeader), separated by a blank line.
func formatProfile(flat, cum string) string {
	var b strings.Builder
	for _, l := range lines(flat) {
		if !strings.HasPrefix(l, "Build ID:") && !strings.HasPrefix(l, "File:") {
			b.WriteString(l + "\n")
		}
	}
	b.WriteString("\n" + cumHeader + "\n")
	ls := lines(cum)
	for i, l := range ls {
		if flatHeaderRE.MatchString(l) {
			for _, m := range ls[i+1:] {
				b.WriteString(m + "\n")
			}
			break
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

// lines splits text into lines, without a last empty one.
func lines(text string) []string {
	if text == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(text, "\n"), "\n")
}
