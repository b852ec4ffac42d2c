package blob

import (
	"encoding/hex"
	"errors"
	"math/rand"
	"strings"
	"testing"
)

func TestChunkInfoV1Fixture(t *testing.T) {
	// The 32-byte CI array of the be7d fixture (nydus-format.md §2.12).
	raw, _ := hex.DecodeString("00000000002022040000000000b02d010050000000704503dc12000000d0b900")
	cis, err := DecodeChunkInfos(raw, false, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := []ChunkInfo{
		{CompressedOffset: 0, CompressedSize: 4828, UncompressedOffset: 0, UncompressedSize: 16931, Compressed: true},
		{CompressedOffset: 4828, CompressedSize: 2974, UncompressedOffset: 20480, UncompressedSize: 13400, Compressed: true},
	}
	var enc []byte
	for i, ci := range cis {
		if ci != want[i] {
			t.Errorf("entry %d = %+v, want %+v", i, ci, want[i])
		}
		enc = AppendChunkInfo(enc, ci, false)
	}
	if hex.EncodeToString(enc) != hex.EncodeToString(raw) {
		t.Errorf("re-encoded %x, want %x", enc, raw)
	}
}

func TestChunkInfoLimits(t *testing.T) {
	cases := []struct {
		ci ChunkInfo
		v2 bool
	}{
		{ChunkInfo{CompressedOffset: 1<<40 - 1, CompressedSize: MaxChunkSize, UncompressedOffset: 1<<44 - 4096, UncompressedSize: MaxChunkSize}, false},
		{ChunkInfo{CompressedOffset: 1<<40 - 1, CompressedSize: 1, UncompressedOffset: 1<<44 - 4096, UncompressedSize: MaxChunkSize, Compressed: true}, false},
		{ChunkInfo{CompressedOffset: 1<<40 - 1, CompressedSize: 1<<24 - 1, UncompressedOffset: 1<<44 - 4096, UncompressedSize: MaxChunkSize, Compressed: true, Flags: ChunkHasCRC32 | ChunkEncrypted, Data: 0xffffffff}, true},
		{ChunkInfo{CompressedOffset: 77, CompressedSize: 0, UncompressedOffset: 1 << 30, UncompressedSize: 1, Compressed: true, Flags: ChunkBatch, Data: 5<<32 | 123}, true},
		{ChunkInfo{CompressedOffset: 77, CompressedSize: 5, UncompressedOffset: 8192, UncompressedSize: 5}, true},
	}
	for i, c := range cases {
		if err := c.ci.Validate(c.v2); err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		b := AppendChunkInfo(nil, c.ci, c.v2)
		if len(b) != entrySize(c.v2) {
			t.Fatalf("case %d: %d bytes", i, len(b))
		}
		got, err := ParseChunkInfo(b, c.v2)
		if err != nil || got != c.ci {
			t.Errorf("case %d: decoded %+v, %v; want %+v", i, got, err, c.ci)
		}
	}
}

func TestChunkInfoRandomRoundTrip(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 10000; i++ {
		v2 := i%2 == 0
		ci := ChunkInfo{
			CompressedOffset:   uint64(r.Int63n(1 << 40)),
			UncompressedOffset: uint64(r.Int63n(1<<32)) << 12,
			UncompressedSize:   uint32(1 + r.Intn(MaxChunkSize)),
		}
		ci.CompressedSize = uint32(1 + r.Intn(MaxChunkSize-1))
		if r.Intn(4) == 0 {
			ci.CompressedSize = ci.UncompressedSize
			if v2 && ci.CompressedSize > maxCompressedV2 {
				ci.CompressedSize = maxCompressedV2
				ci.UncompressedSize = maxCompressedV2
			}
		}
		ci.Compressed = ci.CompressedSize != ci.UncompressedSize
		if v2 && r.Intn(2) == 0 {
			ci.Flags = ChunkHasCRC32
			ci.Data = uint64(r.Uint32()|1) | uint64(r.Uint32())<<32
		}
		if err := ci.Validate(v2); err != nil {
			t.Fatalf("%+v: %v", ci, err)
		}
		b := AppendChunkInfo(nil, ci, v2)
		cis, err := DecodeChunkInfos(b, v2, 1)
		if err != nil || cis[0] != ci {
			t.Fatalf("round trip of %+v (v2=%v): %+v, %v", ci, v2, cis, err)
		}
	}
}

func TestChunkInfoValidateErrors(t *testing.T) {
	ok := ChunkInfo{CompressedSize: 10, UncompressedSize: 100, Compressed: true}
	mod := func(f func(*ChunkInfo)) ChunkInfo { c := ok; f(&c); return c }
	cases := []struct {
		ci   ChunkInfo
		v2   bool
		want string
	}{
		{mod(func(c *ChunkInfo) { c.UncompressedSize = 0 }), false, "uncompressed size 0 not in [1, 16777216]"},
		{mod(func(c *ChunkInfo) { c.UncompressedSize = MaxChunkSize + 1 }), true, "uncompressed size 16777217"},
		{mod(func(c *ChunkInfo) { c.UncompressedOffset = 4097 }), false, "uncompressed offset 0x1001 not 4 KiB aligned"},
		{mod(func(c *ChunkInfo) { c.UncompressedOffset = 1 << 44 }), true, "uncompressed offset 0x100000000000 exceeds"},
		{mod(func(c *ChunkInfo) { c.CompressedOffset = 1 << 40 }), false, "compressed offset 0x10000000000 exceeds 40 bits"},
		{mod(func(c *ChunkInfo) { c.CompressedSize = 0 }), false, "compressed size 0 not in [1, 16777216]"},
		{mod(func(c *ChunkInfo) { c.Compressed = false }), false, "v1 entry compressed=false with compressed size 10"},
		{mod(func(c *ChunkInfo) { c.CompressedSize = 100 }), false, "v1 entry compressed=true with compressed size 100"},
		{mod(func(c *ChunkInfo) { c.CompressedSize = 0 }), true, "compressed size 0 for a non-batch chunk"},
		{mod(func(c *ChunkInfo) { c.CompressedSize = 1 << 24 }), true, "compressed size 16777216 exceeds 16777215"},
		{mod(func(c *ChunkInfo) { c.Compressed = false }), true, "uncompressed chunk with compressed size 10 != uncompressed size 100"},
		{mod(func(c *ChunkInfo) { c.Flags = ChunkHasCRC32 }), true, "HAS_CRC32 flag with a zero crc32"},
		{mod(func(c *ChunkInfo) { c.Flags = 0x01 }), true, "carry COMPRESSED"},
		{mod(func(c *ChunkInfo) { c.Flags = 0x40 }), true, "unknown chunk flags 0x40"},
		{mod(func(c *ChunkInfo) { c.Flags = ChunkZran | ChunkBatch }), true, "both zran and batch"},
	}
	for _, c := range cases {
		err := c.ci.Validate(c.v2)
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrCorrupt) {
			t.Errorf("%+v v2=%v: error %v, want %q", c.ci, c.v2, err, c.want)
		}
	}
}

func TestDecodeChunkInfosErrors(t *testing.T) {
	if _, err := DecodeChunkInfos(make([]byte, 47), true, 2); err == nil ||
		err.Error() != "decode chunk infos: 2 entries need 48 bytes, have 47: corrupt blob data" {
		t.Errorf("short data: %v", err)
	}
	if _, err := DecodeChunkInfos(nil, false, MaxChunksPerBlob+1); err == nil || !strings.Contains(err.Error(), "count 16777217 exceeds") {
		t.Errorf("count: %v", err)
	}
	// A V2 entry with compressed size 0 and no batch flag.
	bad := AppendChunkInfo(nil, ChunkInfo{CompressedSize: 5, UncompressedSize: 5}, true)
	bad = AppendChunkInfo(bad, ChunkInfo{CompressedSize: 0, UncompressedSize: 5, Compressed: true}, true)
	if _, err := DecodeChunkInfos(bad, true, 2); err == nil ||
		err.Error() != "decode chunk info 1 at offset 24: compressed size 0 for a non-batch chunk: corrupt blob data" {
		t.Errorf("zero size: %v", err)
	}
	// Unknown V2 flags are kept, as upstream only warns.
	odd := AppendChunkInfo(nil, ChunkInfo{CompressedSize: 5, UncompressedSize: 5, Flags: 0x80}, true)
	cis, err := DecodeChunkInfos(odd, true, 1)
	if err != nil || cis[0].Flags != 0x80 {
		t.Errorf("unknown flags: %+v %v", cis, err)
	}
	if _, err := ParseChunkInfo(make([]byte, 10), false); err == nil || !strings.Contains(err.Error(), "10 bytes, need 16") {
		t.Errorf("ParseChunkInfo short: %v", err)
	}
}

func TestValidateChunkInfos(t *testing.T) {
	zc := []ZranContext{{OutLen: 1000}}
	bc := []BatchContext{{CompressedSize: 50, UncompressedSize: 100}}
	cases := []struct {
		ci   ChunkInfo
		lim  ChunkLimits
		want string
	}{
		{ChunkInfo{CompressedOffset: 90, CompressedSize: 20, UncompressedSize: 20}, ChunkLimits{CompressedSize: 100}, "compressed end 0x6e beyond chunk data size 0x64"},
		{ChunkInfo{CompressedSize: 20, UncompressedOffset: 4096, UncompressedSize: 20}, ChunkLimits{UncompressedSize: 4096}, "uncompressed end 0x1014 beyond"},
		{ChunkInfo{CompressedSize: 20, UncompressedSize: 20, Flags: ChunkZran}, ChunkLimits{}, "zran chunk in a blob without the zran feature"},
		{ChunkInfo{CompressedSize: 20, UncompressedSize: 20, Flags: ChunkZran, Data: 1 << 32}, ChunkLimits{Features: FeatureZran, ZranContexts: zc}, "zran index 1 out of range [0, 1)"},
		{ChunkInfo{CompressedSize: 20, UncompressedSize: 20, Flags: ChunkZran, Data: 990}, ChunkLimits{Features: FeatureZran, ZranContexts: zc}, "zran range 0x3de+0x14 outside context 0"},
		{ChunkInfo{UncompressedSize: 20, Flags: ChunkBatch}, ChunkLimits{}, "batch chunk in a blob without the batch feature"},
		{ChunkInfo{UncompressedSize: 20, Flags: ChunkBatch, Data: 90}, ChunkLimits{Features: FeatureBatch, BatchContexts: bc}, "batch range end 110 beyond batch 0 size 100"},
		{ChunkInfo{CompressedOffset: 60, UncompressedSize: 20, Flags: ChunkBatch}, ChunkLimits{Features: FeatureBatch, BatchContexts: bc, CompressedSize: 100}, "compressed end 0x6e beyond chunk data size 0x64"},
	}
	for _, c := range cases {
		err := ValidateChunkInfos([]ChunkInfo{c.ci}, c.lim)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "chunk info 0: ") {
			t.Errorf("%+v: error %v, want %q", c.ci, err, c.want)
		}
	}
	// Zran chunks and SEPARATE blobs are not bound by the data size.
	ok := []ChunkInfo{{CompressedOffset: 1 << 30, CompressedSize: 20, UncompressedSize: 20, Flags: ChunkZran, Data: 10}}
	if err := ValidateChunkInfos(ok, ChunkLimits{Features: FeatureZran, ZranContexts: zc, CompressedSize: 10}); err != nil {
		t.Error(err)
	}
}

func TestChunkInfoAccessors(t *testing.T) {
	ci := ChunkInfo{CompressedOffset: 10, CompressedSize: 5, UncompressedOffset: 4096, UncompressedSize: 10, Data: 7<<32 | 9, Flags: ChunkZran}
	if ci.CompressedEnd() != 15 || ci.UncompressedEnd() != 4106 || ci.AlignedUncompressedEnd() != 8192 ||
		ci.ContextIndex() != 7 || ci.ContextOffset() != 9 || ci.CRC32() != 9 || !ci.IsZran() || ci.IsBatch() || ci.IsEncrypted() || ci.HasCRC32() {
		t.Errorf("accessors of %+v", ci)
	}
}
