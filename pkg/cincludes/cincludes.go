// Package cincludes reads the #include directives of C and C++ sources
// and headers, and lists where a compiler looks for them. nydusd uses it
// to fetch the headers a header includes while the preprocessor is still
// reading the first one, so that its serial chain of opens finds them
// local.
//
// It reads directives, not the preprocessor's logic: an #include inside
// an #if that is false counts too (a superset), and names built by
// macros ("#include FOO_H") are left out. It is a leaf: bytes in, names
// out. Parse takes untrusted input and never panics.
//
// Entry points: [Parse] lists a file's [Include] directives, [SystemDirs]
// the directories a compiler searches and [Resolve] the candidate paths of
// one include.
package cincludes

import (
	"bytes"
	"path"
	"strings"
)

// Include is one #include (or #include_next) directive.
type Include struct {
	// Name is what is between the quotes or angle brackets.
	Name string
	// Quoted is true for "name", which is looked up in the including
	// file's directory first.
	Quoted bool
	// Next is true for #include_next, which continues the search after
	// the directory the including file was found in.
	Next bool
}

// Bounds of Parse.
const (
	// MaxSize is the largest file Parse reads.
	MaxSize     = 4 << 20
	maxIncludes = 512
	maxName     = 512
)

// Parse returns the #include directives of a C or C++ file, in order.
func Parse(src []byte) []Include {
	var out []Include
	if len(src) > MaxSize {
		src = src[:MaxSize]
	}
	for len(src) > 0 && len(out) < maxIncludes {
		line := src
		if i := bytes.IndexByte(src, '\n'); i >= 0 {
			line, src = src[:i], src[i+1:]
		} else {
			src = nil
		}
		line = bytes.TrimLeft(line, " \t")
		if len(line) == 0 || line[0] != '#' {
			continue
		}
		line = bytes.TrimLeft(line[1:], " \t")
		var inc Include
		switch {
		case bytes.HasPrefix(line, []byte("include_next")):
			inc.Next, line = true, line[len("include_next"):]
		case bytes.HasPrefix(line, []byte("include")):
			line = line[len("include"):]
		default:
			continue
		}
		line = bytes.TrimLeft(line, " \t")
		if len(line) < 3 {
			continue
		}
		var end byte
		switch line[0] {
		case '"':
			end, inc.Quoted = '"', true
		case '<':
			end = '>'
		default:
			continue // a macro
		}
		i := bytes.IndexByte(line[1:], end)
		if i <= 0 || i > maxName {
			continue
		}
		inc.Name = string(line[1 : 1+i])
		if !validName(inc.Name) {
			continue
		}
		out = append(out, inc)
	}
	return out
}

// validName refuses names that cannot be a header below an include
// directory.
func validName(n string) bool {
	if strings.HasPrefix(n, "/") || strings.ContainsAny(n, "\x00\r") {
		return false
	}
	for _, part := range strings.Split(n, "/") {
		if part == ".." {
			return false
		}
	}
	return true
}

// IsCXX reports whether a file is C++ by its path: below
// /usr/include/c++, or with a C++ extension.
func IsCXX(p string) bool {
	switch path.Ext(p) {
	case ".hh", ".hpp", ".hxx", ".h++", ".cc", ".cpp", ".cxx", ".c++", ".tcc":
		return true
	}
	return strings.Contains(p, "/include/c++/")
}

// IsSource reports whether a file's path is one the preprocessor reads:
// a C or C++ source or header by its extension, or any file below an
// include directory (C++'s <vector> has none).
func IsSource(p string) bool {
	switch path.Ext(p) {
	case ".h", ".hh", ".hpp", ".hxx", ".h++", ".c", ".cc", ".cpp", ".cxx", ".c++", ".tcc", ".inc", ".def":
		return true
	}
	return strings.Contains(p, "/include/")
}

// Resolve returns the candidate paths of an include made from file
// (absolute, in the image), in search order: a quoted name in file's
// directory first, then each of dirs (the system include directories,
// in order); an #include_next only in the dirs after the one file is
// in.
func Resolve(file string, inc Include, dirs []string) []string {
	var out []string
	self := path.Dir(file)
	if inc.Quoted && !inc.Next {
		out = append(out, path.Join(self, inc.Name))
	}
	start := 0
	if inc.Next {
		start = len(dirs)
		for i, d := range dirs {
			if strings.HasPrefix(file, d+"/") {
				start = i + 1
				break
			}
		}
	}
	for _, d := range dirs[start:] {
		out = append(out, path.Join(d, inc.Name))
	}
	return out
}

// SystemDirs returns the directories GCC searches for <name> on Debian
// and most Linux distributions, in its order, given the image's
// /usr/lib/gcc/<triple>/<version> directories (gccDirs): each of those
// directories' include and include-fixed, /usr/local/include, then
// /usr/include/<triple> and /usr/include. With cxx, C++'s directories
// (/usr/include/c++/<version> and its <triple> directory) come first.
func SystemDirs(gccDirs []string, cxx bool) []string {
	var cxxDirs, gcc, triples []string
	seen := map[string]bool{}
	for _, g := range gccDirs {
		version, triple := path.Base(g), path.Base(path.Dir(g))
		cxxDirs = append(cxxDirs, "/usr/include/c++/"+version, "/usr/include/"+triple+"/c++/"+version, "/usr/include/c++/"+version+"/backward")
		gcc = append(gcc, g+"/include", g+"/include-fixed")
		if !seen[triple] {
			seen[triple] = true
			triples = append(triples, "/usr/include/"+triple)
		}
	}
	var out []string
	if cxx {
		out = append(out, cxxDirs...)
	}
	out = append(out, gcc...)
	out = append(out, "/usr/local/include")
	out = append(out, triples...)
	return append(out, "/usr/include")
}
