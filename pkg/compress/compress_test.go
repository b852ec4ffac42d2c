package compress

import (
	"bytes"
	"errors"
	"math/rand"
	"strings"
	"sync"
	"testing"
)

var algos = []Algorithm{None, Lz4Block, GZip, Zstd}

func testData(n int, seed int64) []byte {
	r := rand.New(rand.NewSource(seed))
	b := make([]byte, n)
	// Half random, half repetitive, so that every codec has work to do.
	r.Read(b[:n/2])
	for i := n / 2; i < n; i++ {
		b[i] = byte(i / 64)
	}
	return b
}

func TestNames(t *testing.T) {
	for _, a := range algos {
		got, err := ParseAlgorithm(a.String())
		if err != nil || got != a {
			t.Errorf("ParseAlgorithm(%q) = %v, %v; want %v", a.String(), got, err, a)
		}
	}
	want := map[Algorithm]string{None: "none", Lz4Block: "lz4_block", GZip: "gzip", Zstd: "zstd", 7: "Algorithm(7)"}
	for a, s := range want {
		if a.String() != s {
			t.Errorf("%d.String() = %q, want %q", uint32(a), a.String(), s)
		}
	}
	if _, err := ParseAlgorithm("lz4"); err == nil || !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), `"lz4"`) {
		t.Errorf("ParseAlgorithm(lz4) error = %v", err)
	}
	if Algorithm(4).Valid() || !Zstd.Valid() {
		t.Error("Valid is wrong")
	}
}

func TestRoundTrip(t *testing.T) {
	for _, a := range algos {
		for _, n := range []int{0, 1, 100, 4096, 1 << 20} {
			src := testData(n, int64(n))
			c, err := Compress(a, nil, src)
			if err != nil {
				t.Fatalf("%v/%d: compress: %v", a, n, err)
			}
			d, err := Decompress(a, nil, c, n)
			if err != nil {
				t.Fatalf("%v/%d: decompress: %v", a, n, err)
			}
			if !bytes.Equal(d, src) {
				t.Fatalf("%v/%d: round trip mismatch", a, n)
			}
			// Reuse of a large enough dst must not allocate a new array.
			buf := make([]byte, 0, n+10)
			d, err = Decompress(a, buf, c, n)
			if err != nil || !bytes.Equal(d, src) {
				t.Fatalf("%v/%d: decompress into buffer: %v", a, n, err)
			}
			if n > 0 && &d[0] != &buf[:1][0] {
				t.Errorf("%v/%d: dst was not reused", a, n)
			}
		}
	}
}

func TestDecompressSizeMismatch(t *testing.T) {
	src := testData(10000, 1)
	for _, a := range algos {
		c, err := Compress(a, nil, src)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{9999, 10001} {
			_, err := Decompress(a, nil, c, size)
			if err == nil {
				t.Errorf("%v: size %d accepted", a, size)
				continue
			}
			if a != Lz4Block && !errors.Is(err, ErrSizeMismatch) {
				t.Errorf("%v: size %d: error %v does not wrap ErrSizeMismatch", a, size, err)
			}
			if !strings.HasPrefix(err.Error(), "decompress "+a.String()) {
				t.Errorf("%v: error %q lacks operation prefix", a, err)
			}
		}
	}
	if _, err := Decompress(Zstd, nil, nil, -1); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("negative size: %v", err)
	}
	if _, err := Decompress(Zstd, nil, nil, MaxSize+1); err == nil {
		t.Error("size above MaxSize accepted")
	}
	if _, err := Decompress(Algorithm(9), nil, nil, 0); !errors.Is(err, ErrUnsupported) {
		t.Errorf("unknown algorithm: %v", err)
	}
	if _, err := Compress(Algorithm(9), nil, nil); !errors.Is(err, ErrUnsupported) {
		t.Errorf("unknown algorithm: %v", err)
	}
}

func TestDecompressCorrupt(t *testing.T) {
	src := testData(10000, 2)
	for _, a := range []Algorithm{Lz4Block, GZip, Zstd} {
		c, _ := Compress(a, nil, src)
		bad := append([]byte(nil), c...)
		for i := len(bad) / 3; i < len(bad); i += 7 {
			bad[i] ^= 0x5a
		}
		if d, err := Decompress(a, nil, bad, len(src)); err == nil && bytes.Equal(d, src) {
			t.Errorf("%v: corrupt input decoded to the original", a)
		}
		if _, err := Decompress(a, nil, c[:len(c)/2], len(src)); err == nil {
			t.Errorf("%v: truncated input accepted", a)
		}
	}
	// A huge claimed lz4 size is rejected before allocating.
	if _, err := Decompress(Lz4Block, nil, []byte{0x10, 'a'}, 1<<30); err == nil || !strings.Contains(err.Error(), "cannot expand") {
		t.Errorf("lz4 size bound: %v", err)
	}
}

func TestZstdLargeStream(t *testing.T) {
	n := zstdStreamThreshold + 12345
	src := bytes.Repeat([]byte("nydus"), n/5+1)[:n]
	c, err := Compress(Zstd, nil, src)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decompress(Zstd, nil, c, n)
	if err != nil || !bytes.Equal(d, src) {
		t.Fatalf("large stream: %v", err)
	}
	if _, err := Decompress(Zstd, nil, c, n+1); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("large stream short: %v", err)
	}
	if _, err := Decompress(Zstd, nil, c, n-1); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("large stream long: %v", err)
	}
}

func TestCompressIfSmaller(t *testing.T) {
	random := make([]byte, 4096)
	rand.New(rand.NewSource(3)).Read(random)
	out, ok, err := CompressIfSmaller(Zstd, nil, random)
	if err != nil || ok || &out[0] != &random[0] {
		t.Errorf("incompressible: ok=%v err=%v", ok, err)
	}
	zeros := make([]byte, 4096)
	out, ok, err = CompressIfSmaller(Zstd, nil, zeros)
	if err != nil || !ok || len(out) >= len(zeros) {
		t.Errorf("compressible: ok=%v len=%d err=%v", ok, len(out), err)
	}
	if _, ok, _ := CompressIfSmaller(Zstd, nil, nil); ok {
		t.Error("empty input reported compressed")
	}
	if _, _, err := CompressIfSmaller(Algorithm(8), nil, nil); !errors.Is(err, ErrUnsupported) {
		t.Errorf("unknown algorithm: %v", err)
	}
}

func TestConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				a := algos[(g+i)%len(algos)]
				src := testData(64<<10+i, int64(g*100+i))
				c, err := Compress(a, nil, src)
				if err != nil {
					t.Error(err)
					return
				}
				d, err := Decompress(a, nil, c, len(src))
				if err != nil || !bytes.Equal(d, src) {
					t.Errorf("%v: concurrent round trip failed: %v", a, err)
					return
				}
			}
		}(g)
	}
	wg.Wait()
}

func BenchmarkZstd1MiB(b *testing.B) {
	src := testData(1<<20, 9)
	c, _ := Compress(Zstd, nil, src)
	b.Run("compress", func(b *testing.B) {
		b.SetBytes(int64(len(src)))
		var dst []byte
		for i := 0; i < b.N; i++ {
			dst, _ = Compress(Zstd, dst, src)
		}
	})
	b.Run("decompress", func(b *testing.B) {
		b.SetBytes(int64(len(src)))
		var dst []byte
		for i := 0; i < b.N; i++ {
			dst, _ = Decompress(Zstd, dst, c, len(src))
		}
	})
}
