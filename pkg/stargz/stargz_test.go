package stargz

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sample(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "upstream", "nydus", "stargz", "estargz_sample.json"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// footer returns an eStargz footer for a TOC at off: 51 bytes, or the 47
// of legacy stargz.
func footer(off int64, legacy bool) []byte {
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.NoCompression)
	if legacy {
		zw.Extra = []byte(fmt.Sprintf("%016xSTARGZ", off))
	} else {
		zw.Extra = append([]byte{'S', 'G', 22, 0}, fmt.Sprintf("%016xSTARGZ", off)...)
	}
	zw.Close()
	return b.Bytes()
}

func TestParseFooter(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		ft := footer(1000, legacy)
		size := int64(5000)
		tail := append(make([]byte, TailSize-len(ft)), ft...)
		f, err := ParseFooter(tail, size)
		if err != nil || f.Kind != EStargz || f.TOCOffset != 1000 || f.TOCSize != size-int64(len(ft))-1000 || f.Size != int64(len(ft)) {
			t.Errorf("legacy=%v: %+v, %v", legacy, f, err)
		}
		if _, err := ParseFooter(tail, 1000+int64(len(ft))); !errors.Is(err, ErrCorrupt) {
			t.Errorf("legacy=%v: TOC at the footer: %v", legacy, err)
		}
	}
	zc := make([]byte, 48)
	copy(zc, []byte{0x50, 0x2a, 0x4d, 0x18, 40, 0, 0, 0})
	binary.LittleEndian.PutUint64(zc[8:], 100)
	binary.LittleEndian.PutUint64(zc[16:], 50)
	binary.LittleEndian.PutUint64(zc[24:], 200)
	binary.LittleEndian.PutUint64(zc[32:], 1)
	copy(zc[40:], "GnUlInUx")
	if f, err := ParseFooter(zc, 400); err != nil || f.Kind != ZstdChunked || f.TOCOffset != 100 || f.TOCSize != 50 {
		t.Errorf("zstd:chunked: %+v, %v", f, err)
	}
	if _, err := ParseFooter(zc, 190); !errors.Is(err, ErrCorrupt) {
		t.Errorf("zstd:chunked TOC over the footer: %v", err)
	}
	if _, err := ParseFooter(make([]byte, 64), 64); !errors.Is(err, ErrNoTOC) {
		t.Errorf("no footer: %v", err)
	}
}

func TestParseTOC(t *testing.T) {
	toc, err := ParseTOC(sample(t))
	if err != nil || len(toc.Entries) != 5 {
		t.Fatalf("sample: %v", err)
	}
	for _, bad := range []string{
		`{"version":2,"entries":[]}`,
		`{"version":1,"entries":[{"name":"a","type":"socket"}]}`,
		`{"version":1,"entries":[{"name":"","type":"dir"}]}`,
		`{"version":1,"entries":[{"name":"a","type":"reg","size":-1}]}`,
		`{"version":1,"entries":[{"name":"a","type":"reg","uid":4294967296}]}`,
		`{"version":1,"entries":[{"name":"a","type":"symlink"}]}`,
		`{"version":1,"entries":[{"name":"a","type":"chunk","offset":5}]}`,
		`{"version":1,"entries":[{"name":"a","type":"reg","size":1,"offset":5,"chunkDigest":"sha256:ab"}]}`,
		`{"version":1,"entries":[{"name":"a","type":"reg","size":1,"offset":5,"chunkDigest":"md5:` + strings.Repeat("a", 64) + `"}]}`,
		`not json`,
	} {
		if _, err := ParseTOC([]byte(bad)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", bad, err)
		}
	}
}

// TestLayoutRules: the layout refuses what it cannot reference: chunk
// sizes other than the image's, holes, shared streams, stored offsets out
// of order, chunks without their file.
func TestLayoutRules(t *testing.T) {
	d := `"chunkDigest":"sha256:` + strings.Repeat("a", 64) + `"`
	for _, c := range []struct{ name, entries string }{
		{"chunk bigger than the chunk size", `{"name":"a","type":"reg","size":8192,"offset":10,` + d + `}`},
		{"short middle chunk", `{"name":"a","type":"reg","size":9000,"chunkSize":2048,"offset":10,` + d + `},{"name":"a","type":"chunk","chunkOffset":4096,"offset":900,` + d + `}`},
		{"hole", `{"name":"a","type":"reg","size":9000,"chunkSize":4096,"offset":10,` + d + `},{"name":"a","type":"chunk","chunkOffset":8192,"offset":900,` + d + `}`},
		{"inner offset", `{"name":"a","type":"reg","size":10,"offset":10,` + d + `},{"name":"b","type":"reg","size":10,"offset":10,"innerOffset":10,` + d + `}`},
		{"out of order", `{"name":"a","type":"reg","size":10,"offset":900,` + d + `},{"name":"b","type":"reg","size":10,"offset":10,` + d + `}`},
		{"orphan chunk", `{"name":"a","type":"chunk","chunkOffset":4096,"offset":10,` + d + `}`},
		{"missing chunks", `{"name":"a","type":"reg","size":9000,"chunkSize":4096,"offset":10,` + d + `}`},
		{"no digest", `{"name":"a","type":"reg","size":10,"offset":10}`},
	} {
		toc, err := ParseTOC([]byte(`{"version":1,"entries":[` + c.entries + `]}`))
		if err != nil {
			t.Errorf("%s: ParseTOC: %v", c.name, err)
			continue
		}
		if _, err := NewLayout(toc, EStargz, 4096, 1<<20); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", c.name, err)
		}
	}
}

// FuzzTOC: TOC parsing and layout never panic, and a layout that is
// accepted keeps the invariants the read path relies on: 4 KiB aligned,
// increasing uncompressed offsets; increasing stored ranges inside the
// layer (overlapping by at most a byte); chunks no bigger than the chunk size.
func FuzzTOC(f *testing.F) {
	f.Add(sample(f), uint16(0))
	f.Add([]byte(`{"version":1,"entries":[{"name":"a","type":"reg","size":9000,"chunkSize":4096,"offset":10,"chunkDigest":"sha256:`+strings.Repeat("a", 64)+`"},{"name":"a","type":"chunk","chunkOffset":4096,"chunkSize":4096,"offset":900,"chunkDigest":"sha256:`+strings.Repeat("b", 64)+`"},{"name":"a","type":"chunk","chunkOffset":8192,"offset":1900,"chunkDigest":"sha256:`+strings.Repeat("c", 64)+`"}]}`), uint16(1))
	f.Fuzz(func(t *testing.T, js []byte, sel uint16) {
		toc, err := ParseTOC(js)
		if err != nil {
			return
		}
		kind := EStargz
		if sel&1 == 1 {
			kind = ZstdChunked
		}
		cs := uint32(4096) << (sel >> 1 % 13)
		layer := uint64(1 << 24)
		l, err := NewLayout(toc, kind, cs, layer)
		if err != nil {
			return
		}
		var uend, cend uint64
		for i, c := range l.Chunks {
			if c.UncompressedOffset%4096 != 0 || c.UncompressedOffset < uend || c.UncompressedSize == 0 || c.UncompressedSize > cs {
				t.Fatalf("chunk %d: uncompressed %d+%d after %d", i, c.UncompressedOffset, c.UncompressedSize, uend)
			}
			// Stored ranges may overlap by the one byte that keeps a
			// V1 entry's sizes apart.
			if c.CompressedOffset+1 < cend || c.CompressedSize == 0 || c.CompressedOffset+uint64(c.CompressedSize) > layer {
				t.Fatalf("chunk %d: stored %d+%d after %d", i, c.CompressedOffset, c.CompressedSize, cend)
			}
			uend, cend = c.UncompressedOffset+uint64(c.UncompressedSize), c.CompressedOffset+uint64(c.CompressedSize)
		}
		if len(l.Chunks) > 0 {
			if _, _, err := l.Meta(); err != nil {
				t.Fatalf("Meta: %v", err)
			}
		}
	})
}
