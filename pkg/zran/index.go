package zran

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"fmt"
	"io"
)

// Checkpoint is a place where inflating can start in the middle of a
// gzip file: the first bit of a deflate block, with the output that
// block's back-references may reach.
type Checkpoint struct {
	// In is the offset in the compressed file of the byte holding the
	// block's first bit, and Bits how many low bits of that byte belong
	// to the previous block (0–7).
	In   int64
	Bits uint8
	// Out is the uncompressed offset the block starts at.
	Out int64
	// Window is the uncompressed data before Out (at most 32 KiB, less
	// at the start of a stream or of a gzip member, where it is empty).
	Window []byte
	// First is the byte at In when Bits is not 0: its high 8-Bits bits
	// are the block's first.
	First byte
}

// Index lists the checkpoints of a gzip file, in order, and its
// uncompressed size. Each gzip member starts with a checkpoint.
type Index struct {
	Size        int64
	Checkpoints []Checkpoint
}

// Build reads a gzip file (one or more members) and returns its index,
// with a checkpoint at the start of each member and at the first block
// boundary at least span uncompressed bytes after the previous checkpoint
// (span <= 0: every block). Every member's CRC-32 and size are checked.
func Build(r io.Reader, span int64) (*Index, error) {
	z := NewReader(r)
	idx := &Index{}
	last, member := int64(0), -1
	for {
		err := z.next()
		if err == io.EOF {
			idx.Size = z.start.Out
			return idx, nil
		}
		if err != nil {
			return nil, err
		}
		if z.member != member || z.start.Out-last >= span {
			idx.Checkpoints = append(idx.Checkpoints, z.start)
			last, member = z.start.Out, z.member
		}
	}
}

// skipHeader reads a gzip member header (RFC 1952).
func skipHeader(cr interface {
	io.Reader
	io.ByteReader
}) error {
	var h [10]byte
	if _, err := io.ReadFull(cr, h[:]); err != nil {
		return fmt.Errorf("header: %w", io.ErrUnexpectedEOF)
	}
	if h[0] != 0x1f || h[1] != 0x8b || h[2] != 8 {
		return fmt.Errorf("not a gzip header (% x): %w", h[:3], ErrCorrupt)
	}
	flg := h[3]
	if flg&0xe0 != 0 {
		return fmt.Errorf("reserved header flags %#x: %w", flg, ErrCorrupt)
	}
	if flg&4 != 0 { // FEXTRA
		var l [2]byte
		if _, err := io.ReadFull(cr, l[:]); err != nil {
			return io.ErrUnexpectedEOF
		}
		if _, err := io.CopyN(io.Discard, cr, int64(binary.LittleEndian.Uint16(l[:]))); err != nil {
			return io.ErrUnexpectedEOF
		}
	}
	for _, bit := range []byte{8, 16} { // FNAME, FCOMMENT: zero-terminated
		if flg&bit != 0 {
			for {
				c, err := cr.ReadByte()
				if err != nil {
					return io.ErrUnexpectedEOF
				}
				if c == 0 {
					break
				}
			}
		}
	}
	if flg&2 != 0 { // FHCRC
		if _, err := io.CopyN(io.Discard, cr, 2); err != nil {
			return io.ErrUnexpectedEOF
		}
	}
	return nil
}

// ReadAt reads len(p) uncompressed bytes at off from the gzip file ra
// that idx indexes, inflating from the nearest checkpoint before off
// with the standard library's inflater: the checkpoint's window is
// preset as its dictionary, and empty blocks before the checkpoint's
// bits keep the file's byte alignment (see prefix). Bytes past the end give io.EOF, as io.ReaderAt
// wants.
func (idx *Index) ReadAt(ra io.ReaderAt, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("zran: negative offset %d", off)
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= idx.Size {
			return n, io.EOF
		}
		i := idx.find(pos)
		cp := idx.Checkpoints[i]
		end := idx.Size
		if i+1 < len(idx.Checkpoints) {
			end = idx.Checkpoints[i+1].Out
		}
		var first [1]byte
		if _, err := ra.ReadAt(first[:], cp.In); err != nil {
			return n, fmt.Errorf("zran: read checkpoint %d at offset %d: %w", i, cp.In, err)
		}
		src := io.MultiReader(bytes.NewReader(prefix(cp.Bits, first[0])), io.NewSectionReader(ra, cp.In+1, 1<<62))
		fr := flate.NewReaderDict(bufio.NewReader(src), cp.Window)
		if _, err := io.CopyN(io.Discard, fr, pos-cp.Out); err != nil {
			fr.Close()
			return n, fmt.Errorf("zran: inflate from checkpoint %d (offset %d): %w", i, cp.Out, err)
		}
		want := min(int64(len(p)-n), end-pos)
		got, err := io.ReadFull(fr, p[n:n+int(want)])
		fr.Close()
		n += got
		if err != nil {
			return n, fmt.Errorf("zran: inflate from checkpoint %d (offset %d): %w", i, cp.Out, err)
		}
	}
	return n, nil
}

// find returns the index of the last checkpoint at or before pos.
func (idx *Index) find(pos int64) int {
	lo, hi := 0, len(idx.Checkpoints)
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if idx.Checkpoints[mid].Out <= pos {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}
