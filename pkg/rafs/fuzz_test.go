package rafs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
)

// FuzzOpen feeds arbitrary bytes to the bootstrap reader: it must never
// panic, hang or allocate without bound, whatever the input.
func FuzzOpen(f *testing.F) {
	if b, err := os.ReadFile(filepath.Join(fixtures, "nydus/bootstrap/rafs-v6-2.2.boot")); err == nil {
		f.Add(b)
	}
	small := &Node{Inode: &Inode{Mode: ModeDir | 0o755}}
	small.SetChild(&Node{Name: "f", Inode: &Inode{Mode: ModeRegular | 0o644}})
	small.SetChild(&Node{Name: "l", Inode: &Inode{Mode: ModeSymlink | 0o777, Symlink: "f"}})
	if b, err := Marshal(small, WriterOptions{Flags: FlagsFor(compress.Zstd, digester.Blake3)}); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ctx := context.Background()
		rd, err := Open(ctx, bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		seen := map[uint64]bool{}
		_ = rd.Walk(ctx, func(p string, ino *DiskInode) error {
			if seen[ino.Nid] {
				return nil
			}
			seen[ino.Nid] = true
			if ino.IsRegular() {
				rd.ChunkAddrs(ctx, ino)
			}
			if ino.IsSymlink() {
				rd.Readlink(ctx, ino)
			}
			return nil
		})
		rd.ChunkTable(ctx)
		rd.Load(ctx, LoadOptions{MaxEntries: 10000})
	})
}
