package blob

import (
	"bytes"
	"os"
	"testing"

	"github.com/nydus-go/nydus/pkg/compress"
)

func TestExplore(t *testing.T) {
	for _, p := range []string{fxBE7D, fxTOC} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s layout %v sections %+v data %d", p, r.Layout(), r.Sections(), r.DataSize())
		for _, ci := range r.ChunkInfos() {
			for _, a := range []compress.Algorithm{compress.Zstd, compress.Lz4Block} {
				_, err := r.ReadChunk(ci, a, nil)
				t.Logf("  %+v %v: %v", ci, a, err)
			}
		}
		boot, err := r.Bootstrap()
		t.Logf("boot %d %v", len(boot), err)
	}
}
