package benchkit

import (
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/nydus-go/nydus/internal/atomicfile"
)

// SpliceSection replaces the section of the Markdown file at path that
// starts at the heading line, up to the next heading of level 1 or 2
// outside code fences, with body; other sections are kept. A missing
// section is appended; a missing file is created starting with header.
// The file is replaced atomically.
func SpliceSection(path, heading, body, header string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		data = []byte(header)
	} else if err != nil {
		return err
	}
	lines := strings.SplitAfter(string(data), "\n")
	start, end := -1, len(lines)
	fence := false
	for i, l := range lines {
		t := strings.TrimRight(l, "\r\n")
		if strings.HasPrefix(strings.TrimSpace(t), "```") {
			fence = !fence
			continue
		}
		if fence {
			continue
		}
		if start < 0 {
			if strings.TrimRight(t, " ") == heading {
				start = i
			}
			continue
		}
		if strings.HasPrefix(t, "## ") || strings.HasPrefix(t, "# ") {
			end = i
			break
		}
	}
	var out string
	if start < 0 {
		out = strings.TrimRight(string(data), "\n") + "\n\n" + body
	} else {
		out = strings.Join(lines[:start], "") + strings.TrimRight(body, "\n") + "\n"
		if end < len(lines) {
			out += "\n" + strings.Join(lines[end:], "")
		}
	}
	out = strings.TrimRight(out, "\n") + "\n"
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, []byte(out), 0o644)
}
