package rafs

import (
	"bytes"
	"context"
	"encoding/binary"
	"testing"
)

// TestChunkIndex: the index finds every entry ChunkTable decodes, by its
// blob and CI index, whether the table is in key order or not; of two
// entries with one key, the later; none for a key the table lacks.
func TestChunkIndex(t *testing.T) {
	ctx := context.Background()
	orig := fixture(t, "nydus/bootstrap/rafs-v6-2.2.boot")
	rd := openBytes(t, orig)
	off := int(rd.Ext.ChunkTableOffset)
	check := func(name string, boot []byte, want map[uint64]ChunkInfo) {
		t.Helper()
		rd := openBytes(t, boot)
		x, err := rd.ChunkIndex(ctx)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if x.Len() != 2 {
			t.Fatalf("%s: %d entries", name, x.Len())
		}
		for k, c := range want {
			got, ok := x.Lookup(uint32(k>>32), uint32(k))
			if !ok || got != c {
				t.Errorf("%s: key %#x: %+v %v, want %+v", name, k, got, ok, c)
			}
		}
		if _, ok := x.Lookup(0, 99); ok {
			t.Errorf("%s: found a chunk the table lacks", name)
		}
	}
	table, err := rd.ChunkTable(ctx)
	if err != nil || len(table) != 2 {
		t.Fatalf("table %v %v", table, err)
	}
	byKey := func(cs ...ChunkInfo) map[uint64]ChunkInfo {
		m := map[uint64]ChunkInfo{}
		for _, c := range cs {
			m[chunkKey(c.BlobIndex, c.Index)] = c
		}
		return m
	}
	check("in order", orig, byKey(table...))

	swapped := bytes.Clone(orig)
	copy(swapped[off:], orig[off+ChunkInfoSize:off+2*ChunkInfoSize])
	copy(swapped[off+ChunkInfoSize:], orig[off:off+ChunkInfoSize])
	check("out of order", swapped, byKey(table...))

	dup := bytes.Clone(orig)
	binary.LittleEndian.PutUint32(dup[off+ChunkInfoSize+72:], table[0].Index)
	later := table[1]
	later.Index = table[0].Index
	check("duplicate key", dup, map[uint64]ChunkInfo{chunkKey(later.BlobIndex, later.Index): later})

	bad := bytes.Clone(orig)
	binary.LittleEndian.PutUint32(bad[off+32:], 7)
	if _, err := openBytes(t, bad).ChunkIndex(ctx); err == nil {
		t.Error("an entry naming a blob the table lacks was accepted")
	}
}
