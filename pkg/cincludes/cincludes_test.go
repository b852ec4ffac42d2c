package cincludes

import (
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	src := []byte(`/* a header */
#include <stdio.h>
  #  include "local.h"
#include_next <limits.h>
#if 0
#include <bits/unused.h>
#endif
#include FOO_H
#include <../escape.h>
#include </abs.h>
#include <unterminated.h
#define X 1
#include"tight.h"
`)
	want := []Include{{Name: "stdio.h"}, {Name: "local.h", Quoted: true}, {Name: "limits.h", Next: true}, {Name: "bits/unused.h"}, {Name: "tight.h", Quoted: true}}
	if got := Parse(src); !slices.Equal(got, want) {
		t.Errorf("Parse = %+v, want %+v", got, want)
	}
}

func TestResolve(t *testing.T) {
	dirs := SystemDirs([]string{"/usr/lib/gcc/x86_64-linux-gnu/12"}, false)
	wantDirs := []string{"/usr/lib/gcc/x86_64-linux-gnu/12/include", "/usr/lib/gcc/x86_64-linux-gnu/12/include-fixed", "/usr/local/include", "/usr/include/x86_64-linux-gnu", "/usr/include"}
	if !slices.Equal(dirs, wantDirs) {
		t.Fatalf("SystemDirs = %q, want %q", dirs, wantDirs)
	}
	if cxx := SystemDirs([]string{"/usr/lib/gcc/x86_64-linux-gnu/12"}, true); cxx[0] != "/usr/include/c++/12" || cxx[1] != "/usr/include/x86_64-linux-gnu/c++/12" {
		t.Errorf("C++ dirs %q", cxx)
	}
	got := Resolve("/usr/include/stdio.h", Include{Name: "bits/types.h", Quoted: true}, dirs)
	if got[0] != "/usr/include/bits/types.h" || got[1] != dirs[0]+"/bits/types.h" || len(got) != len(dirs)+1 {
		t.Errorf("quoted: %q", got)
	}
	// include_next from the gcc directory continues after it.
	got = Resolve("/usr/lib/gcc/x86_64-linux-gnu/12/include/limits.h", Include{Name: "limits.h", Next: true}, dirs)
	if want := []string{"/usr/lib/gcc/x86_64-linux-gnu/12/include-fixed/limits.h", "/usr/local/include/limits.h", "/usr/include/x86_64-linux-gnu/limits.h", "/usr/include/limits.h"}; !slices.Equal(got, want) {
		t.Errorf("include_next: %q, want %q", got, want)
	}
	if !IsSource("/usr/include/c++/12/vector") || !IsSource("/usr/include/stdio.h") || IsSource("/usr/bin/gcc") {
		t.Error("IsSource")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("#include <stdio.h>\n#include_next \"x.h\"\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, inc := range Parse(b) {
			if inc.Name == "" || !validName(inc.Name) || len(inc.Name) > maxName {
				t.Fatalf("bad name %q", inc.Name)
			}
			for _, p := range Resolve("/usr/include/x.h", inc, SystemDirs([]string{"/usr/lib/gcc/t/1"}, true)) {
				if len(p) == 0 || p[0] != '/' {
					t.Fatalf("candidate %q", p)
				}
			}
		}
	})
}
