package main

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

// source is one "deb" entry of apt's configuration.
type source struct {
	uri        string
	suites     []string
	components []string
	file       string
}

// cmdMirror prints the URI of the first enabled "deb" source that serves
// the suite and component, as apt itself is configured, so no mirror host
// is ever written into the project.
func cmdMirror(args []string) error {
	fs := flag.NewFlagSet("mirror", flag.ContinueOnError)
	suite := fs.String("suite", "bookworm", "suite the mirror must serve")
	comp := fs.String("component", "main", "component the mirror must serve")
	aptDir := fs.String("apt", "/etc/apt", "apt configuration directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	srcs, err := aptSources(*aptDir)
	if err != nil {
		return err
	}
	for _, s := range srcs {
		if !slices.Contains(s.suites, *suite) || !slices.Contains(s.components, *comp) {
			continue
		}
		if strings.HasPrefix(s.uri, "http://") || strings.HasPrefix(s.uri, "https://") || strings.HasPrefix(s.uri, "file:") {
			fmt.Println(strings.TrimRight(s.uri, "/"))
			return nil
		}
	}
	return fmt.Errorf("no enabled 'deb' source for suite %s, component %s in %s/sources.list or %s/sources.list.d/*.{list,sources} (set BENCH_MIRROR to override)", *suite, *comp, *aptDir, *aptDir)
}

// aptSources reads sources.list and sources.list.d/*.list and *.sources in
// apt's order; files with other extensions are ignored, as apt does.
func aptSources(dir string) ([]source, error) {
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
	var out []source
	for _, f := range files {
		var s []source
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
func parseOneLine(path string) ([]source, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []source
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
		out = append(out, source{uri: fields[0], suites: fields[1:2], components: fields[2:], file: path})
	}
	return out, sc.Err()
}

// parseDeb822 parses a DEB822 .sources file: stanzas separated by blank
// lines, "Field: value" lines, continuation lines starting with white
// space, comment lines starting with '#'.
func parseDeb822(path string) ([]source, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []source
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
			out = append(out, source{uri: uri, suites: strings.Fields(fields["suites"]),
				components: strings.Fields(fields["components"]), file: path})
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
