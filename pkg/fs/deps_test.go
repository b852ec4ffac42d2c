package fs

import (
	"archive/tar"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/elftest"
	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
)

func symlink(name, target string) treetest.File {
	return treetest.File{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

// depsImage holds a program linked against a chain of libraries, laid
// out as on Debian (merged /usr, multiarch, soname symlinks, $ORIGIN
// RUNPATH), a script run by the program, and a malformed ELF file.
func depsImage(t *testing.T) (*FS, *fetchtest.RangeCounter) {
	t.Helper()
	const interp = "/lib64/ld-linux-x86-64.so.2"
	pad := func(b []byte, n int) []byte { return append(b, treetest.Random(int64(n), n)...) }
	files := []treetest.File{
		symlink("lib", "usr/lib"), symlink("lib64", "usr/lib64"), symlink("bin", "usr/bin"), symlink("usr/bin/sh", "app"),
		treetest.Reg("usr/lib64/ld-linux-x86-64.so.2", 0o755, pad(elftest.Build("", nil, "", ""), 100000)),
		treetest.Reg("usr/bin/app", 0o755, pad(elftest.Build(interp, []string{"libA.so.1"}, "", ""), 50000)),
		symlink("usr/lib/x86_64-linux-gnu/libA.so.1", "libA.so.1.0.0"),
		treetest.Reg("usr/lib/x86_64-linux-gnu/libA.so.1.0.0", 0o644, pad(elftest.Build("", []string{"libB.so.2", "libmissing.so"}, "$ORIGIN/private", ""), 200000)),
		treetest.Reg("usr/lib/x86_64-linux-gnu/private/libB.so.2", 0o644, pad(elftest.Build("", nil, "", ""), 300000)),
		treetest.Reg("usr/bin/script", 0o755, []byte("#!/usr/bin/app -x\necho hi\n")),
		treetest.Reg("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\n")),
		treetest.Reg("etc/group", 0o644, []byte("root:x:0:\n")),
		treetest.Reg("usr/bin/bad", 0o755, append([]byte("\x7fELF\x02\x01\x01"), treetest.Random(5, 5000)...)),
	}
	res, dir := fetchtest.BuildImage(t, files, builder.Options{ChunkSize: 0x10000})
	be := fetchtest.NewRangeCounter(dir)
	f, err := Open(context.Background(), res.Bootstrap, be, Options{Fetch: fetch.Options{Cache: fetchtest.NewMemCache(), LogSize: 1000}, Dependencies: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Close)
	return f, be
}

func (f *FS) mustResolve(t *testing.T, p string) *Inode {
	t.Helper()
	ino, err := f.resolvePath(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return ino
}

// TestDependencySpeculation: opening a program fetches its interpreter
// and its chain of libraries (found through soname symlinks, a symlinked
// /lib and $ORIGIN) with the dependency kind, before anything reads them;
// reading them then sends no request.
func TestDependencySpeculation(t *testing.T) {
	for _, start := range []string{"/usr/bin/app", "/usr/bin/script"} {
		t.Run(filepath.Base(start), func(t *testing.T) {
			f, be := depsImage(t)
			f.Opened(f.mustResolve(t, start).Nid)
			f.bgWG.Wait()
			kinds := map[string]string{}
			for _, fe := range f.FetchLog().Fetches {
				if kinds[fe.Path] == "" {
					kinds[fe.Path] = fe.Kind
				}
			}
			for _, p := range []string{"/usr/lib64/ld-linux-x86-64.so.2", "/usr/lib/x86_64-linux-gnu/libA.so.1.0.0", "/usr/lib/x86_64-linux-gnu/private/libB.so.2"} {
				if kinds[p] != fetch.Dependency {
					t.Errorf("%s: first fetched as %q, want %q (fetches by file: %v)", p, kinds[p], fetch.Dependency, kinds)
				}
			}
			want := int64(3)
			if start == "/usr/bin/script" {
				want = 4 // the program too
			}
			if got := f.Metrics.DependencyFiles.Load(); got != want {
				t.Errorf("DependencyFiles %d, want %d", got, want)
			}
			before := len(be.Counts())
			// The opened file's head, then each level of the closure
			// streamed together: a few requests, not one per chunk (the
			// three files hold 11 chunks).
			if before > 5 {
				t.Errorf("the closure took %d requests: %v", before, be.Counts())
			}
			lib := f.mustResolve(t, "/lib/x86_64-linux-gnu/private/../private/libB.so.2")
			if _, err := f.Read(context.Background(), lib.Nid, make([]byte, lib.Size), 0); err != nil {
				t.Fatal(err)
			}
			after := len(be.Counts())
			if after != before {
				t.Errorf("reading a speculated library sent %d requests", after-before)
			}
		})
	}
}

// TestDependencySpeculationIgnoresMalformed: a file with the ELF magic
// and garbage after it, or with no dependencies, fetches nothing more.
func TestDependencySpeculationIgnoresMalformed(t *testing.T) {
	f, _ := depsImage(t)
	f.Opened(f.mustResolve(t, "/usr/bin/bad").Nid)
	f.Opened(f.mustResolve(t, "/usr/lib/x86_64-linux-gnu/private/libB.so.2").Nid)
	f.bgWG.Wait()
	if got := f.Metrics.DependencyFiles.Load(); got != 0 {
		t.Errorf("DependencyFiles %d, want 0", got)
	}
	// Without Options.Dependencies, opening a program fetches nothing.
	g, _ := depsImage(t)
	g.o.Dependencies = false
	g.Opened(g.mustResolve(t, "/usr/bin/app").Nid)
	g.bgWG.Wait()
	if n := len(g.FetchLog().Fetches); n != 0 || g.Metrics.DependencyFiles.Load() != 0 {
		t.Errorf("with Dependencies off, opening a program fetched %d times", n)
	}
}

// TestPythonImportSpeculation: opening a compiled module fetches, with
// the dependency kind and before anything reads them, the modules it
// imports when it is loaded, and theirs in turn: a module, a package and
// its submodule from a "from" list, a relative import and an extension
// module. A module imported only inside a function is not fetched.
func TestPythonImportSpeculation(t *testing.T) {
	const lib = "usr/lib/python3.11/"
	files := []treetest.File{treetest.Reg(lib+"lib-dynload/_speedups.cpython-311-x86_64-linux-gnu.so", 0o644, treetest.Random(7, 3000))}
	err := filepath.WalkDir("testdata/python/pyc", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		files = append(files, treetest.Reg(lib+strings.TrimPrefix(p, "testdata/python/pyc/"), 0o644, b))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	res, dir := fetchtest.BuildImage(t, files, builder.Options{ChunkSize: 0x10000})
	be := fetchtest.NewRangeCounter(dir)
	f, err := Open(context.Background(), res.Bootstrap, be, Options{Fetch: fetch.Options{Cache: fetchtest.NewMemCache(), LogSize: 1000}, Dependencies: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Opened(f.mustResolve(t, "/"+lib+"__pycache__/app.cpython-311.pyc").Nid)
	f.bgWG.Wait()
	kinds := map[string]string{}
	for _, fe := range f.FetchLog().Fetches {
		if kinds[fe.Path] == "" {
			kinds[fe.Path] = fe.Kind
		}
	}
	want := []string{"__pycache__/alpha", "__pycache__/gamma", "pkg/__pycache__/__init__", "pkg/__pycache__/beta", "pkg/__pycache__/delta"}
	for _, p := range want {
		p = "/" + lib + p + ".cpython-311.pyc"
		if kinds[p] != fetch.Dependency {
			t.Errorf("%s: first fetched as %q, want %q (fetches by file: %v)", p, kinds[p], fetch.Dependency, kinds)
		}
	}
	if p := "/" + lib + "lib-dynload/_speedups.cpython-311-x86_64-linux-gnu.so"; kinds[p] != fetch.Dependency {
		t.Errorf("%s: first fetched as %q, want %q", p, kinds[p], fetch.Dependency)
	}
	if p := "/" + lib + "__pycache__/unrelated.cpython-311.pyc"; kinds[p] != "" {
		t.Errorf("%s (imported inside a function) fetched as %q", p, kinds[p])
	}
	if got, want := f.Metrics.DependencyFiles.Load(), int64(len(want)+1); got != want {
		t.Errorf("DependencyFiles %d, want %d", got, want)
	}
	before := len(be.Counts())
	for _, p := range want {
		ino := f.mustResolve(t, "/"+lib+p+".cpython-311.pyc")
		if _, err := f.Read(context.Background(), ino.Nid, make([]byte, ino.Size), 0); err != nil {
			t.Fatal(err)
		}
	}
	if after := len(be.Counts()); after != before {
		t.Errorf("reading the speculated modules sent %d requests", after-before)
	}
}

// TestSpeculateStartup: at mount, the user and group databases, the
// shell, its interpreter and its libraries are fetched as dependencies
// before anything reads them.
func TestSpeculateStartup(t *testing.T) {
	f, be := depsImage(t)
	f.SpeculateStartup()
	f.bgWG.Wait()
	kinds := map[string]string{}
	for _, fe := range f.FetchLog().Fetches {
		if kinds[fe.Path] == "" {
			kinds[fe.Path] = fe.Kind
		}
	}
	for _, p := range []string{"/etc/passwd", "/etc/group", "/usr/bin/app", "/usr/lib64/ld-linux-x86-64.so.2", "/usr/lib/x86_64-linux-gnu/libA.so.1.0.0", "/usr/lib/x86_64-linux-gnu/private/libB.so.2"} {
		if kinds[p] != fetch.Dependency {
			t.Errorf("%s: first fetched as %q, want %q (fetches by file: %v)", p, kinds[p], fetch.Dependency, kinds)
		}
	}
	before := len(be.Counts())
	sh := f.mustResolve(t, "/bin/sh")
	if _, err := f.Read(context.Background(), sh.Nid, make([]byte, sh.Size), 0); err != nil {
		t.Fatal(err)
	}
	if after := len(be.Counts()); after != before {
		t.Errorf("running the shell read %d more requests", after-before)
	}
	// Without Options.Dependencies, nothing.
	g, _ := depsImage(t)
	g.o.Dependencies = false
	g.SpeculateStartup()
	g.bgWG.Wait()
	if n := len(g.FetchLog().Fetches); n != 0 {
		t.Errorf("with Dependencies off, SpeculateStartup fetched %d times", n)
	}
}

// TestReadAheadWaitsForDependencies: read-ahead of a program that was
// just opened starts only after its libraries were fetched, so it does
// not take the bandwidth the loader needs first.
func TestReadAheadWaitsForDependencies(t *testing.T) {
	pad := func(b []byte, n int) []byte { return append(b, treetest.Random(int64(n), n)...) }
	files := []treetest.File{
		treetest.Reg("usr/bin/app", 0o755, pad(elftest.Build("", []string{"libA.so.1"}, "", ""), 8*0x10000)),
		treetest.Reg("usr/lib/x86_64-linux-gnu/libA.so.1", 0o644, pad(elftest.Build("", nil, "", ""), 100000)),
	}
	res, dir := fetchtest.BuildImage(t, files, builder.Options{ChunkSize: 0x10000})
	be := fetchtest.NewStreamLog(dir)
	gate := make(chan struct{})
	be.Gate = func(_ int, r fetchtest.Request) chan struct{} {
		if r.Kind == fetch.Dependency {
			return gate
		}
		return nil
	}
	f, err := Open(context.Background(), res.Bootstrap, be, Options{Fetch: fetch.Options{Cache: fetchtest.NewMemCache(), LogSize: 1000},
		Dependencies: true, ReadAhead: 4 * 0x10000})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	app := f.mustResolve(t, "/usr/bin/app")
	f.Opened(app.Nid)
	// The loader maps the program and faults in a page past its head: a
	// miss, which starts read-ahead. (Not the head itself: speculation
	// reads that to find the libraries, and a read that finds it cached
	// starts no read-ahead.)
	if _, err := f.Read(context.Background(), app.Nid, make([]byte, 4096), 0x10000); err != nil {
		t.Fatal(err)
	}
	be.WaitFor(t, "the library's request", func(r fetchtest.Request) bool { return r.Kind == fetch.Dependency })
	time.Sleep(100 * time.Millisecond)
	for _, r := range be.Requests(1 << 40) {
		if r.Kind == fetch.ReadAhead {
			t.Fatalf("read-ahead request %v sent while the library was still on its way: %v", r, be.Requests(1<<40))
		}
	}
	close(gate)
	f.bgWG.Wait()
	n := 0
	for _, r := range be.Requests(1 << 40) {
		if r.Kind == fetch.ReadAhead {
			n++
		}
	}
	if n == 0 {
		t.Fatalf("no read-ahead after the library came: %v", be.Requests(1<<40))
	}
}

// TestIncludeSpeculation: opening a header fetches, with the dependency
// kind and before the preprocessor reads them, the headers it includes,
// found as GCC finds them (a quoted name beside it, <names> in GCC's,
// the multiarch and the plain include directories), and theirs in turn.
func TestIncludeSpeculation(t *testing.T) {
	const gcc = "usr/lib/gcc/x86_64-linux-gnu/12/include/"
	files := []treetest.File{
		treetest.Reg("usr/include/stdio.h", 0o644, []byte("#include <stddef.h>\n#include \"local.h\"\n#include <bits/a.h>\n#ifdef NEVER\n#include <missing.h>\n#endif\n")),
		treetest.Reg("usr/include/local.h", 0o644, []byte("int local;\n")),
		treetest.Reg(gcc+"stddef.h", 0o644, []byte("typedef int size_t;\n")),
		treetest.Reg("usr/include/stddef.h", 0o644, []byte("shadowed by GCC's\n")),
		treetest.Reg("usr/include/x86_64-linux-gnu/bits/a.h", 0o644, []byte("#include <bits/b.h>\n")),
		treetest.Reg("usr/include/bits/b.h", 0o644, []byte("int b;\n")),
		treetest.Reg("usr/include/unrelated.h", 0o644, []byte("int u;\n")),
	}
	res, dir := fetchtest.BuildImage(t, files, builder.Options{ChunkSize: 0x10000})
	f, err := Open(context.Background(), res.Bootstrap, fetchtest.NewRangeCounter(dir), Options{Fetch: fetch.Options{Cache: fetchtest.NewMemCache(), LogSize: 1000}, Dependencies: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Opened(f.mustResolve(t, "/usr/include/stdio.h").Nid)
	f.bgWG.Wait()
	kinds := map[string]string{}
	for _, fe := range f.FetchLog().Fetches {
		if kinds[fe.Path] == "" {
			kinds[fe.Path] = fe.Kind
		}
	}
	for _, p := range []string{"/" + gcc + "stddef.h", "/usr/include/local.h", "/usr/include/x86_64-linux-gnu/bits/a.h", "/usr/include/bits/b.h"} {
		if kinds[p] != fetch.Dependency {
			t.Errorf("%s: first fetched as %q, want %q (fetches by file: %v)", p, kinds[p], fetch.Dependency, kinds)
		}
	}
	for _, p := range []string{"/usr/include/stddef.h", "/usr/include/unrelated.h"} {
		if kinds[p] != "" {
			t.Errorf("%s fetched as %q", p, kinds[p])
		}
	}
}

// TestProgramStreamed: opening a dynamically linked program fetches all
// of it, beside its libraries, so running it sends no more requests.
func TestProgramStreamed(t *testing.T) {
	pad := func(b []byte, n int) []byte { return append(b, treetest.Random(int64(n), n)...) }
	const interp = "/usr/lib64/ld-linux-x86-64.so.2"
	files := []treetest.File{
		treetest.Reg("usr/lib64/ld-linux-x86-64.so.2", 0o755, pad(elftest.Build("", nil, "", ""), 1000)),
		treetest.Reg("usr/bin/big", 0o755, pad(elftest.Build(interp, nil, "", ""), 24*0x10000)),
		treetest.Reg("usr/lib/libbig.so", 0o644, pad(elftest.Build("", nil, "", ""), 24*0x10000)),
	}
	res, dir := fetchtest.BuildImage(t, files, builder.Options{ChunkSize: 0x10000})
	be := fetchtest.NewRangeCounter(dir)
	f, err := Open(context.Background(), res.Bootstrap, be, Options{Fetch: fetch.Options{Cache: fetchtest.NewMemCache(), LogSize: 1000}, Dependencies: true})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range []string{"/usr/bin/big", "/usr/lib/libbig.so"} {
		f.Opened(f.mustResolve(t, p).Nid)
	}
	f.bgWG.Wait()
	before := len(be.Counts())
	big := f.mustResolve(t, "/usr/bin/big")
	if _, err := f.Read(context.Background(), big.Nid, make([]byte, big.Size), 0); err != nil {
		t.Fatal(err)
	}
	if after := len(be.Counts()); after != before {
		t.Errorf("running the program sent %d more requests", after-before)
	}
	// A library opened on its own (no interpreter) is not fetched whole.
	lib := f.mustResolve(t, "/usr/lib/libbig.so")
	if _, err := f.Read(context.Background(), lib.Nid, make([]byte, lib.Size), 0); err != nil {
		t.Fatal(err)
	}
	if after := len(be.Counts()); after == before {
		t.Error("reading a library nothing needed sent no request: it was fetched whole when opened")
	}
}

// TestHotSetNotSpeculated: the files of the hot set come in the stream's
// order; opening one does not start speculation that would race it.
func TestHotSetNotSpeculated(t *testing.T) {
	f, _ := depsImage(t)
	hot := []string{"/usr/bin/app", "/usr/lib64/ld-linux-x86-64.so.2", "/usr/lib/x86_64-linux-gnu/libA.so.1.0.0", "/usr/lib/x86_64-linux-gnu/private/libB.so.2"}
	f.Prefetch(context.Background(), PrefetchOptions{Paths: hot})
	f.Opened(f.mustResolve(t, "/usr/bin/app").Nid)
	f.bgWG.Wait()
	kinds := map[string]int{}
	for _, fe := range f.FetchLog().Fetches {
		kinds[fe.Kind]++
	}
	if kinds[fetch.Dependency] != 0 || kinds[fetch.HotSet] == 0 {
		t.Errorf("fetches by kind %v, want hot-set ones only", kinds)
	}
	if got := f.Metrics.DependencyFiles.Load(); got != 0 {
		t.Errorf("DependencyFiles %d, want 0", got)
	}
}
