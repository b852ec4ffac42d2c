package blob

import (
	"bytes"
	"os"
	"testing"

	"github.com/nydus-go/nydus/pkg/compress"
)

// fuzzSeeds returns the fixture blobs, small Writer-made blobs of each
// layout, and truncated copies of them.
func fuzzSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	for _, p := range []string{fxBE7D, fxTOC} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b, b[:len(b)-1], b[len(b)-1024:])
	}
	for i, o := range []WriterOptions{
		{Compressor: compress.Zstd, InlineMeta: true, TOC: true},
		{Compressor: compress.Lz4Block, ChunkInfoV2: true, InlineMeta: true},
		{Compressor: compress.None},
	} {
		b := buildBlob(f, int64(i), 3, o, o.TOC, fakeBootstrap(2048))
		seeds = append(seeds, b.blob)
	}
	return seeds
}

func FuzzReadTOC(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		toc, err := ReadTOC(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		if int(toc.Size()) > len(data) || len(toc.Entries)*TOCEntrySize+TarHeaderSize != int(toc.Size()) {
			t.Fatalf("toc size %d with %d entries in %d bytes", toc.Size(), len(toc.Entries), len(data))
		}
		_ = toc.Digest()
		for _, e := range toc.Entries {
			_, _ = e.Compressor()
		}
	})
}

func FuzzDecodeChunkInfos(f *testing.F) {
	for _, p := range []string{fxBE7D, fxTOC} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		r := openBytes(f, b)
		f.Add(r.Meta().CI, false, uint32(len(r.ChunkInfos())))
	}
	z, err := os.ReadFile(fxZran)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(z[:24*163], true, uint32(163))
	f.Add(z[:100], true, uint32(5))
	f.Fuzz(func(t *testing.T, data []byte, v2 bool, count uint32) {
		cis, err := DecodeChunkInfos(data, v2, count)
		if err != nil {
			return
		}
		if len(cis) != int(count) {
			t.Fatalf("%d entries for count %d", len(cis), count)
		}
		var enc []byte
		for _, ci := range cis {
			enc = AppendChunkInfo(enc, ci, v2)
		}
		again, err := DecodeChunkInfos(enc, v2, count)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		for i := range cis {
			if again[i] != cis[i] {
				t.Fatalf("entry %d: %+v became %+v", i, cis[i], again[i])
			}
		}
	})
}

func FuzzOpen(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Open(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		for _, ci := range r.ChunkInfos() {
			_, _ = r.ReadChunk(ci, compress.Zstd, nil)
			_, _ = r.ReadChunk(ci, compress.Lz4Block, nil)
		}
		// Claims up to 2 GiB are legal; keep the fuzzer's memory small.
		if r.boot.usize <= 16<<20 {
			_, _ = r.Bootstrap()
		}
		if mf, err := r.MetaFile(); err == nil {
			if _, err := ParseMetaFile(mf); err != nil {
				t.Fatalf("meta file of an opened blob does not parse: %v", err)
			}
		}
	})
}

func FuzzParseMetaFile(f *testing.F) {
	z, err := os.ReadFile(fxZran)
	if err != nil {
		f.Fatal(err)
	}
	// A shortened zran file keeps the fuzzer fast.
	h, _ := UnmarshalMetaHeader(z[len(z)-MetaHeaderSize:])
	h.CIEntries, h.ContextOffset, h.ContextCount = 2, 48, 1
	h.ContextSize = 40 + 32768
	h.CIUncompressedSize = 48 + h.ContextSize
	h.CICompressedSize = h.CIUncompressedSize
	ci := append(bytes.Clone(z[:48]), z[3912:3912+40]...)
	ci = append(ci, make([]byte, 32768)...)
	if mf, err := MarshalMetaFile(h, ci); err == nil {
		f.Add(mf)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseMetaFile(data)
		if err != nil {
			return
		}
		for i := range m.ZranContexts {
			_ = m.ZranDict(i)
		}
		again, err := MarshalMetaFile(m.Header, m.CI)
		if err != nil || !bytes.Equal(again[:len(m.CI)], data[:len(m.CI)]) {
			t.Fatalf("re-marshal: %v", err)
		}
	})
}
