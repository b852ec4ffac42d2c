package fs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"path"
	"testing"

	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/storage"
)

// TestInodeCacheEviction: with an inode cache far smaller than the
// image, every entry reached by lookups from the root has the source's
// type, mode, size, link target and content, listings are complete, and
// a path asked for an inode the cache no longer holds is found by
// search; the cache stays within its budget throughout.
func TestInodeCacheEviction(t *testing.T) {
	files := treetest.Generate(3, 3000)
	res, dir := fetchtest.BuildImage(t, files, builder.Options{})
	want, err := treetest.FromTar(bytes.NewReader(treetest.Tar(files)), treetest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	const budget = 16 << 10
	cache := NewInodeCache(budget)
	f, err := Open(context.Background(), res.Bootstrap, &storage.FileSource{Dir: dir}, Options{Inodes: cache})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx := context.Background()
	seen := map[string]uint64{}
	var walk func(p string, nid uint64)
	walk = func(p string, nid uint64) {
		ents, err := f.ReadDir(ctx, nid)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for _, e := range ents {
			cp := path.Join(p, e.Name)
			ino, err := f.Lookup(ctx, nid, e.Name)
			if err != nil {
				t.Fatalf("%s: %v", cp, err)
			}
			if cache.Bytes() > budget {
				t.Fatalf("the cache holds %d bytes, over its %d", cache.Bytes(), budget)
			}
			seen[cp] = ino.Nid
			w := want[cp]
			if w == nil {
				t.Fatalf("%s is not in the source", cp)
			}
			if ino.Mode&0o7777 != uint32(w.Mode)&0o7777 || (w.Type == '0' && int64(ino.Size) != w.Size) {
				t.Errorf("%s: mode %o size %d, want %o %d", cp, ino.Mode, ino.Size, w.Mode, w.Size)
			}
			switch {
			case ino.IsDir():
				walk(cp, ino.Nid)
			case ino.IsSymlink():
				if l, err := f.Readlink(ctx, ino.Nid); err != nil || l != w.Link {
					t.Errorf("%s: link %q %v, want %q", cp, l, err, w.Link)
				}
			case ino.IsRegular() && len(seen)%7 == 0:
				b := make([]byte, ino.Size)
				if _, err := f.Read(ctx, ino.Nid, b, 0); err != nil {
					t.Fatalf("%s: %v", cp, err)
				}
				if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != w.SHA256 {
					t.Errorf("%s: content differs", cp)
				}
			}
		}
	}
	walk("/", f.RootNid())
	if len(seen) != len(want)-1 {
		t.Fatalf("walked %d entries, the source has %d", len(seen), len(want)-1)
	}
	// The first entries walked were evicted long ago: their paths are
	// found again.
	n := 0
	for p, nid := range seen {
		if n++; n > 50 {
			break
		}
		if got := f.Path(nid); got != p && !hardLinked(want, p, got) {
			t.Errorf("Path(%d) = %q, want %q", nid, got, p)
		}
	}
}

// hardLinked reports whether a and b are names of one file.
func hardLinked(t treetest.Tree, a, b string) bool {
	return t[a] != nil && t[b] != nil && t[a].Links != "" && t[a].Links == t[b].Links
}
