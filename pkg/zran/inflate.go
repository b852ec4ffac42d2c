package zran

import (
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// ErrCorrupt is wrapped by errors about a deflate stream that does not
// decode.
var ErrCorrupt = errors.New("corrupt deflate stream")

// bitReader reads a deflate stream LSB first, counting the bits it has
// consumed. It reads ahead of what it consumes (up to 8 bytes), so the
// gzip framing between deflate streams is read through it too
// (ReadByte, Read, atEOF).
type bitReader struct {
	r     io.ByteReader
	bits  uint64 // buffered bits, LSB first
	nbits uint
	pos   int64 // bits consumed from the start
	err   error // the error that stopped reading ahead
}

// fill reads ahead as many whole bytes as fit.
func (b *bitReader) fill() {
	for b.nbits <= 56 && b.err == nil {
		c, err := b.r.ReadByte()
		if err != nil {
			b.err = err
			return
		}
		b.bits |= uint64(c) << b.nbits
		b.nbits += 8
	}
}

func (b *bitReader) need(n uint) error {
	if b.nbits < n {
		b.fill()
		if b.nbits < n {
			if b.err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			return b.err
		}
	}
	return nil
}

func (b *bitReader) take(n uint) (uint32, error) {
	if n == 0 {
		return 0, nil
	}
	if err := b.need(n); err != nil {
		return 0, err
	}
	v := uint32(b.bits & (1<<n - 1))
	b.bits >>= n
	b.nbits -= n
	b.pos += int64(n)
	return v, nil
}

// align drops the bits up to the next byte boundary.
func (b *bitReader) align() {
	if drop := uint(-b.pos & 7); drop != 0 {
		b.take(drop) // buffered: the byte they are in was read
	}
}

// ReadByte reads a whole byte; the reader must be aligned.
func (b *bitReader) ReadByte() (byte, error) {
	v, err := b.take(8)
	if err == io.ErrUnexpectedEOF && b.nbits == 0 {
		err = io.EOF
	}
	return byte(v), err
}

// Read reads whole bytes; the reader must be aligned.
func (b *bitReader) Read(p []byte) (int, error) {
	for i := range p {
		c, err := b.ReadByte()
		if err != nil {
			return i, err
		}
		p[i] = c
	}
	return len(p), nil
}

// atEOF reports whether no input is left.
func (b *bitReader) atEOF() bool {
	b.fill()
	return b.nbits == 0
}

// tableBits is how many bits of a code the lookup table resolves; a
// longer code is decoded bit by bit.
const tableBits = 10

// huffman is a canonical Huffman decoding table.
type huffman struct {
	counts  [16]uint16 // codes of each length
	symbols []uint16   // symbols ordered by code
	// table maps the next tableBits input bits to symbol<<4 | length
	// for codes of at most tableBits bits; 0 where a longer code starts.
	table [1 << tableBits]uint16
}

func newHuffman(lengths []uint8) (*huffman, error) {
	h := &huffman{symbols: make([]uint16, len(lengths))}
	for _, l := range lengths {
		h.counts[l]++
	}
	h.counts[0] = 0
	left := 1
	for l := 1; l < 16; l++ {
		left <<= 1
		left -= int(h.counts[l])
		if left < 0 {
			return nil, fmt.Errorf("over-subscribed code lengths: %w", ErrCorrupt)
		}
	}
	var offs [16]uint16
	for l := 1; l < 15; l++ {
		offs[l+1] = offs[l] + h.counts[l]
	}
	for s, l := range lengths {
		if l != 0 {
			h.symbols[offs[l]] = uint16(s)
			offs[l]++
		}
	}
	// Canonical codes: within a length, consecutive codes in symbol
	// order; the stream holds them MSB first, the table is indexed LSB
	// first.
	code, index := 0, 0
	for l := 1; l <= tableBits; l++ {
		for range int(h.counts[l]) {
			rev := int(bits.Reverse16(uint16(code)) >> (16 - l))
			for k := rev; k < 1<<tableBits; k += 1 << l {
				h.table[k] = h.symbols[index]<<4 | uint16(l)
			}
			code++
			index++
		}
		code <<= 1
	}
	return h, nil
}

// decode reads one symbol: through the lookup table when the code is
// short enough, else bit by bit (codes are stored MSB first).
func (b *bitReader) decode(h *huffman) (uint16, error) {
	if b.nbits < tableBits {
		b.fill()
	}
	// Bits past the end of the input read as 0: an entry is only used
	// when its code lies within the bits there are.
	if e := h.table[b.bits&(1<<tableBits-1)]; e != 0 && uint(e&15) <= b.nbits {
		n := uint(e & 15)
		b.bits >>= n
		b.nbits -= n
		b.pos += int64(n)
		return e >> 4, nil
	}
	return b.slowDecode(h)
}

// slowDecode reads one symbol bit by bit.
func (b *bitReader) slowDecode(h *huffman) (uint16, error) {
	code, first, index := 0, 0, 0
	for l := 1; l < 16; l++ {
		v, err := b.take(1)
		if err != nil {
			return 0, err
		}
		code |= int(v)
		count := int(h.counts[l])
		if code-count < first {
			return h.symbols[index+(code-first)], nil
		}
		index += count
		first += count
		first <<= 1
		code <<= 1
	}
	return 0, fmt.Errorf("invalid Huffman code: %w", ErrCorrupt)
}

var (
	lenBase  = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lenExtra = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	dstBase  = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	dstExtra = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
	clOrder  = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}
)

var fixedLit, fixedDist = func() (*huffman, *huffman) {
	var l [288]uint8
	for i := range l {
		switch {
		case i < 144:
			l[i] = 8
		case i < 256:
			l[i] = 9
		case i < 280:
			l[i] = 7
		default:
			l[i] = 8
		}
	}
	lit, _ := newHuffman(l[:])
	var d [30]uint8
	for i := range d {
		d[i] = 5
	}
	dist, _ := newHuffman(d[:])
	return lit, dist
}()

// windowSize is deflate's history: a back-reference reaches at most 32 KiB.
const windowSize = 1 << 15

// inflater decodes a raw deflate stream block by block, keeping the last
// 32 KiB of output (the window a checkpoint needs).
type inflater struct {
	br     *bitReader
	win    []byte // ring of the last windowSize bytes of output
	out    int64  // bytes of output so far
	final  bool   // the last block was decoded
	outBuf []byte // output of the current block, handed to emit
	marks  []mark // where each markEvery bytes of outBuf were reached
	next   int    // len(outBuf) at which the next mark is due
	// refs lists the current block's back-references that reach before
	// the block's start, while track is set.
	refs  []backRef
	track bool
}

// backRef is a back-reference: the output at p copies n bytes from
// src (offsets in the member's output).
type backRef struct {
	p, src int64
	n      int
}

// mark notes the input position once another markEvery bytes of the
// block's output are decoded.
func (f *inflater) mark() {
	if len(f.outBuf) >= f.next {
		f.marks = append(f.marks, mark{len(f.outBuf), f.br.pos})
		f.next = (len(f.outBuf)/markEvery + 1) * markEvery
	}
}

func newInflater(br *bitReader) *inflater {
	return &inflater{br: br, win: make([]byte, windowSize)}
}

func (f *inflater) put(c byte) {
	f.win[f.out&(windowSize-1)] = c
	f.out++
	f.outBuf = append(f.outBuf, c)
}

// window returns the last min(out, 32 KiB) bytes of output, oldest first.
func (f *inflater) window() []byte {
	n := min(f.out, windowSize)
	w := make([]byte, 0, n)
	if f.out > windowSize {
		w = append(w, f.win[f.out&(windowSize-1):]...)
	}
	return append(w, f.win[:f.out&(windowSize-1)]...)
}

// block decodes one block; its output is in f.outBuf.
func (f *inflater) block() error {
	f.outBuf = f.outBuf[:0]
	f.marks, f.next = f.marks[:0], markEvery
	f.refs = f.refs[:0]
	br := f.br
	final, err := br.take(1)
	if err != nil {
		return err
	}
	typ, err := br.take(2)
	if err != nil {
		return err
	}
	f.final = final == 1
	switch typ {
	case 0:
		br.align()
		v, err := br.take(32)
		if err != nil {
			return err
		}
		n, nn := uint16(v), uint16(v>>16)
		if n != ^nn {
			return fmt.Errorf("stored block length %d does not match its complement: %w", n, ErrCorrupt)
		}
		for range int(n) {
			c, err := br.take(8)
			if err != nil {
				return err
			}
			f.put(byte(c))
			f.mark()
		}
		return nil
	case 1:
		return f.codes(fixedLit, fixedDist)
	case 2:
		lit, dist, err := f.dynamic()
		if err != nil {
			return err
		}
		return f.codes(lit, dist)
	}
	return fmt.Errorf("reserved block type 3: %w", ErrCorrupt)
}

func (f *inflater) dynamic() (*huffman, *huffman, error) {
	br := f.br
	v, err := br.take(14)
	if err != nil {
		return nil, nil, err
	}
	nlen, ndist, ncode := int(v&31)+257, int(v>>5&31)+1, int(v>>10)+4
	if nlen > 286 || ndist > 30 {
		return nil, nil, fmt.Errorf("%d literal/length and %d distance codes: %w", nlen, ndist, ErrCorrupt)
	}
	var cl [19]uint8
	for i := range ncode {
		l, err := br.take(3)
		if err != nil {
			return nil, nil, err
		}
		cl[clOrder[i]] = uint8(l)
	}
	clh, err := newHuffman(cl[:])
	if err != nil {
		return nil, nil, err
	}
	lengths := make([]uint8, nlen+ndist)
	for i := 0; i < len(lengths); {
		sym, err := br.decode(clh)
		if err != nil {
			return nil, nil, err
		}
		if sym < 16 {
			lengths[i] = uint8(sym)
			i++
			continue
		}
		var rep uint32
		var val uint8
		switch sym {
		case 16:
			if i == 0 {
				return nil, nil, fmt.Errorf("repeat with no previous length: %w", ErrCorrupt)
			}
			val = lengths[i-1]
			rep, err = br.take(2)
			rep += 3
		case 17:
			rep, err = br.take(3)
			rep += 3
		default:
			rep, err = br.take(7)
			rep += 11
		}
		if err != nil {
			return nil, nil, err
		}
		if i+int(rep) > len(lengths) {
			return nil, nil, fmt.Errorf("code lengths overflow: %w", ErrCorrupt)
		}
		for range rep {
			lengths[i] = val
			i++
		}
	}
	if lengths[256] == 0 {
		return nil, nil, fmt.Errorf("no end-of-block code: %w", ErrCorrupt)
	}
	lit, err := newHuffman(lengths[:nlen])
	if err != nil {
		return nil, nil, err
	}
	dist, err := newHuffman(lengths[nlen:])
	if err != nil {
		return nil, nil, err
	}
	return lit, dist, nil
}

func (f *inflater) codes(lit, dist *huffman) error {
	br := f.br
	for {
		sym, err := br.decode(lit)
		if err != nil {
			return err
		}
		switch {
		case sym < 256:
			f.put(byte(sym))
			f.mark()
		case sym == 256:
			return nil
		default:
			sym -= 257
			if sym >= 29 {
				return fmt.Errorf("invalid length symbol: %w", ErrCorrupt)
			}
			e, err := br.take(uint(lenExtra[sym]))
			if err != nil {
				return err
			}
			n := int(lenBase[sym]) + int(e)
			ds, err := br.decode(dist)
			if err != nil {
				return err
			}
			if ds >= 30 {
				return fmt.Errorf("invalid distance symbol: %w", ErrCorrupt)
			}
			de, err := br.take(uint(dstExtra[ds]))
			if err != nil {
				return err
			}
			d := int64(dstBase[ds]) + int64(de)
			if d > f.out {
				return fmt.Errorf("distance %d before the start of the output: %w", d, ErrCorrupt)
			}
			if f.track && f.out-d < f.out-int64(len(f.outBuf)) {
				f.refs = append(f.refs, backRef{p: f.out, src: f.out - d, n: n})
			}
			for range n {
				f.put(f.win[(f.out-d)&(windowSize-1)])
			}
			f.mark()
		}
	}
}
