package zran

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
)

// Context is where inflating restarts to read some chunks of a gzip
// file, in upstream Nydus's terms (its ZranInflateContext): the chunks'
// data is the output of inflating InLen compressed bytes from InOffset,
// after priming the decoder with the CtxBits high bits of CtxByte and
// presetting Window as its history; the output starts at OutOffset of
// the uncompressed file and is OutLen bytes long.
type Context struct {
	// InOffset is the offset in the compressed file of the first whole
	// byte to inflate.
	InOffset int64
	// CtxBits (0–7) high bits of CtxByte, the byte before InOffset, are
	// the first bits of the block.
	CtxByte, CtxBits uint8
	// OutOffset is the uncompressed offset of the first output byte.
	OutOffset int64
	// InLen and OutLen are the compressed bytes to inflate and the
	// output they give.
	InLen, OutLen uint32
	// Window is the history the block's back-references may reach (at
	// most 32 KiB; empty at the start of a gzip member).
	Window []byte
}

// ContextAt returns the context of a checkpoint (its InLen and OutLen
// are 0).
func ContextAt(c Checkpoint) Context {
	x := Context{InOffset: c.In, OutOffset: c.Out, Window: c.Window}
	if c.Bits != 0 {
		x.InOffset, x.CtxByte, x.CtxBits = c.In+1, c.First, 8-c.Bits
	}
	return x
}

// ErrTruncated is wrapped by Inflate's error when the compressed bytes
// end before the context's output does.
var ErrTruncated = errors.New("compressed data ends early")

// Inflate returns the first n bytes of a context's output (n <= OutLen):
// in holds the compressed bytes from InOffset (at least as many as
// those n bytes need, at most InLen), dict is the context's window. A
// gzip member that ends inside the context is followed into the next
// one, as upstream does. It uses the standard library's inflater; the
// bits before InOffset are fed to it after empty blocks that keep the
// file's byte alignment, which stored blocks rely on.
func Inflate(x Context, dict, in []byte, n int) ([]byte, error) {
	out, err := InflatePrefix(x, dict, in, n)
	if err == nil && len(out) < n {
		return nil, fmt.Errorf("zran: %d of %d bytes inflated from %d compressed bytes: %w", len(out), n, len(in), ErrTruncated)
	}
	return out, err
}

// InflatePrefix is Inflate for an input that may end early: it returns
// the output decoded before the input ends (up to n bytes), and an error
// only for input that does not decode.
func InflatePrefix(x Context, dict, in []byte, n int) ([]byte, error) {
	if len(dict) > windowSize {
		return nil, fmt.Errorf("zran: dictionary of %d bytes, more than %d: %w", len(dict), windowSize, ErrCorrupt)
	}
	if x.CtxBits > 7 {
		return nil, fmt.Errorf("zran: %d context bits: %w", x.CtxBits, ErrCorrupt)
	}
	src := in
	if x.CtxBits != 0 {
		p := prefix(8-x.CtxBits, x.CtxByte)
		src = append(p[:len(p):len(p)], in...)
	}
	br := bytes.NewReader(src)
	out := make([]byte, n)
	got := 0
	for member := 0; got < n; member++ {
		if member > 0 {
			// The previous member ended: skip its trailer and the next
			// header, and go on with no history.
			if _, err := br.Seek(8, io.SeekCurrent); err != nil || br.Len() == 0 {
				return out[:got], nil
			}
			if err := skipHeader(br); err != nil {
				if errors.Is(err, io.ErrUnexpectedEOF) {
					return out[:got], nil
				}
				return nil, fmt.Errorf("zran: gzip member after %d of %d bytes: %w", got, n, err)
			}
			dict = nil
		}
		fr := flate.NewReaderDict(br, dict)
		var err error
		for got < n && err == nil {
			var m int
			m, err = fr.Read(out[got:])
			got += m
		}
		fr.Close()
		switch {
		case got == n, err == nil, err == io.EOF:
			// Done, or the member's deflate stream ended: go on with
			// the next member.
		case errors.Is(err, io.ErrUnexpectedEOF):
			return out[:got], nil
		default:
			return nil, fmt.Errorf("zran: inflate at offset %d: %w: %w", x.InOffset, ErrCorrupt, err)
		}
	}
	return out, nil
}
