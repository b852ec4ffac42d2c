// Package pyimports reads which modules a compiled Python module (a
// ".pyc" file of CPython 3.8 or later) may import when it is loaded, and
// finds the files of those modules the way CPython's path finder does.
// nydusd uses it to fetch a module's imports while the interpreter is
// still executing the module, so that Python's serial chain of imports
// finds its files local.
//
// It reads the module's top-level code object only: the names it refers
// to (co_names, where every "import x" and "from .x import y" leaves x)
// and the strings of its tuple constants (the "from" lists). That is a
// superset of what the module imports when it is loaded; Resolve keeps
// the names that are modules in the image. Imports inside functions run
// later, if ever, and are left to the next read.
//
// It is a leaf: bytes in (io.ReaderAt), names out. Read takes untrusted
// input: a malformed file gives an error, never a panic, and bounded
// work.
//
// Entry points: [Read] reads a compiled module's [Module], [Locate] finds
// the [Location] of a module from its path and [Resolve] turns a module's
// imports into the files the interpreter reads, through an [FS].
package pyimports

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// ErrNotPyc means the file does not start with a known CPython bytecode
// magic number.
var ErrNotPyc = errors.New("pyimports: not a CPython 3.8+ .pyc file")

// Module is what a compiled module's top-level code refers to.
type Module struct {
	// Imports are the top-level code's import statements, read from its
	// bytecode, in order. Exact says they were: Read knows the bytecode
	// of the CPython version that wrote the file (3.8 to 3.13).
	// Otherwise Resolve works from Names and FromLists.
	Imports []Import
	Exact   bool
	// Names are the top-level code's names (co_names), in order:
	// imported modules ("os", "concurrent.futures", the "x" of
	// "from .x import y") among the other global and attribute names.
	Names []string
	// FromLists are the strings of the top-level code's tuple
	// constants: the names of "from x import a, b" (which may be
	// submodules of x) among other constant strings.
	FromLists []string
}

// Import is one import the module's top-level code runs: "import a.b"
// is {Name: "a.b"}, "from .c import d, e" is {Name: "c", Level: 1,
// From: [d e]}, "from . import f" is {Level: 1, From: [f]}.
type Import struct {
	Name  string
	Level int
	From  []string
}

// Bounds of what Read reads and returns.
const (
	// MaxSize is the largest .pyc file Read parses.
	MaxSize  = 8 << 20
	maxNames = 1024
	maxDepth = 64 // nesting of marshalled containers
	maxItems = 1 << 20
)

// Version ranges by bytecode magic number (the first two bytes,
// little-endian, followed by "\r\n"): CPython 3.8 starts at 3400, and the
// code object's marshalled layout changed in 3.11 (3450 on).
const (
	magicMin     = 3400 // 3.8
	magicLayout2 = 3450 // 3.11: co_nlocals gone, co_localsplusnames...
	magic313     = 3550 // 3.13: opcodes renumbered
	magic314     = 3600 // 3.14: bytecode not known here
	magicMax     = 3999 // 3.x
)

// opcodes are the instructions Read follows in a version's bytecode
// (Lib/opcode.py, dis.opmap).
type opcodes struct{ loadConst, importName, extendedArg byte }

// opcodesFor returns the opcodes of the bytecode a magic number names.
func opcodesFor(magic int) (opcodes, bool) {
	switch {
	case magic < magic313:
		return opcodes{loadConst: 100, importName: 108, extendedArg: 144}, true
	case magic < magic314:
		return opcodes{loadConst: 83, importName: 75, extendedArg: 71}, true
	}
	return opcodes{}, false
}

// Read parses a .pyc file of the given size and returns its top-level
// code's names. Files that are not CPython 3.8+ bytecode fail with
// ErrNotPyc.
func Read(r io.ReaderAt, size int64) (*Module, error) {
	if size < 17 {
		return nil, ErrNotPyc
	}
	if size > MaxSize {
		return nil, fmt.Errorf("pyimports: %d bytes, more than the %d parsed", size, MaxSize)
	}
	b := make([]byte, size)
	if n, err := r.ReadAt(b, 0); int64(n) != size {
		return nil, fmt.Errorf("pyimports: reading %d bytes: %w", size, err)
	}
	magic := int(binary.LittleEndian.Uint16(b))
	if b[2] != '\r' || b[3] != '\n' || magic < magicMin || magic > magicMax {
		return nil, ErrNotPyc
	}
	// The header: magic, flags, then a source mtime and size or a hash.
	p := &parser{b: b, off: 16, layout2: magic >= magicLayout2}
	top, err := p.object(0)
	if err != nil {
		return nil, err
	}
	c, ok := top.(*code)
	if !ok {
		return nil, errors.New("pyimports: the module is not a code object")
	}
	m := &Module{}
	for _, n := range c.names {
		if s, ok := n.(string); ok && len(m.Names) < maxNames {
			m.Names = append(m.Names, s)
		}
	}
	if ops, ok := opcodesFor(magic); ok {
		m.Imports, m.Exact = imports(c, ops), true
	}
	for _, k := range c.consts {
		if t, ok := k.(tuple); ok {
			for _, e := range t {
				if s, ok := e.(string); ok && len(m.FromLists) < maxNames {
					m.FromLists = append(m.FromLists, s)
				}
			}
		}
	}
	return m, nil
}

// Marshalled values the parser keeps: strings, bytes, small ints,
// tuples and code objects; everything else is read past and kept as nil.
type (
	tuple []any
	code  struct {
		bytecode      []byte
		consts, names tuple
	}
)

// imports follows the module's bytecode (2-byte instructions since
// CPython 3.6): each IMPORT_NAME takes its name from co_names, its level
// and "from" list from the two LOAD_CONSTs before it. It stops at the
// first load of the constant "__main__".
func imports(c *code, ops opcodes) []Import {
	var out []Import
	var consts [2]int // the last two LOAD_CONST arguments
	loads := 0
	ext := 0
	b := c.bytecode
	for i := 0; i+1 < len(b) && len(out) < maxNames; i += 2 {
		op, arg := b[i], ext<<8|int(b[i+1])
		ext = 0
		switch op {
		case ops.extendedArg:
			if arg < 1<<20 {
				ext = arg
			}
			continue
		case 0: // CACHE entries (3.11+) between instructions
			continue
		case ops.loadConst:
			if s, ok := c.const_(arg).(string); ok && s == "__main__" {
				// `if __name__ == "__main__":`, where modules put their
				// self-tests (`import doctest`): not run on import, and
				// by convention last.
				return out
			}
			consts[0], consts[1] = consts[1], arg
			loads++
			continue
		case ops.importName:
			if arg >= len(c.names) || loads < 2 {
				break
			}
			name, ok := c.names[arg].(string)
			level, ok2 := c.const_(consts[0]).(int64)
			if !ok || !ok2 || level < 0 || level > 64 {
				break
			}
			imp := Import{Name: name, Level: int(level)}
			if from, ok := c.const_(consts[1]).(tuple); ok {
				for _, f := range from {
					if s, ok := f.(string); ok && s != "*" && len(imp.From) < maxNames {
						imp.From = append(imp.From, s)
					}
				}
			}
			out = append(out, imp)
		}
		loads = 0
	}
	return out
}

func (c *code) const_(i int) any {
	if i < 0 || i >= len(c.consts) {
		return nil
	}
	return c.consts[i]
}

// parser reads CPython's marshal format (Python/marshal.c).
type parser struct {
	b       []byte
	off     int
	layout2 bool
	refs    []any // objects flagged for reference, in order
	items   int   // objects read, bounded by maxItems
}

var errShort = errors.New("pyimports: truncated marshal data")

func (p *parser) byte1() (byte, error) {
	if p.off >= len(p.b) {
		return 0, errShort
	}
	c := p.b[p.off]
	p.off++
	return c, nil
}

func (p *parser) int32() (int32, error) {
	if len(p.b)-p.off < 4 {
		return 0, errShort
	}
	v := int32(binary.LittleEndian.Uint32(p.b[p.off:]))
	p.off += 4
	return v, nil
}

func (p *parser) skip(n int) error {
	if n < 0 || len(p.b)-p.off < n {
		return errShort
	}
	p.off += n
	return nil
}

func (p *parser) bytes(n int) ([]byte, error) {
	at := p.off
	if err := p.skip(n); err != nil {
		return nil, err
	}
	return p.b[at:p.off], nil
}

// length reads a 32-bit count that must fit in what is left.
func (p *parser) length() (int, error) {
	n, err := p.int32()
	if err != nil {
		return 0, err
	}
	if n < 0 || int(n) > len(p.b)-p.off {
		return 0, fmt.Errorf("pyimports: bad length %d at offset %d", n, p.off-4)
	}
	return int(n), nil
}

// object reads one marshalled object.
func (p *parser) object(depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("pyimports: objects nested deeper than %d at offset %d", maxDepth, p.off)
	}
	if p.items++; p.items > maxItems {
		return nil, errors.New("pyimports: too many objects")
	}
	at := p.off
	t, err := p.byte1()
	if err != nil {
		return nil, err
	}
	flagged := t&0x80 != 0
	t &^= 0x80
	ref := -1
	if flagged {
		// The slot is taken before a container's items are read, so
		// their own references count after it (marshal.c r_ref_reserve).
		ref = len(p.refs)
		p.refs = append(p.refs, nil)
	}
	v, err := p.value(t, depth)
	if err != nil {
		if errors.Is(err, errUnknown) {
			return nil, fmt.Errorf("pyimports: unknown marshal type %q at offset %d", t, at)
		}
		return nil, err
	}
	if ref >= 0 {
		p.refs[ref] = v
	}
	return v, nil
}

var errUnknown = errors.New("unknown type")

func (p *parser) value(t byte, depth int) (any, error) {
	switch t {
	case '0', 'N', 'F', 'T', 'S', '.':
		return nil, nil
	case 'i':
		v, err := p.int32()
		return int64(v), err
	case 'g':
		return nil, p.skip(8)
	case 'y':
		return nil, p.skip(16)
	case 'l': // long: a signed digit count, 2 bytes per digit
		n, err := p.int32()
		if err != nil {
			return nil, err
		}
		if n < 0 {
			n = -n
		}
		if n < 0 || int64(n)*2 > int64(len(p.b)-p.off) {
			return nil, errShort
		}
		return nil, p.skip(int(n) * 2)
	case 'f': // float as text: a 1-byte length
		n, err := p.byte1()
		if err != nil {
			return nil, err
		}
		return nil, p.skip(int(n))
	case 'x': // complex as text: two
		for range 2 {
			n, err := p.byte1()
			if err != nil {
				return nil, err
			}
			if err := p.skip(int(n)); err != nil {
				return nil, err
			}
		}
		return nil, nil
	case 's': // bytes (also the code's bytecode)
		n, err := p.length()
		if err != nil {
			return nil, err
		}
		return p.bytes(n)
	case 't', 'u', 'a', 'A': // str (interned, UTF-8, ASCII)
		n, err := p.length()
		if err != nil {
			return nil, err
		}
		s, err := p.bytes(n)
		return string(s), err
	case 'z', 'Z': // short ASCII str: a 1-byte length
		n, err := p.byte1()
		if err != nil {
			return nil, err
		}
		s, err := p.bytes(int(n))
		return string(s), err
	case ')': // small tuple: a 1-byte count
		n, err := p.byte1()
		if err != nil {
			return nil, err
		}
		return p.items_(int(n), depth)
	case '(', '[', '<', '>': // tuple, list, set, frozenset
		n, err := p.length()
		if err != nil {
			return nil, err
		}
		v, err := p.items_(n, depth)
		if t != '(' {
			return nil, err
		}
		return v, err
	case '{': // dict: key, value pairs up to a NULL key
		for {
			if p.off < len(p.b) && p.b[p.off] == '0' {
				p.off++
				return nil, nil
			}
			if _, err := p.object(depth + 1); err != nil {
				return nil, err
			}
			if _, err := p.object(depth + 1); err != nil {
				return nil, err
			}
		}
	case 'r': // a reference to an earlier flagged object
		n, err := p.int32()
		if err != nil {
			return nil, err
		}
		if n < 0 || int(n) >= len(p.refs) {
			return nil, fmt.Errorf("pyimports: bad reference %d at offset %d", n, p.off-4)
		}
		return p.refs[n], nil
	case 'c':
		return p.code(depth)
	}
	return nil, errUnknown
}

// items_ reads n objects of a container.
func (p *parser) items_(n, depth int) (tuple, error) {
	// Every object takes at least one byte: a larger count is a lie.
	if n > len(p.b)-p.off {
		return nil, errShort
	}
	out := make(tuple, 0, min(n, 64))
	for range n {
		v, err := p.object(depth + 1)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// code reads a code object: its integer fields, then bytecode, consts
// and names, then the fields after them (which may hold nested objects
// that later references point to).
func (p *parser) code(depth int) (any, error) {
	ints := 6 // 3.8-3.10: argcount, posonlyargcount, kwonlyargcount, nlocals, stacksize, flags
	if p.layout2 {
		ints = 5 // 3.11+: no nlocals
	}
	if err := p.skip(4 * ints); err != nil {
		return nil, err
	}
	c := &code{}
	bc, err := p.object(depth + 1) // co_code
	if err != nil {
		return nil, err
	}
	c.bytecode, _ = bc.([]byte)
	consts, err := p.object(depth + 1)
	if err != nil {
		return nil, err
	}
	c.consts, _ = consts.(tuple)
	names, err := p.object(depth + 1)
	if err != nil {
		return nil, err
	}
	c.names, _ = names.(tuple)
	// 3.8-3.10: varnames, freevars, cellvars, filename, name,
	// firstlineno (int32), lnotab/linetable.
	// 3.11+: localsplusnames, localspluskinds, filename, name, qualname,
	// firstlineno (int32), linetable, exceptiontable.
	before, after := 5, 1
	if p.layout2 {
		before, after = 5, 2
	}
	for range before {
		if _, err := p.object(depth + 1); err != nil {
			return nil, err
		}
	}
	if err := p.skip(4); err != nil {
		return nil, err
	}
	for range after {
		if _, err := p.object(depth + 1); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// FS is what Resolve needs of the image's file tree.
type FS interface {
	// IsFile reports whether p is a regular file (symlinks followed).
	IsFile(p string) bool
	// List returns the names in directory dir (nil if it is none).
	List(dir string) []string
}

// Bounds of Resolve.
const (
	maxResolved = 256
	maxPathLen  = 1024
)

// Location is where a compiled module lives, from its path.
type Location struct {
	// Dir is the directory of the module's source: its package's
	// directory ("/usr/lib/python3.11/json").
	Dir string
	// Tag is the interpreter's cache tag ("cpython-311").
	Tag string
	// Roots are the directories CPython searches for top-level modules,
	// as Debian and the official images lay them out: the standard
	// library, lib-dynload, and the site and dist-packages directories.
	Roots []string
}

// Locate reads a .pyc path ("<dir>/__pycache__/<name>.<tag>.pyc", as
// CPython writes them); false if p is not one.
func Locate(p string) (Location, bool) {
	dir, file := path.Split(p)
	dir = path.Clean(dir)
	if path.Base(dir) != "__pycache__" || !strings.HasSuffix(file, ".pyc") {
		return Location{}, false
	}
	parts := strings.Split(strings.TrimSuffix(file, ".pyc"), ".")
	if len(parts) < 2 || !strings.HasPrefix(parts[len(parts)-1], "cpython-") {
		return Location{}, false
	}
	loc := Location{Dir: path.Dir(dir), Tag: parts[len(parts)-1]}
	seen := map[string]bool{}
	root := func(ds ...string) {
		for _, d := range ds {
			if !seen[d] {
				seen[d] = true
				loc.Roots = append(loc.Roots, d)
			}
		}
	}
	// The standard library the module belongs to: its nearest ancestor
	// named python3.N, first.
	for d := loc.Dir; d != "/" && d != "."; d = path.Dir(d) {
		if strings.HasPrefix(path.Base(d), "python3.") {
			root(d, d+"/lib-dynload", d+"/site-packages", d+"/dist-packages")
			break
		}
	}
	// Then the interpreter's directories by its tag ("cpython-311":
	// python3.11), where Debian and the official images put them, for
	// modules outside them (Debian's /usr/lib/python3/dist-packages).
	if v := strings.TrimPrefix(loc.Tag, "cpython-"); len(v) >= 2 && v[0] == '3' {
		for _, pre := range []string{"/usr/local/lib/python3.", "/usr/lib/python3."} {
			d := pre + v[1:]
			root(d, d+"/lib-dynload", d+"/site-packages", d+"/dist-packages")
		}
	}
	root("/usr/lib/python3/dist-packages")
	return loc, true
}

// Resolve returns the files that loading m from loc makes the
// interpreter read: for each module imported, its compiled file (or its
// source when it has none) or extension module, with its packages'
// __init__ files, and the names of its "from" list that are submodules
// of it, in import order. With exact imports (m.Exact), absolute names
// are looked up in loc.Roots and relative ones from loc.Dir. Otherwise
// every name of m.Names is tried, relative to loc.Dir first, then from
// each root, and m.FromLists under each package found; names that are
// no module are left out.
func Resolve(fsys FS, loc Location, m *Module) []string {
	r := resolver{fs: fsys, loc: loc, seen: map[string]bool{}, lists: map[string][]string{}}
	if m.Exact {
		for _, imp := range m.Imports {
			r.resolveImport(imp)
		}
		return r.out
	}
	var pkgs []string
	for _, n := range m.Names {
		if len(r.out) >= maxResolved {
			break
		}
		for _, base := range append([]string{loc.Dir}, loc.Roots...) {
			if pkg, ok := r.module(base, n); ok {
				if pkg != "" {
					pkgs = append(pkgs, pkg)
				}
				break
			}
		}
	}
	for _, pkg := range pkgs {
		for _, n := range m.FromLists {
			if len(r.out) >= maxResolved {
				break
			}
			r.module(pkg, n)
		}
	}
	return r.out
}

// resolveImport adds the files of one import statement: the module (an
// absolute name from the roots; a relative one from the package Level-1
// levels above loc.Dir), and the names of its "from" list that are
// submodules of it.
func (r *resolver) resolveImport(imp Import) {
	var pkg string
	found := false
	if imp.Level > 0 {
		base := r.loc.Dir
		for range imp.Level - 1 {
			base = path.Dir(base)
		}
		if imp.Name == "" {
			pkg, found = base, true
		} else {
			pkg, found = r.module(base, imp.Name)
		}
	} else {
		for _, base := range r.loc.Roots {
			if pkg, found = r.module(base, imp.Name); found {
				break
			}
		}
	}
	if !found || pkg == "" {
		return
	}
	for _, n := range imp.From {
		r.module(pkg, n)
	}
}

type resolver struct {
	fs    FS
	loc   Location
	seen  map[string]bool
	out   []string
	lists map[string][]string
}

func (r *resolver) add(p string) {
	if !r.seen[p] && len(r.out) < maxResolved {
		r.seen[p] = true
		r.out = append(r.out, p)
	}
}

// module finds dotted name under base and adds its files; it reports
// whether it is a module there, and its directory if it is a package.
func (r *resolver) module(base, name string) (pkg string, ok bool) {
	if name == "" || len(name) > 256 || len(base)+len(name) > maxPathLen {
		return "", false
	}
	parts := strings.Split(name, ".")
	var files []string
	dir := base
	for i, part := range parts {
		if !validName(part) {
			return "", false
		}
		if f := r.file(dir+"/"+part, "__init__"); f != "" {
			files = append(files, f)
			dir = dir + "/" + part
			if i == len(parts)-1 {
				pkg = dir
			}
			continue
		}
		if i < len(parts)-1 {
			return "", false // a module's module
		}
		f := r.file(dir, part)
		if f == "" {
			f = r.extension(dir, part)
		}
		if f == "" {
			return "", false
		}
		files = append(files, f)
	}
	for _, f := range files {
		r.add(f)
	}
	return pkg, true
}

// file returns the compiled file of module name in dir, or its source.
func (r *resolver) file(dir, name string) string {
	if p := dir + "/__pycache__/" + name + "." + r.loc.Tag + ".pyc"; r.fs.IsFile(p) {
		return p
	}
	if p := dir + "/" + name + ".py"; r.fs.IsFile(p) {
		return p
	}
	return ""
}

// extension returns the extension module name in dir
// ("name.cpython-311-x86_64-linux-gnu.so", "name.abi3.so", "name.so").
func (r *resolver) extension(dir, name string) string {
	ents, ok := r.lists[dir]
	if !ok {
		ents = r.fs.List(dir)
		r.lists[dir] = ents
	}
	for _, e := range ents {
		if strings.HasPrefix(e, name+".") && strings.HasSuffix(e, ".so") && !strings.Contains(e[len(name)+1:len(e)-3], "/") {
			if p := dir + "/" + e; r.fs.IsFile(p) {
				return p
			}
		}
	}
	return ""
}

// validName reports whether s can be a module name (an identifier).
func validName(s string) bool {
	if s == "" || s == "__init__" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= 0x80:
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
