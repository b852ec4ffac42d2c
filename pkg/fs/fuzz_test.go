package fs

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nydus-go/nydus/internal/fetchtest"
	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/fetch"
	"github.com/nydus-go/nydus/pkg/storage"
)

// FuzzMount mutates a bootstrap and its blob together and mounts them as
// nydusd does (chunk cache, record checks, the hot set and prefetch_all
// streamed, amplification, read-ahead, dependency speculation on every
// opened file): walking the tree
// and reading every file at several offsets must return data or an
// error, never panic or hang.
func FuzzMount(f *testing.F) {
	files := []treetest.File{
		treetest.Reg("a", 0o644, []byte("hello")), treetest.Reg("d/b", 0o600, treetest.Random(1, 9000)),
		treetest.Reg("d/c", 0o644, bytes.Repeat([]byte("z"), 5000)),
	}
	hot := []string{"/d/c", "/a"}
	for _, o := range []builder.Options{{ChunkSize: 0x1000}, {ChunkSize: 0x1000, BatchSize: 0x1000, Prefetch: hot}, {ChunkSize: 0x1000, TOC: true, InlineMeta: true, Prefetch: hot}} {
		var blob bytes.Buffer
		res, err := builder.Create(context.Background(), bytes.NewReader(treetest.Tar(files)), &blob, o)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(res.Bootstrap, blob.Bytes())
	}
	f.Fuzz(func(t *testing.T, boot, blob []byte) {
		if len(boot) > 1<<20 || len(blob) > 4<<20 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		fsys, err := Open(ctx, boot, storage.BytesSource(blob), Options{Fetch: fetch.Options{Cache: fetchtest.NewMemCache(), Amplify: 0x8000}, ReadAhead: 0x4000, Dependencies: true, Siblings: true})
		if err != nil {
			return
		}
		defer fsys.Close()
		// The hot set (the prefetch table) and then every file streamed,
		// as nydusd does at mount with prefetch_all; reads then find the
		// chunks cached or fetch them again.
		fsys.Prefetch(ctx, PrefetchOptions{Paths: fsys.PrefetchTablePaths(ctx), All: true, MergeSize: 0x2000})
		budget := 2000
		var walk func(nid uint64, depth int)
		walk = func(nid uint64, depth int) {
			ents, err := fsys.ReadDir(ctx, nid)
			if err != nil || depth > 32 {
				return
			}
			for _, e := range ents {
				if budget--; budget < 0 {
					return
				}
				ino, err := fsys.Lookup(ctx, nid, e.Name)
				if err != nil {
					continue
				}
				fsys.Xattr(ctx, ino.Nid, "user.x")
				switch {
				case ino.IsDir():
					walk(ino.Nid, depth+1)
				case ino.IsSymlink():
					fsys.Readlink(ctx, ino.Nid)
				case ino.IsRegular():
					fsys.Opened(ino.Nid)
					buf := make([]byte, 0x1800)
					for _, off := range []int64{0, 0x800, 0x1000, 0x2100, int64(ino.Size) - 1, int64(ino.Size) + 10} {
						if off >= 0 {
							fsys.Read(ctx, ino.Nid, buf, off)
						}
					}
				}
			}
		}
		walk(fsys.RootNid(), 0)
		fsys.bgWG.Wait()
		if ctx.Err() != nil {
			t.Fatal("walking and reading the mount took over 10 s")
		}
	})
}
