package pyimports

import (
	"bytes"
	"errors"
	"os"
	"path"
	"slices"
	"strings"
	"testing"
)

// wantNames are mod.py's top-level co_names, as every CPython version
// from 3.8 to 3.13 compiles them (testdata/gen.sh).
var wantNames = []string{"__doc__", "os", "sys", "concurrent.futures", "concurrent", "json", "decoder", "", "sibling", "sub", "thing",
	"_json", "ImportError", "__all__", "helper", "X", "BIG", "frozenset", "SETS", "__name__", "doctest", "testmod"}

func readFixture(t *testing.T, name string) *Module {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Read(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m
}

func TestReadEveryVersion(t *testing.T) {
	for _, tag := range []string{"cpython-38", "cpython-310", "cpython-311", "cpython-312", "cpython-313"} {
		t.Run(tag, func(t *testing.T) {
			m := readFixture(t, "mod."+tag+".pyc")
			if !slices.Equal(m.Names, wantNames) {
				t.Errorf("names %q, want %q", m.Names, wantNames)
			}
			// The function's own import is in its code object, not
			// the module's.
			if slices.Contains(m.Names, "late") {
				t.Error(`"late" (a function-local import) among the module's names`)
			}
			if want := []string{"decoder", "sibling", "thing"}; !slices.Equal(m.FromLists, want) {
				t.Errorf("from lists %q, want %q", m.FromLists, want)
			}
			// The bytecode's imports, the function's and the
			// `if __name__ == "__main__":` block's left out.
			want := []Import{{Name: "os"}, {Name: "sys"}, {Name: "concurrent.futures"}, {Name: "json", From: []string{"decoder"}},
				{Level: 1, From: []string{"sibling"}}, {Name: "sub", Level: 1, From: []string{"thing"}}, {Name: "_json"}}
			if !m.Exact || !slices.EqualFunc(m.Imports, want, func(a, b Import) bool {
				return a.Name == b.Name && a.Level == b.Level && slices.Equal(a.From, b.From)
			}) {
				t.Errorf("imports (exact %v) %+v, want %+v", m.Exact, m.Imports, want)
			}
		})
	}
}

func TestReadRejects(t *testing.T) {
	good, err := os.ReadFile("testdata/mod.cpython-311.pyc")
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"empty":     nil,
		"elf":       append([]byte("\x7fELF"), make([]byte, 60)...),
		"py37":      append([]byte{0x42, 0x0d, '\r', '\n'}, good[4:]...),
		"truncated": good[:len(good)/2],
		"not code":  append(append([]byte{}, good[:16]...), 'N'),
		"bad type":  append(append([]byte{}, good[:16]...), '!'),
	} {
		if _, err := Read(bytes.NewReader(b), int64(len(b))); err == nil {
			t.Errorf("%s: no error", name)
		} else if name == "elf" && !errors.Is(err, ErrNotPyc) {
			t.Errorf("%s: %v, want ErrNotPyc", name, err)
		}
	}
}

func TestLocate(t *testing.T) {
	loc, ok := Locate("/usr/lib/python3.11/json/__pycache__/__init__.cpython-311.pyc")
	if !ok || loc.Dir != "/usr/lib/python3.11/json" || loc.Tag != "cpython-311" {
		t.Fatalf("Locate = %+v, %v", loc, ok)
	}
	if loc.Roots[0] != "/usr/lib/python3.11" || loc.Roots[1] != "/usr/lib/python3.11/lib-dynload" || !slices.Contains(loc.Roots, "/usr/lib/python3/dist-packages") ||
		!slices.Contains(loc.Roots, "/usr/local/lib/python3.11/dist-packages") {
		t.Errorf("roots %q", loc.Roots)
	}
	for _, p := range []string{"/usr/lib/python3.11/json/__init__.py", "/usr/lib/python3.11/__pycache__/x.pyc", "/etc/passwd"} {
		if _, ok := Locate(p); ok {
			t.Errorf("Locate(%q) ok", p)
		}
	}
}

// mapFS is an image tree of regular files.
type mapFS map[string]bool

func (m mapFS) IsFile(p string) bool { return m[p] }
func (m mapFS) List(dir string) []string {
	var out []string
	for p := range m {
		if path.Dir(p) == dir {
			out = append(out, path.Base(p))
		}
	}
	slices.Sort(out)
	return out
}

func TestResolve(t *testing.T) {
	const lib = "/usr/lib/python3.11"
	tree := mapFS{}
	for _, p := range []string{
		lib + "/__pycache__/os.cpython-311.pyc",
		lib + "/concurrent/__pycache__/__init__.cpython-311.pyc",
		lib + "/concurrent/futures/__pycache__/__init__.cpython-311.pyc",
		lib + "/json/__pycache__/__init__.cpython-311.pyc",
		lib + "/json/__pycache__/decoder.cpython-311.pyc",
		lib + "/json/__pycache__/encoder.cpython-311.pyc", // not imported by mod
		lib + "/lib-dynload/_json.cpython-311-x86_64-linux-gnu.so",
		lib + "/lib-dynload/_jsonx.cpython-311-x86_64-linux-gnu.so",
		lib + "/__pycache__/late.cpython-311.pyc", // function-local import
		"/usr/lib/python3/dist-packages/pkg/__pycache__/__init__.cpython-311.pyc",
		"/usr/lib/python3/dist-packages/pkg/sibling.py", // source only
		"/usr/lib/python3/dist-packages/pkg/sub/__pycache__/__init__.cpython-311.pyc",
		"/usr/lib/python3/dist-packages/pkg/sub/__pycache__/thing.cpython-311.pyc",
	} {
		tree[p] = true
	}
	m := readFixture(t, "mod.cpython-311.pyc")
	loc, ok := Locate("/usr/lib/python3/dist-packages/pkg/__pycache__/mod.cpython-311.pyc")
	if !ok {
		t.Fatal("Locate failed")
	}
	// A module of Debian's dist-packages: the roots come from the tag.
	if !slices.Contains(loc.Roots, lib) || !slices.Contains(loc.Roots, lib+"/lib-dynload") {
		t.Fatalf("roots %q", loc.Roots)
	}
	got := Resolve(tree, loc, m)
	want := []string{
		lib + "/__pycache__/os.cpython-311.pyc",
		lib + "/concurrent/__pycache__/__init__.cpython-311.pyc",
		lib + "/concurrent/futures/__pycache__/__init__.cpython-311.pyc",
		lib + "/json/__pycache__/__init__.cpython-311.pyc",
		lib + "/json/__pycache__/decoder.cpython-311.pyc",
		"/usr/lib/python3/dist-packages/pkg/sibling.py",
		"/usr/lib/python3/dist-packages/pkg/sub/__pycache__/__init__.cpython-311.pyc",
		"/usr/lib/python3/dist-packages/pkg/sub/__pycache__/thing.cpython-311.pyc",
		lib + "/lib-dynload/_json.cpython-311-x86_64-linux-gnu.so",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Resolve:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
	// Without the bytecode's imports (a CPython whose bytecode Read does
	// not know), every name is tried: the same files, in names order.
	m.Exact, m.Imports = false, nil
	got = Resolve(tree, loc, m)
	want = []string{want[0], want[1], want[2], want[3], want[5], want[6], want[8], want[4], want[7]}
	if !slices.Equal(got, want) {
		t.Errorf("Resolve by names:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(want, "\n     "))
	}
}

func FuzzRead(f *testing.F) {
	for _, tag := range []string{"cpython-38", "cpython-311", "cpython-313"} {
		b, err := os.ReadFile("testdata/mod." + tag + ".pyc")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Read(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		if len(m.Names) > maxNames || len(m.FromLists) > maxNames {
			t.Fatalf("%d names, %d from-list names", len(m.Names), len(m.FromLists))
		}
		loc, _ := Locate("/usr/lib/python3.11/x/__pycache__/m.cpython-311.pyc")
		if got := Resolve(mapFS{}, loc, m); len(got) != 0 {
			t.Fatalf("resolved %q in an empty tree", got)
		}
	})
}
