package blob

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/nydus-go/nydus/pkg/compress"
)

func openErr(b []byte) error {
	_, err := Open(bytes.NewReader(b), int64(len(b)))
	return err
}

func TestOpenCorrupt(t *testing.T) {
	be7d := readFixture(t, fxBE7D)
	tocBlob := readFixture(t, fxTOC)
	flip := func(b []byte, off int) []byte {
		c := bytes.Clone(b)
		c[off] ^= 0xff
		return c
	}
	setU64 := func(b []byte, off int, v uint64) []byte {
		c := bytes.Clone(b)
		binary.LittleEndian.PutUint64(c[off:], v)
		return c
	}
	const be7dTOC = 13530
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "open blob: blob size 0 is too small"},
		{"truncated by one byte", be7d[:len(be7d)-1], "open blob: read blob meta at offset 10457: meta header: magic 0x0 at offset 0, want 0xb10bb10b"},
		{"truncated to the meta header", be7d[:8346+100], "open blob: read blob meta at offset 4350: meta header: magic 0xacc62b51"},
		{"too small for a plain blob", be7d[:1000], "open blob: no ToC, tar header or blob meta header found (tar header: bad magic"},
		{"ci flipped", flip(be7d, 8314), "open blob: chunk infos at offset 8314 do not match their ToC digest"},
		{"meta header flipped", flip(be7d, 8346+1000), "open blob: meta header at offset 8346 does not match its ToC digest"},
		{"digest array flipped", flip(be7d, 12960), `open blob: section "blob.digest" does not match its ToC digest`},
		{"toc name flipped", flip(be7d, be7dTOC+8), `open blob: toc entry "\x96mage.blob": range 7802+7802 outside the blob data [0, 13530)`},
		{"image.blob size wrong", setU64(be7d, be7dTOC+64, 7000), `open blob: tar header "image.blob" at offset 7000: tar header: bad magic`},
		{"blob.meta offset wrong", setU64(be7d, be7dTOC+128+56, 8300), `open blob: section "blob.meta" at 8300+32 disagrees with meta header ci_offset 8314`},
		{"entry beyond blob", setU64(be7d, be7dTOC+3*128+56, 14000), `open blob: toc entry "blob.digest": range 14000+64 outside the blob data [0, 13530)`},
		{"entry size overflow", setU64(be7d, be7dTOC+3*128+64, 1<<63), `open blob: toc entry "blob.digest": offset 12954 or sizes`},
		{"toc flags", setU64(tocBlob, 9010+3*128, 0x40), "open blob: toc entry 3: toc entry \"image.boot\": unknown flags 0x40"},
		{"toc tar header", flip(be7d, len(be7d)-512+130), "open blob: last tar header at offset 14042: tar header: checksum"},
		{"tar walk", flip(tocBlob[:9010], 3341+4144+100), "open blob: read tar sections: header at offset 7485: tar header: checksum 2874 does not match computed 3129"},
	}
	for _, c := range cases {
		err := openErr(c.b)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}

func TestBootstrapCorrupt(t *testing.T) {
	b := readFixture(t, fxTOC)
	const entry = 9010 + 3*128 // image.boot ToC entry
	c := bytes.Clone(b)
	binary.LittleEndian.PutUint64(c[entry+72:], 3<<30)
	r := openBytes(t, c)
	if _, err := r.Bootstrap(); err == nil || !strings.Contains(err.Error(), "read inline bootstrap: size 3221225472 (stored 501) not in [1, 2147483648]") {
		t.Errorf("huge bootstrap: %v", err)
	}
	c = bytes.Clone(b)
	binary.LittleEndian.PutUint64(c[entry+72:], 20481)
	if _, err := openBytes(t, c).Bootstrap(); !errors.Is(err, compress.ErrSizeMismatch) {
		t.Errorf("wrong size: %v", err)
	}
	c = bytes.Clone(b)
	c[entry+30] ^= 1 // digest
	if _, err := openBytes(t, c).Bootstrap(); err == nil || !strings.Contains(err.Error(), "content does not match its ToC digest") {
		t.Errorf("wrong digest: %v", err)
	}
	c = bytes.Clone(b)
	c[8000] ^= 0x55 // zstd data
	if _, err := openBytes(t, c).Bootstrap(); err == nil || !strings.HasPrefix(err.Error(), "read inline bootstrap: ") {
		t.Errorf("corrupt zstd: %v", err)
	}
}

// TestOpenTarFallback removes the ToC of a blob written with inline meta
// and reads it through its tar headers.
func TestOpenTarFallback(t *testing.T) {
	b := buildBlob(t, 3, 5, WriterOptions{Compressor: compress.Zstd, InlineMeta: true}, false, fakeBootstrap(4096))
	r := openBytes(t, b.blob)
	if r.Layout() != LayoutTarHeaders || r.Layout().String() != "tar-headers" {
		t.Fatalf("layout %v", r.Layout())
	}
	names := []string{}
	for _, s := range r.Sections() {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "image.blob,blob.meta,image.boot" {
		t.Errorf("sections %v", names)
	}
	if boot, err := r.Bootstrap(); err != nil || !bytes.Equal(boot, b.boot) {
		t.Errorf("bootstrap %v", err)
	}
	// Duplicate section names are rejected.
	dup := append(bytes.Clone(b.blob), func() []byte { h := TarHeader(SectionBootstrap, 0); return h[:] }()...)
	if err := openErr(dup); err == nil || !strings.Contains(err.Error(), `duplicate tar section "image.boot"`) {
		t.Errorf("duplicate: %v", err)
	}
}

func TestOpenPlain(t *testing.T) {
	b := buildBlob(t, 4, 5, WriterOptions{Compressor: compress.Lz4Block}, false, nil)
	r := openBytes(t, b.blob)
	if r.Layout() != LayoutPlain || len(r.Sections()) != 0 || r.DataSize() != int64(b.res.CIOffset) {
		t.Fatalf("layout %v data %d", r.Layout(), r.DataSize())
	}
	if _, ok := r.TOC(); ok {
		t.Error("plain blob has a ToC")
	}
	c := bytes.Clone(b.blob)
	binary.LittleEndian.PutUint64(c[len(c)-MetaHeaderSize+16:], b.res.CIOffset+1)
	if err := openErr(c); err == nil || !strings.Contains(err.Error(), "does not end at the header") {
		t.Errorf("moved ci_offset: %v", err)
	}
}

func TestReadChunkErrors(t *testing.T) {
	b := buildBlob(t, 5, 3, WriterOptions{Compressor: compress.Zstd, ChunkInfoV2: true, TOC: true}, true, nil)
	r := openBytes(t, b.blob)
	ci := r.ChunkInfos()[0]
	beyond := ci
	beyond.CompressedOffset = uint64(r.DataSize())
	if _, err := r.ReadChunk(beyond, compress.Zstd, nil); err == nil || !strings.Contains(err.Error(), "beyond chunk data size") {
		t.Errorf("beyond: %v", err)
	}
	comp := ci
	comp.Compressed = true
	comp.CompressedSize = ci.CompressedSize - 1
	if _, err := r.ReadChunk(comp, compress.None, nil); err == nil || !strings.Contains(err.Error(), "blob compressor is none") {
		t.Errorf("none: %v", err)
	}
	z := ci
	z.Flags = ChunkZran
	if _, err := r.ReadChunk(z, compress.Zstd, nil); !errors.Is(err, ErrUnsupported) {
		t.Errorf("zran: %v", err)
	}
	e := ci
	e.Flags = ChunkEncrypted
	if _, err := r.ReadChunk(e, compress.Zstd, nil); !errors.Is(err, ErrUnsupported) {
		t.Errorf("encrypted: %v", err)
	}
	bt := ci
	bt.Flags = ChunkBatch
	if _, err := r.ReadChunk(bt, compress.Zstd, nil); err == nil || !strings.Contains(err.Error(), "batch index 0 has no context") {
		t.Errorf("batch: %v", err)
	}
	bad := ci
	bad.UncompressedSize = 0
	if _, err := r.ReadChunk(bad, compress.Zstd, nil); err == nil || !strings.Contains(err.Error(), "uncompressed size 0") {
		t.Errorf("invalid: %v", err)
	}
	if _, err := r.ReadChunk(ci, compress.Lz4Block, nil); err == nil {
		t.Error("wrong algorithm accepted")
	}
}

func TestReaderConcurrent(t *testing.T) {
	b := buildBlob(t, 9, 30, WriterOptions{Compressor: compress.Zstd, TOC: true}, true, nil)
	r := openBytes(t, b.blob)
	done := make(chan error)
	for g := range 4 {
		go func() {
			for i, ci := range r.ChunkInfos() {
				if (i+g)%2 == 0 {
					continue
				}
				got, err := r.ReadChunk(ci, compress.Zstd, nil)
				if err != nil || !bytes.Equal(got, b.chunks[i]) {
					done <- errors.New("concurrent read mismatch")
					return
				}
			}
			done <- nil
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
