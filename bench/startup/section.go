package main

import (
	"os"
	"strings"

	"github.com/nydus-go/nydus/internal/atomicfile"
)

// replaceSection replaces the section under heading (up to the next "## "
// heading) in a Markdown file with body, or appends body; other sections
// are kept. The file is replaced atomically (internal/atomicfile).
func replaceSection(path, heading, body string) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	var out string
	if i := strings.Index(s, heading+"\n"); i >= 0 {
		rest := s[i+len(heading)+1:]
		end := len(s)
		if j := strings.Index(rest, "\n## "); j >= 0 {
			end = i + len(heading) + 1 + j + 1
		}
		out = s[:i] + strings.TrimRight(body, "\n") + "\n\n" + s[end:]
	} else {
		out = strings.TrimRight(s, "\n") + "\n\n" + body
	}
	return atomicfile.WriteFile(path, []byte(out), 0o644)
}
