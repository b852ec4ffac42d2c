// Package chunkdict is the chunk dictionary that nydusify keeps in a
// registry so that every conversion into a dedup scope reuses the chunks
// of the images converted before it, with no dictionary built by hand.
//
// Entry points: [Open] reads a dictionary from its bootstrap, [FromImage]
// makes one from an image's bootstrap, [Merge] sums dictionaries and
// [Dict.Bootstrap] writes one; [EncodeRefs] and [Dict.AddRefs] make and
// count reference lists.
//
// A [Dict] lists chunks by content (digest), each with the blob that
// holds it (a full RAFS blob table entry, so an image built against the
// dictionary can reference that blob) and a reference count: how many
// converted images use the chunk. Dictionaries merge by summing counts
// ([Merge]) and are bounded by keeping the most referenced chunks
// ([Dict.Trim]).
//
// On the wire a dictionary is a RAFS v6 bootstrap ([Dict.Bootstrap],
// [Open]), so it is read by the same hardened parser as every image, and
// nydus-image and nydusify take it as a --chunk-dict bootstrap: the root
// directory holds one regular file per chunk, named "REFS.SEQ" (decimal
// reference count, a dot, a decimal sequence number), whose single chunk
// is the dictionary entry. docs/format.md describes the registry
// artifact around it.
//
// A conversion whose chunks are mostly in the dictionary already records
// only the new ones in full; for the others it adds a reference list
// ([EncodeRefs]): the first [RefPrefixSize] bytes of each digest, which
// [Dict.AddRefs] counts against a dictionary holding the full entries.
package chunkdict

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"

	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// MaxChunks bounds a dictionary read by Open.
const MaxChunks = 1 << 22

// DefaultMaxChunks is the size nydusify trims a dictionary to: about 20
// MiB of bootstrap.
const DefaultMaxChunks = 1 << 18

// Chunk is one dictionary entry: a chunk (its BlobIndex indexes
// Dict.Blobs; FileOffset is unused) and how many images reference it.
type Chunk struct {
	rafs.ChunkInfo
	Refs uint32
}

// Dict is a chunk dictionary.
type Dict struct {
	// Digester and ChunkSize are the images' chunk digest algorithm and
	// chunk size: only images built with the same reuse its chunks.
	Digester  digester.Algorithm
	ChunkSize uint32
	// Blobs holds the blob of each chunk; Blobs[i].Index is i.
	Blobs []rafs.BlobInfo
	// Chunks are the entries, one per digest.
	Chunks []Chunk
}

// FromImage returns the dictionary of one image: each chunk its
// bootstrap references (one location per digest), with one reference.
func FromImage(ctx context.Context, rd *rafs.Reader) (*Dict, error) {
	table, err := rd.ChunkTable(ctx)
	if err != nil {
		return nil, fmt.Errorf("chunk dictionary: %w", err)
	}
	b := newCollector(rd)
	for _, c := range table {
		if c.Flags&rafs.ChunkEncrypted != 0 || int(c.BlobIndex) >= len(rd.Blobs) {
			continue
		}
		b.add(c, 1)
	}
	return b.d, nil
}

// collector collects the chunks of one bootstrap into a dictionary: one
// per digest, their blobs renumbered in order of first use.
type collector struct {
	rd   *rafs.Reader
	d    *Dict
	used map[uint32]uint32 // bootstrap blob index → dictionary blob index
	seen map[digester.Digest]bool
}

func newCollector(rd *rafs.Reader) *collector {
	return &collector{rd: rd, d: &Dict{Digester: rd.Ext.Flags.Digester(), ChunkSize: rd.ChunkSize()},
		used: map[uint32]uint32{}, seen: map[digester.Digest]bool{}}
}

// add adds chunk c (of a blob of the bootstrap's table) unless its
// digest is in already.
func (b *collector) add(c rafs.ChunkInfo, refs uint32) {
	if b.seen[c.Digest] {
		return
	}
	b.seen[c.Digest] = true
	idx, ok := b.used[c.BlobIndex]
	if !ok {
		bi := b.rd.Blobs[c.BlobIndex]
		idx = uint32(len(b.d.Blobs))
		bi.Index = idx
		b.d.Blobs = append(b.d.Blobs, bi)
		b.used[c.BlobIndex] = idx
	}
	c.BlobIndex, c.FileOffset = idx, 0
	b.d.Chunks = append(b.d.Chunks, Chunk{ChunkInfo: c, Refs: refs})
}

// Merge combines dictionaries of one digester and chunk size: a digest's
// counts are summed, and its location is the first dictionary's that
// has it. Nil dictionaries are skipped.
func Merge(ds ...*Dict) (*Dict, error) {
	var out *Dict
	blobIdx := map[string]uint32{}
	at := map[digester.Digest]int{}
	for _, d := range ds {
		if d == nil {
			continue
		}
		if out == nil {
			out = &Dict{Digester: d.Digester, ChunkSize: d.ChunkSize}
		} else if d.Digester != out.Digester || d.ChunkSize != out.ChunkSize {
			return nil, fmt.Errorf("chunk dictionaries differ: digester %s and chunk size %#x against %s and %#x", d.Digester, d.ChunkSize, out.Digester, out.ChunkSize)
		}
		for _, c := range d.Chunks {
			if i, ok := at[c.Digest]; ok {
				out.Chunks[i].Refs = satAdd(out.Chunks[i].Refs, c.Refs)
				continue
			}
			bi := d.Blobs[c.BlobIndex]
			idx, ok := blobIdx[bi.BlobID]
			if !ok {
				idx = uint32(len(out.Blobs))
				bi.Index = idx
				out.Blobs = append(out.Blobs, bi)
				blobIdx[bi.BlobID] = idx
			}
			c.BlobIndex = idx
			at[c.Digest] = len(out.Chunks)
			out.Chunks = append(out.Chunks, c)
		}
	}
	return out, nil
}

func satAdd(a, b uint32) uint32 {
	if a+b < a {
		return ^uint32(0)
	}
	return a + b
}

// Trim keeps the max most referenced chunks (ties broken by digest) and
// the blobs they use.
func (d *Dict) Trim(max int) {
	if len(d.Chunks) <= max {
		return
	}
	slices.SortFunc(d.Chunks, func(a, b Chunk) int {
		if c := cmp.Compare(b.Refs, a.Refs); c != 0 {
			return c
		}
		return bytes.Compare(a.Digest[:], b.Digest[:])
	})
	d.Chunks = d.Chunks[:max]
	d.compact()
}

// Keep drops the chunks of the blobs keep refuses (blobs gone from the
// registry, say).
func (d *Dict) Keep(keep func(blobID string) bool) {
	ok := make([]bool, len(d.Blobs))
	for i, b := range d.Blobs {
		ok[i] = keep(b.BlobID)
	}
	d.Chunks = slices.DeleteFunc(d.Chunks, func(c Chunk) bool { return !ok[c.BlobIndex] })
	d.compact()
}

// compact drops unused blobs and renumbers the rest.
func (d *Dict) compact() {
	used := make([]bool, len(d.Blobs))
	for _, c := range d.Chunks {
		used[c.BlobIndex] = true
	}
	remap := make([]uint32, len(d.Blobs))
	var blobs []rafs.BlobInfo
	for i, b := range d.Blobs {
		if used[i] {
			remap[i] = uint32(len(blobs))
			b.Index = remap[i]
			blobs = append(blobs, b)
		}
	}
	for i := range d.Chunks {
		d.Chunks[i].BlobIndex = remap[d.Chunks[i].BlobIndex]
	}
	d.Blobs = blobs
}

// Bootstrap encodes the dictionary as a RAFS v6 bootstrap: one file per
// chunk, named "REFS.SEQ", in digest order.
func (d *Dict) Bootstrap() ([]byte, error) {
	if len(d.Chunks) > MaxChunks {
		return nil, fmt.Errorf("chunk dictionary: %d chunks exceed %d", len(d.Chunks), MaxChunks)
	}
	chunks := slices.Clone(d.Chunks)
	slices.SortFunc(chunks, func(a, b Chunk) int { return bytes.Compare(a.Digest[:], b.Digest[:]) })
	root := &rafs.Node{Inode: &rafs.Inode{Mode: 0o40755}}
	for i, c := range chunks {
		ci := c.ChunkInfo
		ci.FileOffset = 0
		root.Children = append(root.Children, &rafs.Node{
			Name:  fmt.Sprintf("%d.%d", c.Refs, i),
			Inode: &rafs.Inode{Mode: 0o100444, Size: uint64(ci.UncompressedSize), Chunks: []rafs.ChunkInfo{ci}},
		})
	}
	slices.SortFunc(root.Children, func(a, b *rafs.Node) int { return strings.Compare(a.Name, b.Name) })
	return rafs.Marshal(root, rafs.WriterOptions{ChunkSize: d.ChunkSize, Blobs: d.Blobs,
		Flags: rafs.FlagsFor(compress.Zstd, d.Digester) | rafs.FlagExplicitUIDGID})
}

// Open decodes a dictionary from its bootstrap.
func Open(ctx context.Context, boot []byte) (*Dict, error) {
	rd, err := rafs.Open(ctx, bytes.NewReader(boot), int64(len(boot)))
	if err != nil {
		return nil, fmt.Errorf("chunk dictionary: %w", err)
	}
	root, err := rd.Load(ctx, rafs.LoadOptions{})
	if err != nil {
		return nil, fmt.Errorf("chunk dictionary: %w", err)
	}
	if len(root.Children) > MaxChunks {
		return nil, fmt.Errorf("chunk dictionary: %d entries exceed %d", len(root.Children), MaxChunks)
	}
	b := newCollector(rd)
	for _, n := range root.Children {
		refs, _, ok := strings.Cut(n.Name, ".")
		r, err := strconv.ParseUint(refs, 10, 32)
		if !ok || err != nil || !n.Inode.IsRegular() || len(n.Inode.Chunks) != 1 {
			return nil, fmt.Errorf("chunk dictionary: entry %q is not a one-chunk file named REFS.SEQ", n.Name)
		}
		c := n.Inode.Chunks[0]
		if int(c.BlobIndex) >= len(rd.Blobs) {
			return nil, fmt.Errorf("chunk dictionary: entry %q refers to blob %d of %d", n.Name, c.BlobIndex, len(rd.Blobs))
		}
		b.add(c, uint32(r))
	}
	return b.d, nil
}

// RefPrefixSize is the length of the digest prefixes in a reference
// list. Two chunks of one dictionary sharing a prefix (a chance of about
// n²/2⁶⁵ for n chunks) only make a reference count the wrong chunk.
const RefPrefixSize = 8

// EncodeRefs encodes a reference list: one reference to each digest, as
// its first RefPrefixSize bytes, in ascending order, duplicates kept.
func EncodeRefs(ds []digester.Digest) []byte {
	ps := make([]uint64, len(ds))
	for i, d := range ds {
		ps[i] = binary.BigEndian.Uint64(d[:RefPrefixSize])
	}
	slices.Sort(ps)
	out := make([]byte, 0, len(ps)*RefPrefixSize)
	for _, p := range ps {
		out = binary.BigEndian.AppendUint64(out, p)
	}
	return out
}

// ValidateRefs checks an encoded reference list: whole prefixes, in
// ascending order, at most MaxChunks of them.
func ValidateRefs(b []byte) error {
	if len(b)%RefPrefixSize != 0 {
		return fmt.Errorf("chunk dictionary references: %d bytes, not a multiple of %d", len(b), RefPrefixSize)
	}
	if n := len(b) / RefPrefixSize; n > MaxChunks {
		return fmt.Errorf("chunk dictionary references: %d entries exceed %d", n, MaxChunks)
	}
	var prev uint64
	for i := 0; i < len(b); i += RefPrefixSize {
		p := binary.BigEndian.Uint64(b[i:])
		if p < prev {
			return fmt.Errorf("chunk dictionary references: entry %d (offset %d) is out of order", i/RefPrefixSize, i)
		}
		prev = p
	}
	return nil
}

// AddRefs adds the references of an encoded reference list (checked
// with ValidateRefs) to the chunks whose digests they start; it returns
// how many references matched a chunk. References to chunks the
// dictionary lacks are ignored.
func (d *Dict) AddRefs(refs []byte) (int, error) {
	if err := ValidateRefs(refs); err != nil {
		return 0, err
	}
	at := make(map[uint64]int, len(d.Chunks))
	for i, c := range d.Chunks {
		at[binary.BigEndian.Uint64(c.Digest[:RefPrefixSize])] = i
	}
	n := 0
	for i := 0; i < len(refs); i += RefPrefixSize {
		if j, ok := at[binary.BigEndian.Uint64(refs[i:])]; ok {
			d.Chunks[j].Refs = satAdd(d.Chunks[j].Refs, 1)
			n++
		}
	}
	return n, nil
}

// Split divides the dictionary by have: the chunks have reports a
// dictionary already holds go to a reference list (EncodeRefs), once per
// reference they have; the others stay, with their blobs.
func (d *Dict) Split(have func(digester.Digest) bool) (refs []byte) {
	var known []digester.Digest
	d.Chunks = slices.DeleteFunc(d.Chunks, func(c Chunk) bool {
		if have(c.Digest) {
			for range min(c.Refs, MaxChunks) {
				known = append(known, c.Digest)
			}
			return true
		}
		return false
	})
	d.compact()
	if len(known) == 0 {
		return nil
	}
	return EncodeRefs(known)
}
