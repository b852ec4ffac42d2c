package chunkdict

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"testing"

	"github.com/nydus-go/nydus/internal/treetest"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// image builds a layer and returns its bootstrap reader and blob size.
func image(t testing.TB, files []treetest.File, o builder.Options) (*rafs.Reader, int) {
	t.Helper()
	var blob bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(treetest.Tar(files)), &blob, o)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := rafs.Open(context.Background(), bytes.NewReader(res.Bootstrap), int64(len(res.Bootstrap)))
	if err != nil {
		t.Fatal(err)
	}
	return rd, blob.Len()
}

func files(seeds ...int64) []treetest.File {
	var out []treetest.File
	for _, s := range seeds {
		out = append(out, treetest.Reg(fmt.Sprintf("f%d.bin", s), 0o644, treetest.Random(s, 300<<10)))
	}
	return out
}

// TestDict: an image's dictionary round-trips through its bootstrap;
// merging sums the counts of shared chunks; Trim keeps the most
// referenced; Keep drops a blob's chunks; and a build against the
// dictionary's bootstrap (nydus-image --chunk-dict) stores no chunk the
// dictionary has.
func TestDict(t *testing.T) {
	ctx := context.Background()
	o := builder.Options{ChunkSize: 0x10000}
	a, _ := image(t, files(1, 2), o)
	b, _ := image(t, files(2, 3), o)
	da, err := FromImage(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	db, _ := FromImage(ctx, b)
	m, err := Merge(da, db)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Blobs) != 2 || len(m.Chunks) != len(da.Chunks)+len(db.Chunks)/2 {
		t.Fatalf("merged: %d blobs, %d chunks (a %d, b %d)", len(m.Blobs), len(m.Chunks), len(da.Chunks), len(db.Chunks))
	}
	twice := 0
	for _, c := range m.Chunks {
		if c.Refs == 2 {
			twice++
		}
	}
	if twice != len(db.Chunks)/2 {
		t.Fatalf("%d chunks referenced twice, want %d (f2's)", twice, len(db.Chunks)/2)
	}

	boot, err := m.Bootstrap()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Open(ctx, boot)
	if err != nil {
		t.Fatal(err)
	}
	key := func(d *Dict) []string {
		var out []string
		for _, c := range d.Chunks {
			out = append(out, fmt.Sprintf("%x %s %d %d %d", c.Digest, d.Blobs[c.BlobIndex].BlobID, c.Index, c.CompressedOffset, c.Refs))
		}
		slices.Sort(out)
		return out
	}
	if !slices.Equal(key(m), key(back)) || back.Digester != m.Digester || back.ChunkSize != m.ChunkSize {
		t.Fatal("the dictionary does not round-trip through its bootstrap")
	}

	// A build against the dictionary stores only what it lacks.
	rd, err := rafs.Open(ctx, bytes.NewReader(boot), int64(len(boot)))
	if err != nil {
		t.Fatal(err)
	}
	_, with := image(t, files(1, 3, 4), builder.Options{ChunkSize: 0x10000, ChunkDict: rd})
	_, alone := image(t, files(4), o)
	if with > alone+8<<10 {
		t.Fatalf("a build against the dictionary stored %d bytes; the new file alone takes %d", with, alone)
	}

	top := back
	top.Trim(len(db.Chunks) / 2)
	for _, c := range top.Chunks {
		if c.Refs != 2 {
			t.Fatalf("Trim kept a chunk referenced %d times over the twice referenced ones", c.Refs)
		}
	}
	back2, _ := Open(ctx, boot)
	gone := back2.Blobs[0].BlobID
	back2.Keep(func(id string) bool { return id != gone })
	for _, c := range back2.Chunks {
		if back2.Blobs[c.BlobIndex].BlobID == gone {
			t.Fatal("Keep left a chunk of a dropped blob")
		}
	}
	if len(back2.Blobs) != 1 {
		t.Fatalf("%d blobs after dropping one of two", len(back2.Blobs))
	}

	if _, err := Merge(da, &Dict{Digester: digester.Sha256, ChunkSize: da.ChunkSize}); err == nil {
		t.Fatal("dictionaries of different digesters merged")
	}
}

// TestOpenRejects: an image bootstrap is not a dictionary.
func TestOpenRejects(t *testing.T) {
	var blob bytes.Buffer
	res, err := builder.Create(context.Background(), bytes.NewReader(treetest.Tar(treetest.Sample())), io.Writer(&blob), builder.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), res.Bootstrap); err == nil {
		t.Fatal("an image bootstrap was read as a chunk dictionary")
	}
}

// FuzzOpen: no input makes Open panic or hang; what it accepts encodes
// again.
func FuzzOpen(f *testing.F) {
	a, _ := image(f, files(1), builder.Options{ChunkSize: 0x10000})
	d, _ := FromImage(context.Background(), a)
	boot, _ := d.Bootstrap()
	f.Add(boot)
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Open(context.Background(), b)
		if err != nil {
			return
		}
		if _, err := d.Bootstrap(); err != nil && len(d.Chunks) <= MaxChunks {
			t.Logf("accepted dictionary does not encode: %v", err)
		}
	})
}

// TestRefs: Split moves the chunks a dictionary has to a reference list,
// and AddRefs counts that list against the dictionary holding them;
// malformed lists are refused.
func TestRefs(t *testing.T) {
	ctx := context.Background()
	o := builder.Options{ChunkSize: 0x10000}
	a, _ := image(t, files(1, 2), o)
	b, _ := image(t, files(2, 3), o)
	da, _ := FromImage(ctx, a)
	db, _ := FromImage(ctx, b)
	have := map[digester.Digest]bool{}
	for _, c := range da.Chunks {
		have[c.Digest] = true
	}
	total := len(db.Chunks)
	refs := db.Split(func(d digester.Digest) bool { return have[d] })
	if len(db.Chunks) != total/2 || len(refs) != total/2*RefPrefixSize || len(db.Blobs) != 1 {
		t.Fatalf("split: %d chunks kept, %d reference bytes, %d blobs (of %d chunks)", len(db.Chunks), len(refs), len(db.Blobs), total)
	}
	if err := ValidateRefs(refs); err != nil {
		t.Fatal(err)
	}
	m, _ := Merge(da, db)
	n, err := m.AddRefs(refs)
	if err != nil || n != total/2 {
		t.Fatalf("AddRefs matched %d of %d: %v", n, total/2, err)
	}
	twice := 0
	for _, c := range m.Chunks {
		if c.Refs == 2 {
			twice++
		}
	}
	if twice != total/2 {
		t.Fatalf("%d chunks counted twice, want %d", twice, total/2)
	}
	for _, bad := range [][]byte{refs[:len(refs)-1], append(slices.Clone(refs[8:16]), refs[:8]...)} {
		if bytes.Compare(bad[:8], bad[len(bad)-8:]) <= 0 && len(bad)%8 == 0 {
			continue // happened to be sorted
		}
		if err := ValidateRefs(bad); err == nil {
			t.Fatalf("a malformed reference list (%d bytes) was accepted", len(bad))
		}
		if _, err := m.AddRefs(bad); err == nil {
			t.Fatal("AddRefs counted a malformed list")
		}
	}
}

// FuzzRefs: no input makes ValidateRefs or AddRefs panic; what they
// accept encodes back to itself.
func FuzzRefs(f *testing.F) {
	f.Add(EncodeRefs([]digester.Digest{{1}, {2}, {2}}))
	f.Add([]byte{1, 2, 3})
	d := &Dict{Chunks: []Chunk{{ChunkInfo: rafs.ChunkInfo{Digest: digester.Digest{2}}}}}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := ValidateRefs(b); err != nil {
			return
		}
		if _, err := d.AddRefs(b); err != nil {
			t.Fatalf("AddRefs refused what ValidateRefs accepted: %v", err)
		}
		var ds []digester.Digest
		for i := 0; i < len(b); i += RefPrefixSize {
			var dg digester.Digest
			copy(dg[:], b[i:i+RefPrefixSize])
			ds = append(ds, dg)
		}
		if !bytes.Equal(EncodeRefs(ds), b) {
			t.Fatal("an accepted list does not encode back to itself")
		}
	})
}
