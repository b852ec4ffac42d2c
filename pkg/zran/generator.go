package zran

import (
	"errors"
	"fmt"
)

// DefaultSpan is the default Generator span: a context grows to half of
// it in compressed bytes. Upstream Nydus uses 1 MiB (its chunk size);
// ours is a quarter of that, since a lazy read fetches its context's
// input from the start, and our sparse windows make a context cheap
// (make demo --oci-ref, curl --version: 11.4 MiB fetched and 1.6 MiB
// added to the registry at 256 KiB, 14.9 and 1.3 MiB at 1 MiB).
const DefaultSpan = 256 << 10

// maxContexts is upstream's limit on the contexts of one file.
const maxContexts = 1 << 24

// Generator makes the contexts of a gzip file's chunks while the file is
// read through its Reader (a tar walker reads the layer, and marks each
// file chunk with BeginChunk and EndChunk), with upstream Nydus's rules:
// a chunk joins the current context unless that context already holds
// half a span of compressed bytes, or would exceed two spans
// uncompressed, or the chunk starts in another gzip member, or the gap
// since the context's last chunk is large. A context starts at the block
// boundary before its first chunk.
type Generator struct {
	r        *Reader
	span     int64
	ctxs     []Context
	cur      int   // current context, -1 before the first
	blockBit int64 // bit offset of the boundary the current context starts at
	member   int   // gzip member of the current context
	chunk    struct {
		in, out int64 // where the open chunk starts
		open    bool
	}
	// used[i] marks the bytes of context i's window that its output's
	// back-references read (nil: the whole window is kept); open lists
	// the contexts whose first 32 KiB of output are not all decoded yet,
	// the only output that can read the window.
	used [][]bool
	open []int
}

// ChunkRef locates a chunk: its context, its offset and size in the
// context's output, and the compressed range its data was decoded from
// (In, InLen: informative, as upstream records them).
type ChunkRef struct {
	Context      int
	Offset, Size uint32
	In           int64
	InLen        uint32
}

// NewGenerator returns a Generator reading r; span <= 0 means
// DefaultSpan.
func NewGenerator(r *Reader, span int64) *Generator {
	if span <= 0 {
		span = DefaultSpan
	}
	g := &Generator{r: r, span: span, cur: -1}
	r.onBlock = g.block
	return g
}

// Contexts returns the contexts made so far. Each window keeps only the
// bytes the context's output reads (back-references within its first
// 32 KiB of output); the others are zero, so a window costs little once
// compressed, and inflating is unchanged.
func (g *Generator) Contexts() []Context {
	out := make([]Context, len(g.ctxs))
	for i, c := range g.ctxs {
		if u := g.used[i]; u != nil {
			w := make([]byte, len(c.Window))
			for j, ok := range u {
				if ok {
					w[j] = c.Window[j]
				}
			}
			c.Window = w
		}
		out[i] = c
	}
	return out
}

// mark records the window bytes of context i that refs read.
func (g *Generator) mark(i int, refs []backRef) {
	c, u := g.ctxs[i], g.used[i]
	base := c.OutOffset - int64(len(u))
	for _, r := range refs {
		if r.p < c.OutOffset || r.p >= c.OutOffset+windowSize {
			continue
		}
		for b := max(r.src, base); b < min(r.src+int64(r.n), c.OutOffset); b++ {
			u[b-base] = true
		}
	}
}

// block marks the window bytes the decoded block reads for each open
// context, and closes the contexts it takes 32 KiB past their start.
func (g *Generator) block() {
	refs := g.r.blockRefs()
	end := g.r.start.Out + int64(len(g.r.blk))
	open := g.open[:0]
	for _, i := range g.open {
		g.mark(i, refs)
		if end < g.ctxs[i].OutOffset+windowSize {
			open = append(open, i)
		}
	}
	g.open = open
}

func bitOf(c Checkpoint) int64 { return c.In*8 + int64(c.Bits) }

// BeginChunk marks the start of a chunk of size uncompressed bytes at
// the Reader's current offset and returns its context's index.
func (g *Generator) BeginChunk(size int64) (int, error) {
	if g.chunk.open {
		return 0, errors.New("zran: BeginChunk with a chunk open")
	}
	in, out := g.r.Pos()
	b := g.r.Boundary()
	newCtx := g.cur < 0
	if !newCtx {
		c := g.ctxs[g.cur]
		comp, uncomp := in-c.InOffset, out-c.OutOffset
		first := bitOf(b) == g.blockBit
		switch {
		case g.r.Member() != g.member:
			newCtx = true
		case !first && (comp >= g.span/2 || uncomp+size >= 2*g.span):
			newCtx = true // the context is big enough
		case !first && comp > 2*int64(c.InLen) && int64(c.InLen) > g.span/2:
			newCtx = true // a large gap after the context's last chunk
		}
	}
	if newCtx {
		if len(g.ctxs) >= maxContexts {
			return 0, fmt.Errorf("zran: more than %d contexts", maxContexts)
		}
		g.ctxs = append(g.ctxs, ContextAt(b))
		g.cur, g.blockBit, g.member = len(g.ctxs)-1, bitOf(b), g.r.Member()
		var used []bool
		if len(b.Window) > 0 {
			// The current block starts the context: its references
			// are the first the window serves.
			used = make([]bool, len(b.Window))
			g.used = append(g.used, used)
			g.mark(g.cur, g.r.blockRefs())
			g.open = append(g.open, g.cur)
		} else {
			g.used = append(g.used, nil)
		}
	}
	g.chunk.in, g.chunk.out, g.chunk.open = in, out, true
	return g.cur, nil
}

// EndChunk marks the end of the open chunk at the Reader's current
// offset and returns where the chunk is.
func (g *Generator) EndChunk() (ChunkRef, error) {
	if !g.chunk.open {
		return ChunkRef{}, errors.New("zran: EndChunk with no chunk open")
	}
	g.chunk.open = false
	in, out := g.r.Pos()
	c := &g.ctxs[g.cur]
	inLen, outLen := in-c.InOffset, out-c.OutOffset
	if inLen > 1<<31 || outLen > 1<<31 {
		return ChunkRef{}, fmt.Errorf("zran: context %d grew to %d compressed, %d uncompressed bytes", g.cur, inLen, outLen)
	}
	c.InLen, c.OutLen = uint32(inLen), uint32(outLen)
	// A small chunk may come from input the previous one already
	// needed; its range still ends where its data is decodable, and
	// holds at least one byte (a chunk-info entry's size is not 0).
	start := min(g.chunk.in, in-1)
	return ChunkRef{Context: g.cur, Offset: uint32(g.chunk.out - c.OutOffset), Size: uint32(out - g.chunk.out),
		In: start, InLen: uint32(in - start)}, nil
}
