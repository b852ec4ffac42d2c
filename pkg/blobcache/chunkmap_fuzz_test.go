package blobcache

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzOpenChunkMap opens arbitrary chunk_map files: opening must either
// fail with ErrCorrupt and leave the file alone, or succeed with a
// consistent ready count.
func FuzzOpenChunkMap(f *testing.F) {
	f.Add(uint16(10), handMap(10, 1, false, 0, 3, 9))
	f.Add(uint16(10), handMap(10, 1, true))
	f.Add(uint16(10), handMap(10, 0, false, 1))
	f.Add(uint16(9), handMap(10, 1, false, 0, 3, 9))
	f.Add(uint16(10), []byte{})
	f.Add(uint16(10), make([]byte, 4098))
	f.Fuzz(func(t *testing.T, n uint16, content []byte) {
		if n == 0 {
			return
		}
		p := filepath.Join(t.TempDir(), "m")
		if err := os.WriteFile(p, content, 0o600); err != nil {
			t.Fatal(err)
		}
		m, notReady, _, err := openChunkMap(p, uint32(n))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			if got, _ := os.ReadFile(p); !bytes.Equal(got, content) {
				t.Fatal("rejected file modified")
			}
			return
		}
		defer m.close()
		if notReady > uint32(n) {
			t.Fatalf("notReady %d > n %d", notReady, n)
		}
		if !m.allReady() && notReady != uint32(n)-m.countReady() {
			t.Fatalf("notReady %d, bitmap has %d of %d", notReady, m.countReady(), n)
		}
		if fi, _ := os.Stat(p); fi.Size() != ChunkMapSize(uint32(n)) {
			t.Fatalf("accepted file of size %d", fi.Size())
		}
	})
}
