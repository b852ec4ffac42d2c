package compress

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Stream compressions a layer may use, told apart by their magic numbers.
var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// Sniff reports the stream compression of data from its first bytes:
// GZip, Zstd, or None (anything else, such as a plain tar). Four bytes
// are enough.
func Sniff(head []byte) Algorithm {
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		return GZip
	case bytes.HasPrefix(head, zstdMagic):
		return Zstd
	}
	return None
}

// NewStreamReader returns the uncompressed stream of r, a gzip or zstd
// stream or uncompressed data, told apart by Sniff. close releases the
// decoder; it does not close r.
func NewStreamReader(r io.Reader) (rd io.Reader, algo Algorithm, close func(), err error) {
	br := bufio.NewReaderSize(r, 1<<20)
	head, _ := br.Peek(len(zstdMagic))
	switch algo = Sniff(head); algo {
	case GZip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, algo, nil, fmt.Errorf("gzip: %w", err)
		}
		return zr, algo, func() { zr.Close() }, nil
	case Zstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, algo, nil, fmt.Errorf("zstd: %w", err)
		}
		return zr, algo, zr.Close, nil
	}
	return br, None, func() {}, nil
}
