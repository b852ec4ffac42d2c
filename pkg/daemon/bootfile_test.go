package daemon

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestBootFile: reads return the bytes the file had at open, across and
// within blocks, from the file or the block cache; once the file
// changes, a read of a block not in the cache fails (errBootstrapChanged,
// reported once), and a read past the end is io.EOF.
func TestBootFile(t *testing.T) {
	data := make([]byte, 3*bootBlockSize+100)
	for i := range data {
		data[i] = byte(i * 7)
	}
	p := filepath.Join(t.TempDir(), "image.boot")
	os.WriteFile(p, data, 0o644)
	blocks := newBootBlocks(bootBlockSize + bootBlockOverhead) // one block
	b, digest, err := openBootFile(p, blocks)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if want := fmt.Sprintf("sha256:%x", sha256.Sum256(data)); digest != want || b.Size() != int64(len(data)) {
		t.Fatalf("digest %s size %d, want %s %d", digest, b.Size(), want, len(data))
	}
	for _, r := range [][2]int{{0, 10}, {bootBlockSize - 5, 10}, {100, 2 * bootBlockSize}, {3 * bootBlockSize, 100}} {
		got := make([]byte, r[1])
		if n, err := b.ReadAt(got, int64(r[0])); err != nil || n != r[1] || !bytes.Equal(got, data[r[0]:r[0]+r[1]]) {
			t.Fatalf("ReadAt(%d, %d): %d %v", r[0], r[1], n, err)
		}
	}
	if n, err := b.ReadAt(make([]byte, 200), int64(len(data)-100)); n != 100 || err != io.EOF {
		t.Fatalf("read over the end: %d %v", n, err)
	}
	var reported []error
	b.onChanged = func(_ int64, err error) { reported = append(reported, err) }
	// The last block read (the tail) is cached; block 0 is not.
	changed := bytes.Clone(data)
	changed[10] ^= 1
	os.WriteFile(p, changed, 0o644)
	if _, err := b.ReadAt(make([]byte, 10), 3*bootBlockSize); err != nil {
		t.Fatalf("a cached block: %v", err)
	}
	for i := 0; i < 2; i++ {
		if _, err := b.ReadAt(make([]byte, 10), 0); !errors.Is(err, errBootstrapChanged) {
			t.Fatalf("a changed block: %v", err)
		}
	}
	os.Truncate(p, bootBlockSize)
	if _, err := b.ReadAt(make([]byte, 10), 2*bootBlockSize); !errors.Is(err, errBootstrapChanged) {
		t.Fatalf("a block the file lost: %v", err)
	}
	if len(reported) != 1 {
		t.Fatalf("reported %d times, want once", len(reported))
	}
}
