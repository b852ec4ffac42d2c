package compress

import (
	"bytes"
	"errors"
	"testing"
)

// TestDecompressPrefix decodes the first bytes of a gzip member and of a
// zstd frame that go on with more data (as an eStargz or zstd:chunked
// chunk's stream goes on with the next tar headers), from the whole
// stream and from a stored range cut after the wanted bytes.
func TestDecompressPrefix(t *testing.T) {
	chunk := testData(100<<10, 1)
	// What follows the chunk: incompressible, so that a cut range lacks
	// it.
	stream := append(append([]byte(nil), chunk...), testData(8<<10, 2)[:4<<10]...)
	for _, algo := range []Algorithm{GZip, Zstd} {
		src, err := Compress(algo, nil, stream)
		if err != nil {
			t.Fatal(err)
		}
		cuts := []int{len(src)}
		if algo == GZip {
			// A deflate stream decodes as it is read: the stored range
			// may stop short of the member's end. A zstd block decodes
			// whole, so a zstd range goes to the frame's end.
			cuts = append(cuts, len(src)-2<<10)
		}
		for _, cut := range cuts {
			got, err := DecompressPrefix(algo, nil, src[:cut], len(chunk))
			if err != nil || !bytes.Equal(got, chunk) {
				t.Errorf("%v, %d of %d stored bytes: %d bytes, %v; want the chunk", algo, cut, len(src), len(got), err)
			}
			buf := make([]byte, 0, len(chunk))
			if got, err := DecompressPrefix(algo, buf, src[:cut], len(chunk)); err != nil || !bytes.Equal(got, chunk) {
				t.Errorf("%v into a buffer: %v", algo, err)
			}
		}
		// A stream shorter than the size, or a range cut before it.
		if _, err := DecompressPrefix(algo, nil, src, len(stream)+1); !errors.Is(err, ErrSizeMismatch) {
			t.Errorf("%v past the stream's end: %v, want ErrSizeMismatch", algo, err)
		}
		if _, err := DecompressPrefix(algo, nil, src[:len(src)/4], len(chunk)); err == nil {
			t.Errorf("%v from a quarter of the stream: no error", algo)
		}
	}
	if _, err := DecompressPrefix(Lz4Block, nil, []byte{1}, 1); !errors.Is(err, ErrUnsupported) {
		t.Errorf("lz4_block: %v, want ErrUnsupported", err)
	}
	if _, err := DecompressPrefix(GZip, nil, []byte("not gzip"), 1); err == nil {
		t.Error("not gzip: no error")
	}
}
