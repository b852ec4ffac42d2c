package zran

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

// markEvery is the granularity, in uncompressed bytes, at which a
// Reader records the input position reached inside a block: Pos's input
// offset is at most this much output past what is strictly needed.
const markEvery = 512

// mark records that n bytes of a block's output are decoded once the
// decoder has consumed bit bits of its member's deflate stream.
type mark struct {
	n   int
	bit int64
}

// hashReader hashes what is read through it.
type hashReader struct {
	r    io.Reader
	hash hash.Hash
}

func (h *hashReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.hash.Write(p[:n])
	return n, err
}

// inputReader reads the compressed file for a Reader a byte at a time:
// it counts what it reads and remembers the last bytes (a checkpoint
// whose block starts inside a byte needs that byte).
type inputReader struct {
	r    *bufio.Reader
	h    *hashReader
	n    int64
	last [32]byte // last[i%32] is the byte at offset i, for the last 32
}

func (c *inputReader) ReadByte() (byte, error) {
	b, err := c.r.ReadByte()
	if err == nil {
		c.last[c.n%32] = b
		c.n++
	}
	return b, err
}

// byteAt returns the byte at offset off, one of the last 32 read.
func (c *inputReader) byteAt(off int64) byte {
	if off < c.n-32 || off >= c.n {
		panic(fmt.Sprintf("zran: byte %d is not among the last read before %d", off, c.n))
	}
	return c.last[off%32]
}

// Reader inflates a gzip file (one or more members) as a stream, block
// by block, and tells at every point where inflating could restart: the
// block boundary at or before the current output offset ([Reader.Boundary])
// and the compressed bytes the output so far needs ([Reader.Pos]). It
// checks every member's CRC-32 and size, and hashes the compressed file
// ([Reader.Digest]).
type Reader struct {
	in        *inputReader
	br        *bitReader
	f         *inflater // the current member's decoder, nil between members
	member    int
	memberOut int64 // the uncompressed offset the current member starts at
	crc       hash.Hash32
	// onBlock, when set, is called after each block is decoded
	// (Generator: the block's back-references, to find the window
	// bytes its open contexts use).
	onBlock func()
	blk     []byte     // the current block's output
	off     int        // read cursor in blk
	start   Checkpoint // the current block's first bit
	marks   []mark     // positions inside the current block
	err     error
}

// NewReader returns a Reader of the gzip file r.
func NewReader(r io.Reader) *Reader {
	h := &hashReader{r: r, hash: sha256.New()}
	in := &inputReader{r: bufio.NewReaderSize(h, 1<<16), h: h}
	return &Reader{in: in, br: &bitReader{r: in}, crc: crc32.NewIEEE()}
}

// Read reads uncompressed data.
func (z *Reader) Read(p []byte) (int, error) {
	for z.off == len(z.blk) {
		if z.err != nil {
			return 0, z.err
		}
		if z.err = z.next(); z.err != nil && z.err != io.EOF {
			return 0, z.err
		}
	}
	n := copy(p, z.blk[z.off:])
	z.off += n
	return n, nil
}

// Offset returns the uncompressed offset of the next byte Read returns.
func (z *Reader) Offset() int64 { return z.start.Out + int64(z.off) }

// Pos returns the uncompressed offset of the next byte Read returns, and
// how many bytes of the compressed file decoding up to it needs: from a
// checkpoint at or before it, inflating the file's bytes up to in
// produces every byte before out (with the standard library's inflater,
// or zlib's).
func (z *Reader) Pos() (in, out int64) {
	out = z.Offset()
	bit := z.start.In*8 + int64(z.start.Bits)
	if z.off > 0 {
		i := 0
		for i < len(z.marks)-1 && z.marks[i].n < z.off {
			i++
		}
		bit = z.marks[i].bit
	}
	// The standard library's inflater reads a literal/length code only
	// once it holds as many bits as the end-of-block code has (at most
	// 15), so the last symbol may need up to two more bytes. Every
	// symbol is followed by at least an end-of-block code and the gzip
	// trailer, so those bytes exist.
	return (bit+7)/8 + 2, out
}

// Boundary returns the start of the block holding the next byte Read
// returns (or of the block that ends right before it): a checkpoint at
// or before Offset.
func (z *Reader) Boundary() Checkpoint { return z.start }

// Member returns the index of the gzip member the current block is in.
func (z *Reader) Member() int { return z.member }

// Size returns the size of the compressed file, once Read has returned
// io.EOF.
func (z *Reader) Size() int64 { return z.br.pos / 8 }

// Digest returns the sha256 of the compressed file, once Read has
// returned io.EOF.
func (z *Reader) Digest() [32]byte {
	var d [32]byte
	z.in.h.hash.Sum(d[:0])
	return d
}

// next decodes the next block, ending and starting members as needed;
// io.EOF after the last member.
func (z *Reader) next() error {
	z.start.Out += int64(len(z.blk))
	z.blk, z.off, z.marks = nil, 0, z.marks[:0]
	if z.f != nil && z.f.final {
		if err := z.endMember(); err != nil {
			return err
		}
	}
	if z.f == nil {
		if z.br.atEOF() {
			if z.br.err != io.EOF {
				return fmt.Errorf("gzip: read at offset %d: %w", z.br.pos/8, z.br.err)
			}
			if z.br.pos == 0 {
				return fmt.Errorf("gzip: empty input: %w", io.ErrUnexpectedEOF)
			}
			return io.EOF
		}
		if z.br.pos > 0 {
			z.member++
		}
		if err := skipHeader(z.br); err != nil {
			return fmt.Errorf("gzip member %d at offset %d: %w", z.member, z.br.pos/8, err)
		}
		z.f = newInflater(z.br)
		z.f.track = z.onBlock != nil
		z.memberOut = z.start.Out
		z.crc.Reset()
	}
	f := z.f
	bit := f.br.pos
	z.start = Checkpoint{In: bit / 8, Bits: uint8(bit % 8), Out: z.start.Out, Window: f.window()}
	if z.start.Bits != 0 {
		z.start.First = z.in.byteAt(z.start.In)
	}
	f.marks = z.marks
	if err := f.block(); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("gzip member %d: deflate stream truncated at offset %d: %w", z.member, z.br.pos/8, err)
		}
		return fmt.Errorf("gzip member %d: block at offset %d (bit %d): %w", z.member, bit/8, bit%8, err)
	}
	z.marks = append(f.marks, mark{len(f.outBuf), f.br.pos})
	z.blk = f.outBuf
	z.crc.Write(z.blk)
	if z.onBlock != nil {
		z.onBlock()
	}
	return nil
}

// blockRefs returns the current block's back-references that reach
// before its start, in uncompressed offsets of the file.
func (z *Reader) blockRefs() []backRef {
	if z.f == nil {
		return nil
	}
	out := make([]backRef, len(z.f.refs))
	for i, r := range z.f.refs {
		out[i] = backRef{p: z.memberOut + r.p, src: z.memberOut + r.src, n: r.n}
	}
	return out
}

// endMember reads the trailer of the member that just ended and checks
// it.
func (z *Reader) endMember() error {
	f := z.f
	f.br.align()
	var tr [8]byte
	if _, err := io.ReadFull(z.br, tr[:]); err != nil {
		return fmt.Errorf("gzip member %d: trailer: %w", z.member, io.ErrUnexpectedEOF)
	}
	if got := binary.LittleEndian.Uint32(tr[:4]); got != z.crc.Sum32() {
		return fmt.Errorf("gzip member %d: CRC-32 %08x, trailer says %08x: %w", z.member, z.crc.Sum32(), got, ErrCorrupt)
	}
	if got := binary.LittleEndian.Uint32(tr[4:]); got != uint32(f.out) {
		return fmt.Errorf("gzip member %d: %d bytes, trailer says %d (mod 2^32): %w", z.member, f.out, got, ErrCorrupt)
	}
	z.f = nil
	return nil
}
