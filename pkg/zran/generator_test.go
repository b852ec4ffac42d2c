package zran

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// tarOf returns a tar of files named f0, f1, ... with the given sizes,
// their data taken from sample.
func tarOf(t testing.TB, sizes []int) ([]byte, [][]byte) {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	var files [][]byte
	for i, n := range sizes {
		data := sample(int64(100+i), n)
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("f%d", i), Mode: 0o644, Size: int64(n), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
		files = append(files, data)
	}
	tw.Close()
	return b.Bytes(), files
}

type genChunk struct {
	file int
	data []byte
	ref  ChunkRef
}

// generate walks a tar.gz with a Generator, chunkSize bytes a chunk.
func generate(t testing.TB, gz []byte, span int64, chunkSize int) (*Generator, []genChunk, *Reader) {
	t.Helper()
	z := NewReader(bytes.NewReader(gz))
	g := NewGenerator(z, span)
	tr := tar.NewReader(z)
	var chunks []genChunk
	for i := 0; ; i++ {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for left := h.Size; left > 0; {
			n := min(left, int64(chunkSize))
			if _, err := g.BeginChunk(n); err != nil {
				t.Fatal(err)
			}
			data := make([]byte, n)
			if _, err := io.ReadFull(tr, data); err != nil {
				t.Fatal(err)
			}
			ref, err := g.EndChunk()
			if err != nil {
				t.Fatal(err)
			}
			chunks = append(chunks, genChunk{i, data, ref})
			left -= n
		}
	}
	if _, err := io.Copy(io.Discard, z); err != nil {
		t.Fatal(err)
	}
	return g, chunks, z
}

// checkChunks inflates every chunk from its context twice: with the
// context's whole input, and with the input up to the chunk's own end
// only (what a lazy reader fetches).
func checkChunks(t *testing.T, gz []byte, g *Generator, chunks []genChunk) {
	t.Helper()
	for i, c := range chunks {
		x := g.Contexts()[c.ref.Context]
		end := int(c.ref.Offset + c.ref.Size)
		if c.ref.Offset+c.ref.Size > x.OutLen || c.ref.In+int64(c.ref.InLen) > x.InOffset+int64(x.InLen) {
			t.Fatalf("chunk %d (%+v) outside its context %+v", i, c.ref, x)
		}
		for _, in := range [][]byte{gz[x.InOffset : x.InOffset+int64(x.InLen)], gz[x.InOffset : c.ref.In+int64(c.ref.InLen)]} {
			out, err := Inflate(x, x.Window, in, end)
			if err != nil {
				t.Fatalf("chunk %d of file %d, context %d (%d input bytes): %v", i, c.file, c.ref.Context, len(in), err)
			}
			if !bytes.Equal(out[c.ref.Offset:], c.data) {
				t.Fatalf("chunk %d of file %d: wrong data", i, c.file)
			}
		}
	}
}

// TestGenerator: chunks of files big and small, in one and in several
// gzip members, at every level, read back from their contexts, from the
// whole context input and from the input up to the chunk's end.
func TestGenerator(t *testing.T) {
	sizes := []int{0, 1, 700, 4096, 70000, 300 << 10, 3, 1 << 20, 5000, 2<<20 + 17, 0, 12}
	raw, _ := tarOf(t, sizes)
	for _, level := range []int{gzip.NoCompression, gzip.BestSpeed, gzip.DefaultCompression, gzip.BestCompression, gzip.HuffmanOnly} {
		for _, members := range []int{1, 3} {
			t.Run(fmt.Sprintf("level%d/members%d", level, members), func(t *testing.T) {
				var gz []byte
				step := len(raw)/members + 1
				for off := 0; off < len(raw); off += step {
					gz = append(gz, gzipOf(t, raw[off:min(off+step, len(raw))], level)...)
				}
				g, chunks, z := generate(t, gz, 256<<10, 64<<10)
				if z.Size() != int64(len(gz)) || z.Offset() != int64(len(raw)) {
					t.Fatalf("read %d of %d compressed, %d of %d bytes", z.Size(), len(gz), z.Offset(), len(raw))
				}
				if len(g.Contexts()) < 3 || len(g.Contexts()) > len(chunks) {
					t.Fatalf("%d contexts for %d chunks", len(g.Contexts()), len(chunks))
				}
				checkChunks(t, gz, g, chunks)
			})
		}
	}
}

// TestGeneratorUpstreamFixtures: upstream's zran layers, every file
// chunk read back through its context.
func TestGeneratorUpstreamFixtures(t *testing.T) {
	for _, name := range []string{"zran-single-stream.tar.gz", "zran-two-streams.tar.gz", "zran-zero-file.tar.gz"} {
		t.Run(name, func(t *testing.T) {
			gz, err := os.ReadFile(filepath.Join("..", "..", "testdata", "upstream", "nydus", "zran", name))
			if err != nil {
				t.Fatal(err)
			}
			g, chunks, _ := generate(t, gz, 0, 4096)
			checkChunks(t, gz, g, chunks)
		})
	}
}

// TestInflateBadInput: a flipped byte, a short input, a bad context.
func TestInflateBadInput(t *testing.T) {
	raw, _ := tarOf(t, []int{200 << 10})
	gz := gzipOf(t, raw, gzip.DefaultCompression)
	g, chunks, _ := generate(t, gz, 0, 1<<20)
	x := g.Contexts()[0]
	in := append([]byte(nil), gz[x.InOffset:x.InOffset+int64(x.InLen)]...)
	if _, err := Inflate(x, x.Window, in[:len(in)/2], int(x.OutLen)); !errors.Is(err, ErrTruncated) {
		t.Errorf("half the input: %v", err)
	}
	bad := x
	bad.CtxBits = 9
	if _, err := Inflate(bad, x.Window, in, int(x.OutLen)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("9 context bits: %v", err)
	}
	in[len(in)/3] ^= 0x10
	out, err := Inflate(x, x.Window, in, int(x.OutLen))
	if err == nil && bytes.Equal(out[chunks[0].ref.Offset:], chunks[0].data) {
		t.Error("a flipped byte gave the right data")
	}
}

// FuzzInflate: no context and input make Inflate panic or hang.
func FuzzInflate(f *testing.F) {
	raw, _ := tarOf(f, []int{5000, 70000})
	gz := gzipOf(f, raw, gzip.BestSpeed)
	f.Add(gz[10:], uint8(0), uint8(0), []byte{}, 4000)
	f.Add(gz[200:], uint8(0x5a), uint8(3), bytes.Repeat([]byte("ab"), 100), 70000)
	f.Fuzz(func(t *testing.T, in []byte, ctxByte, ctxBits uint8, dict []byte, n int) {
		if n < 0 || n > 1<<20 {
			return
		}
		out, err := Inflate(Context{CtxByte: ctxByte, CtxBits: ctxBits}, dict, in, n)
		if err == nil && len(out) != n {
			t.Fatalf("%d bytes, want %d", len(out), n)
		}
	})
}
