package zran

// The standard library's inflater cannot start at a bit offset, and a
// stored block realigns to the byte boundaries of the stream it reads:
// starting it on the bits of a checkpoint shifted to bit 0 would break
// every stored block after a checkpoint whose first bit is not the
// first of a byte. So the reader is given, before the checkpoint's
// bits, a prefix of empty non-final blocks exactly Bits (mod 8) bits
// long: the checkpoint's block then starts at the same bit of a byte as
// in the file, and every byte after the checkpoint's first is the
// file's own. A fixed-Huffman empty block is 10 bits (2 mod 8); the
// dynamic empty block below is 97 bits (1 mod 8); together they make
// every residue.

// bitWriter packs bits LSB first, as deflate does.
type bitWriter struct {
	out   []byte
	nbits uint
}

func (w *bitWriter) bits(v uint32, n uint) {
	for i := uint(0); i < n; i++ {
		if w.nbits%8 == 0 {
			w.out = append(w.out, 0)
		}
		w.out[len(w.out)-1] |= byte(v>>i&1) << (w.nbits % 8)
		w.nbits++
	}
}

// code writes a Huffman code of n bits, most significant bit first.
func (w *bitWriter) code(c uint32, n uint) {
	for i := n; i > 0; i-- {
		w.bits(c>>(i-1)&1, 1)
	}
}

// fixedEmpty writes a non-final fixed-Huffman block holding only its
// end-of-block code: 10 bits.
func (w *bitWriter) fixedEmpty() {
	w.bits(0, 1) // BFINAL
	w.bits(1, 2) // BTYPE 01
	w.code(0, 7) // end of block: 256 is 0000000
}

// dynamicEmpty writes a non-final dynamic block whose literal/length code
// has only the end-of-block symbol and whose distance code has one
// symbol, both one bit long (single-code codings, which inflaters
// accept): 97 bits.
func (w *bitWriter) dynamicEmpty() {
	w.bits(0, 1)  // BFINAL
	w.bits(2, 2)  // BTYPE 10
	w.bits(0, 5)  // HLIT: 257 codes
	w.bits(0, 5)  // HDIST: 1 code
	w.bits(14, 4) // HCLEN: 18 code-length codes
	// Code-length code lengths in clOrder (16 17 18 0 8 7 9 6 10 5 11 4
	// 12 3 13 2 14 1): 17 and 1 get 2 bits, 18 gets 1 bit.
	for _, l := range []uint32{0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2} {
		w.bits(l, 3)
	}
	// Canonical code-length codes: 18 = 0, 1 = 10, 17 = 11.
	w.code(0, 1)
	w.bits(127, 7) // 138 zeros
	w.code(0, 1)
	w.bits(97, 7) // 108 zeros
	w.code(3, 2)
	w.bits(7, 3) // 10 zeros: literals 0–255 have no code
	w.code(2, 2) // literal 256: length 1
	w.code(2, 2) // distance 0: length 1
	w.code(0, 1) // end of block
}

// prefix returns the bytes to feed an inflater before the bits of a
// checkpoint whose block starts at bit bits of byte first: empty blocks
// exactly bits (mod 8) long, their last byte completed with the high
// bits of first. The caller feeds the file's bytes after first next.
func prefix(bits uint8, first byte) []byte {
	if bits == 0 {
		return []byte{first}
	}
	var w bitWriter
	k := int(bits / 2)
	if bits%2 == 1 {
		w.dynamicEmpty()
		k = int(bits-1) / 2
	}
	for range k {
		w.fixedEmpty()
	}
	if w.nbits%8 != uint(bits) {
		panic("zran: prefix length")
	}
	w.out[len(w.out)-1] |= first &^ (1<<bits - 1)
	return w.out
}
