package zran

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
)

// reference inflates a gzip file with the standard library (every
// member).
func reference(t testing.TB, gz []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkReads compares reads at offsets spread over the file, across
// checkpoints, with the reference.
func checkReads(t *testing.T, idx *Index, gz, want []byte, rng *rand.Rand) {
	t.Helper()
	if idx.Size != int64(len(want)) {
		t.Fatalf("index size %d, want %d", idx.Size, len(want))
	}
	offs := []int64{0, int64(len(want)) / 2, max(int64(len(want))-1, 0)}
	for _, c := range idx.Checkpoints {
		offs = append(offs, c.Out, max(c.Out-1, 0))
	}
	for range 40 {
		if len(want) > 0 {
			offs = append(offs, rng.Int63n(int64(len(want))))
		}
	}
	for _, off := range offs {
		n := 1 + rng.Intn(3*windowSize)
		got := make([]byte, n)
		m, err := idx.ReadAt(bytes.NewReader(gz), got, off)
		end := min(off+int64(n), int64(len(want)))
		if int64(m) != end-off || (err != nil && (end-off == int64(n) || !errors.Is(err, io.EOF))) {
			t.Fatalf("ReadAt(%d, %d bytes) = %d, %v; want %d", off, n, m, err, end-off)
		}
		if !bytes.Equal(got[:m], want[off:end]) {
			t.Fatalf("ReadAt(%d, %d bytes): wrong data", off, n)
		}
	}
}

// TestUpstreamFixtures: upstream's zran test layers (one gzip member,
// two members, a tar with an empty file) read back byte for byte from
// every checkpoint.
func TestUpstreamFixtures(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, name := range []string{"zran-single-stream.tar.gz", "zran-two-streams.tar.gz", "zran-zero-file.tar.gz"} {
		t.Run(name, func(t *testing.T) {
			gz, err := os.ReadFile(filepath.Join("..", "..", "testdata", "upstream", "nydus", "zran", name))
			if err != nil {
				t.Fatal(err)
			}
			want := reference(t, gz)
			idx, err := Build(bytes.NewReader(gz), 0)
			if err != nil {
				t.Fatal(err)
			}
			members := bytes.Count(gz, []byte{0x1f, 0x8b, 8}) // an upper bound
			if len(idx.Checkpoints) < 1 || (name == "zran-two-streams.tar.gz" && len(idx.Checkpoints) < 2) || len(idx.Checkpoints) > members+int(idx.Size/1)+1 {
				t.Fatalf("%d checkpoints", len(idx.Checkpoints))
			}
			checkReads(t, idx, gz, want, rng)
		})
	}
}

// gzipOf compresses data as one gzip member at level.
func gzipOf(t testing.TB, data []byte, level int) []byte {
	t.Helper()
	var b bytes.Buffer
	zw, err := gzip.NewWriterLevel(&b, level)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(data)
	zw.Close()
	return b.Bytes()
}

// sample is data with long repeats, text and noise, so that every block
// type and long back-references appear.
func sample(seed int64, n int) []byte {
	rng := rand.New(rand.NewSource(seed))
	var b bytes.Buffer
	for b.Len() < n {
		switch rng.Intn(3) {
		case 0:
			fmt.Fprintf(&b, "line %d of the sample: the quick brown fox jumps over the lazy dog\n", rng.Intn(1000))
		case 1:
			r := make([]byte, rng.Intn(4096))
			rng.Read(r)
			b.Write(r)
		default:
			if b.Len() > 40000 {
				at := b.Len() - 1 - rng.Intn(32000)
				b.Write(append([]byte(nil), b.Bytes()[at:at+rng.Intn(2000)]...))
			}
		}
	}
	return b.Bytes()[:n]
}

// TestLevelsAndMembers: stored, fixed and dynamic blocks from every
// level, several members, checkpoints every 64 KiB: all reads match.
func TestLevelsAndMembers(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	data := sample(3, 3<<20)
	residues := map[uint8]bool{}
	defer func() {
		// Checkpoints start at every bit of a byte, so the prefix of
		// every length (stored blocks realign after them) was used.
		if len(residues) != 8 {
			t.Errorf("checkpoints started at bits %v of a byte only", residues)
		}
	}()
	for _, level := range []int{gzip.NoCompression, gzip.BestSpeed, gzip.DefaultCompression, gzip.BestCompression, gzip.HuffmanOnly} {
		t.Run(fmt.Sprint(level), func(t *testing.T) {
			gz := append(gzipOf(t, data[:1<<20], level), gzipOf(t, data[1<<20:], level)...)
			idx, err := Build(bytes.NewReader(gz), 64<<10)
			if err != nil {
				t.Fatal(err)
			}
			if len(idx.Checkpoints) < 20 {
				t.Fatalf("%d checkpoints for 3 MiB at a 64 KiB span", len(idx.Checkpoints))
			}
			for _, c := range idx.Checkpoints {
				residues[c.Bits] = true
			}
			checkReads(t, idx, gz, data, rng)
		})
	}
}

// TestBadInput: a corrupted or truncated file fails Build with an error
// naming where, never a panic or bad data.
func TestBadInput(t *testing.T) {
	gz := gzipOf(t, sample(4, 200<<10), gzip.DefaultCompression)
	flip := append([]byte(nil), gz...)
	flip[len(flip)/2] ^= 0x40
	for name, in := range map[string][]byte{"flipped": flip, "truncated": gz[:len(gz)-20], "trailer": gz[:len(gz)-4], "empty": nil, "not gzip": []byte("hello world, not gzip")} {
		if _, err := Build(bytes.NewReader(in), 0); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzBuild: no input makes Build panic or hang; what it accepts reads
// back like the standard library inflates it.
func FuzzBuild(f *testing.F) {
	f.Add(gzipOf(f, []byte("hello, hello, hello"), gzip.DefaultCompression))
	f.Add(gzipOf(f, sample(5, 70000), gzip.BestSpeed))
	f.Fuzz(func(t *testing.T, gz []byte) {
		idx, err := Build(bytes.NewReader(gz), 1024)
		if err != nil || idx.Size > 1<<20 {
			return
		}
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			t.Fatalf("Build accepted what gzip refuses: %v", err)
		}
		want, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("Build accepted what gzip refuses: %v", err)
		}
		got := make([]byte, idx.Size)
		if _, err := idx.ReadAt(bytes.NewReader(gz), got, 0); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("ReadAt differs from gzip")
		}
	})
}

// TestPrefix: the prefix for each bit offset is that many bits (mod 8)
// of empty non-final blocks, which this package's inflater decodes to
// nothing, ending exactly where the checkpoint's bits begin.
func TestPrefix(t *testing.T) {
	for bits := uint8(1); bits < 8; bits++ {
		p := prefix(bits, 0xff)
		f := newInflater(&bitReader{r: bytes.NewReader(append(p, 0xff, 0xff, 0xff))})
		for f.br.pos < int64(len(p)-1)*8 {
			if err := f.block(); err != nil || f.final || f.out != 0 {
				t.Fatalf("bits %d: %v, final %v, %d bytes out", bits, err, f.final, f.out)
			}
		}
		if f.br.pos != int64(len(p)-1)*8+int64(bits) {
			t.Fatalf("bits %d: the empty blocks end at bit %d of %d bytes", bits, f.br.pos, len(p))
		}
	}
}
