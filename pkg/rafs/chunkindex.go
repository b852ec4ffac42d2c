package rafs

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
)

// ChunkIndex finds the entries of a bootstrap's chunk table by blob and
// chunk-info index (a ChunkAddr's fields), reading each from the
// bootstrap when it is asked for. It keeps 8 bytes per chunk (12 when
// the table is not in key order), where decoded entries would take 80
// and more: a daemon serving many large images keeps only this.
type ChunkIndex struct {
	rd   *Reader
	keys []uint64 // blob index << 32 | CI index, ascending
	pos  []uint32 // the entry of keys[i]; nil when it is i
}

func chunkKey(blobIndex, ciIndex uint32) uint64 {
	return uint64(blobIndex)<<32 | uint64(ciIndex)
}

// ChunkIndex reads the trailing chunk table once and indexes it. Like
// ChunkTable, it fails on an entry naming a blob the blob table lacks.
// When a key appears twice, the later entry is the one found.
func (rd *Reader) ChunkIndex(ctx context.Context) (*ChunkIndex, error) {
	x := &ChunkIndex{rd: rd}
	n := int(rd.Ext.ChunkTableSize / ChunkInfoSize)
	if n == 0 {
		return x, nil
	}
	x.keys = make([]uint64, n)
	sorted := true
	buf := make([]byte, 1024*ChunkInfoSize)
	for i := 0; i < n; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		m := min(n-i, 1024)
		b := buf[:m*ChunkInfoSize]
		if err := rd.readAt(b, rd.Ext.ChunkTableOffset+uint64(i)*ChunkInfoSize, "chunk table"); err != nil {
			return nil, err
		}
		for j := 0; j < m; j++ {
			e := b[j*ChunkInfoSize:]
			blob := binary.LittleEndian.Uint32(e[32:])
			if int(blob) >= len(rd.Blobs) {
				return nil, fmt.Errorf("chunk table entry %d refers to blob %d, but the blob table has %d entries", i+j, blob, len(rd.Blobs))
			}
			x.keys[i+j] = chunkKey(blob, binary.LittleEndian.Uint32(e[72:]))
			if i+j > 0 && x.keys[i+j] <= x.keys[i+j-1] {
				sorted = false
			}
		}
		i += m
	}
	if !sorted {
		x.pos = make([]uint32, n)
		for i := range x.pos {
			x.pos[i] = uint32(i)
		}
		// Stable: of equal keys, the later entry stays last.
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(x.keys[a], x.keys[b]) })
		keys := make([]uint64, n)
		for i, j := range idx {
			keys[i], x.pos[i] = x.keys[j], uint32(j)
		}
		x.keys = keys
	}
	return x, nil
}

// Len returns the number of entries indexed.
func (x *ChunkIndex) Len() int { return len(x.keys) }

// Lookup returns the chunk-table entry of chunk ciIndex of blob
// blobIndex; ok is false when the table has none, or it can no longer be
// read.
func (x *ChunkIndex) Lookup(blobIndex, ciIndex uint32) (ChunkInfo, bool) {
	k := chunkKey(blobIndex, ciIndex)
	// The last entry with key k.
	i := sort.Search(len(x.keys), func(i int) bool { return x.keys[i] > k }) - 1
	if i < 0 || x.keys[i] != k {
		return ChunkInfo{}, false
	}
	p := uint32(i)
	if x.pos != nil {
		p = x.pos[i]
	}
	var b [ChunkInfoSize]byte
	if err := x.rd.readAt(b[:], x.rd.Ext.ChunkTableOffset+uint64(p)*ChunkInfoSize, "chunk table entry"); err != nil {
		return ChunkInfo{}, false
	}
	return unmarshalChunkInfo(b[:]), true
}
