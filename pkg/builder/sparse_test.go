package builder

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/compress"
)

// gnuTar builds a tar of dir with GNU tar's sparse support in the given
// format ("gnu" or "posix" for PAX sparse 1.0).
func gnuTar(t *testing.T, dir, format string) []byte {
	t.Helper()
	if _, err := exec.LookPath("tar"); err != nil {
		t.Fatalf("GNU tar is needed to make sparse archives: %v", err)
	}
	out := filepath.Join(t.TempDir(), "sparse.tar")
	cmd := exec.Command("tar", "--sparse", "--format="+format, "--numeric-owner", "-C", dir, "-cf", out, ".")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSparseAndHugeFiles builds GNU and PAX sparse archives holding a
// file larger than 4 GiB and checks the unpacked content.
func TestSparseAndHugeFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("hashes 2 × 4 GiB; run without -short")
	}
	dir := t.TempDir()
	huge := filepath.Join(dir, "huge")
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	const size = 4<<30 + 3<<20 + 123
	f.WriteAt([]byte("head"), 0)
	f.WriteAt(treetest.Random(7, 100000), 2<<30)
	f.WriteAt([]byte("tail"), size-4)
	f.Close()
	small := filepath.Join(dir, "holey")
	f, _ = os.Create(small)
	f.WriteAt([]byte("x"), 1<<20)
	f.Close()
	for _, format := range []string{"gnu", "posix"} {
		t.Run(format, func(t *testing.T) {
			layer := gnuTar(t, dir, format)
			if len(layer) > 1<<20 {
				t.Fatalf("tar of sparse files is %d bytes: not sparse", len(layer))
			}
			b := build(t, layer, Options{ChunkSize: 0x1000000, Whiteout: WhiteoutNone})
			ino, err := b.rd.Lookup(context.Background(), "/huge")
			if err != nil {
				t.Fatal(err)
			}
			if ino.Size != size {
				t.Fatalf("size %d, want %d", ino.Size, size)
			}
			// Holes are zero chunks: stored once.
			if b.res.Stats.UniqueChunks > 6 {
				t.Fatalf("stats %+v", b.res.Stats)
			}
			// Stream the unpacked tar into the tree reader: it holds
			// more than 4 GiB of file data.
			pr, pw := io.Pipe()
			go func() {
				pw.CloseWithError(Unpack(context.Background(), b.rd, &memBlob{b.blob, compress.Zstd}, pw, UnpackOptions{}))
			}()
			got, err := treetest.FromTar(pr, treetest.Options{})
			if err != nil {
				t.Fatal(err)
			}
			want := tree(t, layer)
			if d := treetest.Diff(want, got); d != "" {
				t.Fatalf("unpacked tree differs:\n%s", d)
			}
			if !bytes.Equal([]byte(got["/huge"].SHA256), []byte(want["/huge"].SHA256)) || got["/huge"].Size != size {
				t.Fatal("huge file content differs")
			}
		})
	}
}
