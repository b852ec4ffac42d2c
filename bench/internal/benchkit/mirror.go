// Package benchkit holds helpers shared by the benchmark drivers under
// bench/: apt mirror discovery and package installation, CPU-idle
// detection, timed runs of child processes and Markdown sections.
package benchkit

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Source is one "deb" entry of apt's configuration.
type Source struct {
	URI        string
	Suites     []string
	Components []string
	File       string
}

// CmdMirror prints the URI of the first enabled "deb" source that serves
// the suite and component, as apt itself is configured, so no mirror host
// is ever written into the project.
func CmdMirror(args []string) error {
	fs := flag.NewFlagSet("mirror", flag.ContinueOnError)
	suite := fs.String("suite", "bookworm", "suite the mirror must serve")
	comp := fs.String("component", "main", "component the mirror must serve")
	aptDir := fs.String("apt", "/etc/apt", "apt configuration directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	uri, err := Mirror(*aptDir, *suite, *comp)
	if err != nil {
		return err
	}
	fmt.Println(uri)
	return nil
}

// Mirror returns the URI (without a trailing slash) of the first enabled
// "deb" source of apt's configuration in aptDir (/etc/apt) that serves
// the suite and component over http, https or file.
func Mirror(aptDir, suite, component string) (string, error) {
	srcs, err := AptSources(aptDir)
	if err != nil {
		return "", err
	}
	for _, s := range srcs {
		if !slices.Contains(s.Suites, suite) || !slices.Contains(s.Components, component) {
			continue
		}
		if strings.HasPrefix(s.URI, "http://") || strings.HasPrefix(s.URI, "https://") || strings.HasPrefix(s.URI, "file:") {
			return strings.TrimRight(s.URI, "/"), nil
		}
	}
	return "", fmt.Errorf("no enabled 'deb' source for suite %s, component %s in %s/sources.list or %s/sources.list.d/*.{list,sources} (set BENCH_MIRROR to override)", suite, component, aptDir, aptDir)
}

// AptSources reads sources.list and sources.list.d/*.list and *.sources in
// apt's order; files with other extensions are ignored, as apt does.
func AptSources(dir string) ([]Source, error) {
	var files []string
	if _, err := os.Stat(filepath.Join(dir, "sources.list")); err == nil {
		files = append(files, filepath.Join(dir, "sources.list"))
	}
	entries, err := os.ReadDir(filepath.Join(dir, "sources.list.d"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range entries { // ReadDir sorts by name
		n := e.Name()
		if strings.HasSuffix(n, ".list") || strings.HasSuffix(n, ".sources") {
			files = append(files, filepath.Join(dir, "sources.list.d", n))
		}
	}
	var out []Source
	for _, f := range files {
		var s []Source
		var err error
		if strings.HasSuffix(f, ".sources") {
			s, err = parseDeb822(f)
		} else {
			s, err = parseOneLine(f)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s...)
	}
	return out, nil
}

// parseOneLine parses "deb [opts] uri suite component..." lines.
func parseOneLine(path string) ([]Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Source
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) < 3 || fields[0] != "deb" {
			continue
		}
		fields = fields[1:]
		if strings.HasPrefix(fields[0], "[") {
			// Options: up to and including the field that ends with "]".
			for len(fields) > 0 {
				last := strings.HasSuffix(fields[0], "]")
				fields = fields[1:]
				if last {
					break
				}
			}
		}
		if len(fields) < 2 {
			continue
		}
		out = append(out, Source{URI: fields[0], Suites: fields[1:2], Components: fields[2:], File: path})
	}
	return out, sc.Err()
}

// parseDeb822 parses a DEB822 .sources file: stanzas separated by blank
// lines, "Field: value" lines, continuation lines starting with white
// space, comment lines starting with '#'.
func parseDeb822(path string) ([]Source, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []Source
	fields := map[string]string{}
	last := ""
	flush := func() {
		defer func() { fields = map[string]string{}; last = "" }()
		if len(fields) == 0 || strings.EqualFold(strings.TrimSpace(fields["enabled"]), "no") {
			return
		}
		if !slices.Contains(strings.Fields(fields["types"]), "deb") {
			return
		}
		for _, uri := range strings.Fields(fields["uris"]) {
			out = append(out, Source{URI: uri, Suites: strings.Fields(fields["suites"]),
				Components: strings.Fields(fields["components"]), File: path})
		}
	}
	for _, line := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(line, "#"):
		case strings.TrimSpace(line) == "":
			flush()
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				fields[last] += " " + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
	}
	flush()
	return out, nil
}
