package blob

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
)

func TestFeatures(t *testing.T) {
	for _, f := range []Features{0, 0x70000021, 0xF, 0x0fff | FeatureHasTOC | 0x00ff0000} {
		if err := f.Validate(); err != nil {
			t.Errorf("%#x: %v", uint32(f), err)
		}
	}
	cases := []struct {
		f    Features
		want string
	}{
		{0x1000 | FeatureAligned, "blob features 0x1001: unknown incompatible bits 0x1000"},
		{FeatureV5NoExtBlobTable, "internal flag 0x80000000 set"},
		{FeatureZran, "zran, batch and encrypted need chunk-info v2"},
		{FeatureBatch, "need chunk-info v2"},
		{FeatureEncrypted, "need chunk-info v2"},
	}
	for _, c := range cases {
		if err := c.f.Validate(); err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrCorrupt) {
			t.Errorf("%#x: %v, want %q", uint32(c.f), err, c.want)
		}
	}
	if s := Features(0x70000021).String(); s != "aligned cap_toc chunk-digest tar-header toc" {
		t.Errorf("String = %q", s)
	}
	if s := (FeatureTarfs | 0x100000).String(); s != "tarfs 0x100000" {
		t.Errorf("String = %q", s)
	}
	if !Features(0x70000021).Has(FeatureHasTOC|FeatureAligned) || Features(1).Has(3) {
		t.Error("Has")
	}
}

func validHeader() MetaHeader {
	return MetaHeader{Features: FeatureAligned | FeatureChunkInfoV2, CICompressor: compress.Zstd, CIEntries: 10,
		CIOffset: 1000, CICompressedSize: 100, CIUncompressedSize: 240}
}

func TestMetaHeaderRoundTrip(t *testing.T) {
	for _, h := range []MetaHeader{
		validHeader(),
		{Features: 0xF, CIEntries: 163, CICompressedSize: 660112, CIUncompressedSize: 660112, ContextOffset: 3912, ContextSize: 656200, ContextCount: 21},
		{Features: FeatureAligned | FeatureChunkInfoV2 | FeatureBatch, CICompressor: compress.Lz4Block, CIEntries: 3, CICompressedSize: 50, CIUncompressedSize: 72 + 80, ContextOffset: 72, ContextSize: 80, ContextCount: 2},
	} {
		b, err := h.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != MetaHeaderSize || binary.LittleEndian.Uint32(b) != MetaMagic || binary.LittleEndian.Uint32(b[4092:]) != MetaMagic {
			t.Fatal("layout")
		}
		got, err := UnmarshalMetaHeader(b)
		if err != nil || got != h {
			t.Errorf("round trip %+v: %+v %v", h, got, err)
		}
	}
}

func TestMetaHeaderErrors(t *testing.T) {
	good, _ := validHeader().MarshalBinary()
	patch := func(off int, v uint64, n int) []byte {
		b := bytes.Clone(good)
		if n == 4 {
			binary.LittleEndian.PutUint32(b[off:], uint32(v))
		} else {
			binary.LittleEndian.PutUint64(b[off:], v)
		}
		return b
	}
	cases := []struct {
		b    []byte
		want string
	}{
		{good[:4095], "meta header: 4095 bytes, want 4096"},
		{patch(0, 1, 4), "meta header: magic 0x1 at offset 0, want 0xb10bb10b"},
		{patch(4092, 2, 4), "meta header: magic 0x2 at offset 4092"},
		{patch(4, 0x8004, 4), "unknown incompatible bits 0x8000"},
		{patch(8, 7, 4), "unknown ci_compressor 7"},
		{patch(12, 0, 4), "ci_entries 0 not in [1, 16777216]"},
		{patch(16, 1<<64-10, 8), "ci_offset 0xfffffffffffffff6 + ci_compressed_size 0x64 overflows"},
		{patch(24, 300, 8), "ci_compressed_size 300 exceeds ci_uncompressed_size 240"},
		{patch(32, 241, 8), "ci_uncompressed_size 241 != 10 entries × 24"},
		{patch(8, 0, 4), "uncompressed CI with ci_compressed_size 100 != ci_uncompressed_size 240"},
	}
	for _, c := range cases {
		_, err := UnmarshalMetaHeader(c.b)
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrCorrupt) {
			t.Errorf("error %v, want %q", err, c.want)
		}
	}
	z := MetaHeader{Features: 0xF, CIEntries: 2, CICompressedSize: 200, CIUncompressedSize: 200, ContextOffset: 48, ContextSize: 100, ContextCount: 1}
	for _, c := range []struct {
		mod  func(*MetaHeader)
		want string
	}{
		{func(h *MetaHeader) { h.ContextOffset = 40 }, "context offset 40 != end of entries 48"},
		{func(h *MetaHeader) { h.ContextSize = 200 }, "context table 48+200 beyond ci_uncompressed_size 200"},
		{func(h *MetaHeader) { h.ContextCount = 3 }, "3 contexts need 120 bytes"},
		{func(h *MetaHeader) { h.CIUncompressedSize, h.CICompressedSize = 40, 40 }, "ci_uncompressed_size 40 too small for 2 entries"},
	} {
		h := z
		c.mod(&h)
		if _, err := h.MarshalBinary(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", h, err, c.want)
		}
	}
}

func TestMetaFileErrors(t *testing.T) {
	h := MetaHeader{Features: FeatureAligned, CIEntries: 1, CICompressedSize: 16, CIUncompressedSize: 16}
	ci := AppendChunkInfo(nil, ChunkInfo{CompressedSize: 4, UncompressedSize: 8, Compressed: true}, false)
	mf, err := MarshalMetaFile(h, ci)
	if err != nil || len(mf) != 8192 {
		t.Fatalf("%d %v", len(mf), err)
	}
	if _, err := MarshalMetaFile(h, ci[:8]); err == nil || !strings.Contains(err.Error(), "CI data is 8 bytes, header says 16") {
		t.Errorf("short CI: %v", err)
	}
	if _, err := ParseMetaFile(mf[4096:]); err == nil || !strings.Contains(err.Error(), "parse meta file: size 4096, want 8192") {
		t.Errorf("truncated: %v", err)
	}
	if _, err := ParseMetaFile(mf[:100]); err == nil || !strings.Contains(err.Error(), "shorter than the 4096-byte header") {
		t.Errorf("tiny: %v", err)
	}
	// A zran context whose dictionary lies outside the table.
	zh := MetaHeader{Features: 0xF, CIEntries: 1, CICompressedSize: 24 + 40 + 8, CIUncompressedSize: 24 + 40 + 8, ContextOffset: 24, ContextSize: 48, ContextCount: 1}
	zci := AppendChunkInfo(nil, ChunkInfo{CompressedSize: 4, UncompressedSize: 8, Compressed: true, Flags: ChunkZran}, true)
	zci, _ = ZranContext{OutLen: 100, DictOffset: 4, DictSize: 8}.AppendBinary(zci)
	zci = append(zci, make([]byte, 8)...)
	if _, err := DecodeMeta(zh, zci); err == nil || !strings.Contains(err.Error(), "zran context 0 dictionary 4+8 beyond dictionary table size 8") {
		t.Errorf("zran dict: %v", err)
	}
	zci[24+16] = 0 // DictOffset = 0
	m, err := DecodeMeta(zh, zci)
	if err != nil || len(m.ZranDict(0)) != 8 {
		t.Errorf("zran dict fixed: %v", err)
	}
}

func TestTOCEntry(t *testing.T) {
	e := TOCEntry{Flags: TOCCompressionZstd, Name: "image.boot", UncompressedDigest: digester.Sum(digester.Sha256, []byte("x")),
		CompressedOffset: 1, CompressedSize: 2, UncompressedSize: 3}
	b, err := e.MarshalBinary()
	if err != nil || len(b) != TOCEntrySize {
		t.Fatal(err)
	}
	got, err := UnmarshalTOCEntry(b)
	if err != nil || got != e {
		t.Errorf("round trip %+v %v", got, err)
	}
	if a, err := got.Compressor(); err != nil || a != compress.Zstd {
		t.Errorf("compressor %v %v", a, err)
	}
	for flags, want := range map[uint32]string{0: "unknown compression flags 0x0", 3: "unknown compression flags 0x3", 0x11: "unknown flags 0x11"} {
		e.Flags = flags
		if _, err := e.Compressor(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("flags %#x: %v", flags, err)
		}
	}
	e.Name = "a-name-longer-than-16"
	if _, err := e.MarshalBinary(); err == nil || !strings.Contains(err.Error(), "name length 21 not in [1, 16]") {
		t.Errorf("long name: %v", err)
	}
	if _, err := UnmarshalTOCEntry(b[:100]); err == nil || !strings.Contains(err.Error(), "100 bytes, want 128") {
		t.Errorf("short entry: %v", err)
	}
}

func TestParseTOCErrors(t *testing.T) {
	good, _ := TOC{Entries: []TOCEntry{{Flags: 1, Name: "image.blob"}}}.MarshalBinary()
	hdr := func(name string, size int64) []byte {
		h := TarHeader(name, size)
		return h[:]
	}
	ustar := hdr(SectionTOC, 128)
	copy(ustar[257:], "ustar\x0000")
	sum := tarChecksum((*[512]byte)(ustar))
	putOctal(ustar[148:156], uint64(sum))
	cases := []struct {
		b    []byte
		want string
	}{
		{good[:100], "parse toc: 100 bytes, too small for a tar header"},
		{append(make([]byte, 128), hdr("image.boot", 128)...), `last tar header is "image.boot", not "rafs.blob.toc": not found`},
		{append(make([]byte, 128), hdr(SectionTOC, 100)...), "entries size 100 is not a multiple of 128"},
		{append(make([]byte, 128), hdr(SectionTOC, 256)...), "entries size 256 exceeds the 128 bytes available"},
		{append(make([]byte, 128), ustar...), "tar header is not a GNU header"},
		{append(bytes.Clone(good[:128]), func() []byte { h := hdr(SectionTOC, 128); h[0] = 'R'; return h }()...), "checksum"},
	}
	for _, c := range cases {
		if _, err := ParseTOC(c.b); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want %q", err, c.want)
		}
	}
	toc, err := ParseTOC(append(make([]byte, 300), good...))
	if err != nil || len(toc.Entries) != 1 || toc.Size() != 640 {
		t.Errorf("leading bytes: %+v %v", toc, err)
	}
	if _, err := ReadTOC(bytes.NewReader(good), 0); err == nil {
		t.Error("size 0 accepted")
	}
	if _, err := ReadTOC(bytes.NewReader(good[:511]), 511); err == nil || !strings.Contains(err.Error(), "too small for a ToC") {
		t.Errorf("small blob: %v", err)
	}
	if _, err := ReadTOCAt(bytes.NewReader(good), int64(len(good)), 600, digester.Digest{}); err == nil || !strings.Contains(err.Error(), "blob_toc_size 600 not a multiple of 128") {
		t.Errorf("bad toc size: %v", err)
	}
	if _, err := ReadTOCAt(bytes.NewReader(good), int64(len(good)), 640, digester.Digest{1}); err == nil || !strings.Contains(err.Error(), "blob_toc_digest says") {
		t.Errorf("bad digest: %v", err)
	}
	if _, err := ReadTOCAt(bytes.NewReader(good), int64(len(good)), 1024, digester.Digest{}); err == nil || !strings.Contains(err.Error(), "exceeds blob size") {
		t.Errorf("toc larger than blob: %v", err)
	}
}

func TestTarHeader(t *testing.T) {
	h := TarHeader("image.blob", 7802)
	e, err := ParseTarHeader(h[:])
	if err != nil || e != (TarEntry{Name: "image.blob", Size: 7802, GNU: true}) {
		t.Fatalf("%+v %v", e, err)
	}
	if string(h[124:136]) != "00000017172\x00" || string(h[136:148]) != "00000000000\x00" || h[156] != '0' ||
		string(h[257:265]) != "ustar  \x00" || !bytes.Equal(h[100:124], make([]byte, 24)) {
		t.Errorf("fields: size %q mtime %q", h[124:136], h[136:148])
	}
	// Sizes from 8 GiB use base-256, like the Rust tar crate.
	for _, size := range []int64{1<<33 - 1, 1 << 33, 1<<40 + 12345} {
		h := TarHeader("x", size)
		e, err := ParseTarHeader(h[:])
		if err != nil || e.Size != size {
			t.Errorf("size %d: %+v %v", size, e, err)
		}
		if size >= 1<<33 && h[124] != 0x80 {
			t.Errorf("size %d not base-256: %x", size, h[124:136])
		}
	}
	for _, bad := range []struct {
		name string
		size int64
	}{{"", 1}, {strings.Repeat("a", 101), 1}, {"a\x00b", 1}, {"a", -1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("TarHeader(%q, %d) did not panic", bad.name, bad.size)
				}
			}()
			TarHeader(bad.name, bad.size)
		}()
	}
	mk := func(mod func(h *[512]byte)) []byte {
		h := TarHeader("blob.meta", 10)
		mod(&h)
		putOctal(h[148:156], uint64(tarChecksum(&h)))
		return h[:]
	}
	cases := []struct {
		b    []byte
		want string
	}{
		{make([]byte, 511), "tar header: 511 bytes, want 512"},
		{make([]byte, 512), "tar header: bad magic"},
		{mk(func(h *[512]byte) { h[156] = '5' }), "typeflag '5' is not a regular file"},
		{mk(func(h *[512]byte) { h[0] = 0 }), "empty name"},
		{mk(func(h *[512]byte) { copy(h[124:], "0000000009\x00") }), `size field: invalid octal number "0000000009"`},
		{mk(func(h *[512]byte) { h[124] = 0xff }), "negative base-256 number"},
		{mk(func(h *[512]byte) { h[124] = 0x80; h[125] = 1 }), "base-256 number overflows 64 bits"},
		{mk(func(h *[512]byte) { copy(h[124:], "\x80\x00\x00\x00\x7f\xff\xff\xff\xff\xff\xff\xff") }), "size 9223372036854775807 too large"},
		{func() []byte { h := TarHeader("a", 1); h[148] = 'x'; return h[:] }(), "checksum field"},
		{func() []byte { h := TarHeader("a", 1); h[200] = 1; return h[:] }(), "does not match computed"},
	}
	for _, c := range cases {
		if _, err := ParseTarHeader(c.b); err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrCorrupt) {
			t.Errorf("error %v, want %q", err, c.want)
		}
	}
	// POSIX ustar headers are accepted.
	u := mk(func(h *[512]byte) { copy(h[257:], "ustar\x0000") })
	if e, err := ParseTarHeader(u); err != nil || e.GNU {
		t.Errorf("ustar: %+v %v", e, err)
	}
}

func TestReadTarSectionsErrors(t *testing.T) {
	sec := func(name string, data []byte) []byte {
		h := TarHeader(name, int64(len(data)))
		return append(bytes.Clone(data), h[:]...)
	}
	good := append(sec("a", []byte("hello")), sec("b", nil)...)
	secs, err := ReadTarSections(bytes.NewReader(good), int64(len(good)))
	if err != nil || len(secs) != 2 || secs[0] != (Section{"a", 0, 5}) || secs[1] != (Section{"b", 517, 0}) {
		t.Fatalf("%+v %v", secs, err)
	}
	many := []byte{}
	for range maxTarSections + 1 {
		many = append(many, sec("x", nil)...)
	}
	cases := []struct {
		b    []byte
		want string
	}{
		{good[:100], "blob size 100 is smaller than a tar header"},
		{append([]byte("junk"), good...), "4 bytes left before offset 4, too few for a tar header"},
		{append(make([]byte, 600), good...), "header at offset 88: tar header: bad magic"},
		{sec("big", nil)[:512], ""},
		{func() []byte { h := TarHeader("a", 1000); return h[:] }(), `section "a" at header offset 0 has size 1000 beyond the start of the blob`},
		{many, "more than 64 sections"},
	}
	for _, c := range cases {
		_, err := ReadTarSections(bytes.NewReader(c.b), int64(len(c.b)))
		if c.want == "" {
			if err != nil {
				t.Errorf("unexpected error %v", err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want %q", err, c.want)
		}
	}
}
