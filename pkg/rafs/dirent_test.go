package rafs

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
)

// TestDirentRules crafts root directories that break EROFS's directory
// rules and checks that ReadDir (and so Walk, check, unpack and mount)
// refuses each with an error naming the rule.
func TestDirentRules(t *testing.T) {
	root := &Node{Inode: &Inode{Mode: ModeDir | 0o755}}
	root.SetChild(&Node{Name: "a", Inode: &Inode{Mode: ModeSymlink | 0o777, Symlink: "/outside"}})
	root.SetChild(&Node{Name: "b", Inode: &Inode{Mode: ModeDir | 0o755}})
	good, err := Marshal(root, WriterOptions{Flags: FlagsFor(compress.None, digester.Sha256)})
	if err != nil {
		t.Fatal(err)
	}
	names := bytes.Index(good, []byte("...ab"))
	if names < 0 {
		t.Fatal("root names not found")
	}
	rd := openBytes(t, good)
	ctx := context.Background()
	rootIno, _ := rd.Inode(ctx, rd.RootNid())
	direntOff := int(rd.InodeOffset(rootIno.Nid)) + ExtendedInodeSize
	nidOf := func(i int) []byte { return good[direntOff+i*DirentSize : direntOff+i*DirentSize+8] }
	bNid := append([]byte(nil), nidOf(3)...)
	cases := []struct {
		name  string
		patch func(b []byte)
		want  string
	}{
		{"duplicate", func(b []byte) { b[names+4] = 'a' }, `duplicate entry "a"`},
		{"unordered", func(b []byte) { b[names+3], b[names+4] = 'b', 'a' }, "strictly increasing"},
		{"slash", func(b []byte) { b[names+4] = '/' }, "contains '/'"},
		{"NUL", func(b []byte) { b[names+3] = 0 }, "contains NUL"},
		{"dot elsewhere", func(b []byte) { copy(b[direntOff:], bNid) }, `"." names inode`},
		{"dotdot elsewhere", func(b []byte) { copy(b[direntOff+DirentSize:], bNid) }, `".." names inode`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := append([]byte(nil), good...)
			tc.patch(b)
			rd := openBytes(t, b)
			err := rd.Walk(ctx, func(string, *DiskInode) error { return nil })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Walk: %v; want an error containing %q", err, tc.want)
			}
		})
	}
	if err := openBytes(t, good).Walk(ctx, func(string, *DiskInode) error { return nil }); err != nil {
		t.Fatalf("the unpatched bootstrap: %v", err)
	}
}
