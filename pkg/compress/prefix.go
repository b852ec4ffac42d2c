package compress

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// prefixDecoders pool the stream decoders of DecompressPrefix.
var (
	gzipReaders  sync.Pool // *gzip.Reader
	zstdStreamer sync.Pool // *zstd.Decoder
)

// DecompressPrefix returns the first size bytes that src decompresses to,
// where src is the start of a gzip member or of a zstd frame that may go
// on beyond what the caller wants (and beyond src): an eStargz or
// zstd:chunked layer stores a file chunk at the start of a stream that
// continues with the tar headers of the following entries. Nothing after
// the first size bytes is read or checked, so the caller must verify the
// result (its digest). A stream that ends, or an src that is cut, before
// size bytes fails with an error wrapping [ErrSizeMismatch] or the
// decoder's. Only GZip and Zstd are accepted. size must be in [0,
// MaxSize]; memory grows with the data actually produced.
func DecompressPrefix(algo Algorithm, dst, src []byte, size int) ([]byte, error) {
	if size < 0 || size > MaxSize {
		return nil, fmt.Errorf("decompress %v prefix: size %d out of range [0, %d]", algo, size, MaxSize)
	}
	var r io.Reader
	switch algo {
	case GZip:
		zr, _ := gzipReaders.Get().(*gzip.Reader)
		var err error
		if zr == nil {
			zr, err = gzip.NewReader(bytes.NewReader(src))
		} else {
			err = zr.Reset(bytes.NewReader(src))
		}
		if err != nil {
			return nil, fmt.Errorf("decompress gzip prefix: %w", err)
		}
		defer gzipReaders.Put(zr)
		// One member only: the chunk is at the start of its own member.
		zr.Multistream(false)
		r = zr
	case Zstd:
		zr, _ := zstdStreamer.Get().(*zstd.Decoder)
		var err error
		if zr == nil {
			zr, err = zstd.NewReader(bytes.NewReader(src),
				zstd.WithDecoderConcurrency(1),
				zstd.WithDecoderLowmem(true),
				zstd.WithDecoderMaxMemory(MaxSize),
				zstd.WithDecoderMaxWindow(MaxSize))
		} else {
			err = zr.Reset(bytes.NewReader(src))
		}
		if err != nil {
			return nil, fmt.Errorf("decompress zstd prefix: %w", err)
		}
		defer zstdStreamer.Put(zr)
		r = zr
	default:
		return nil, fmt.Errorf("decompress %v prefix: %w", algo, ErrUnsupported)
	}
	out := dst[:0]
	if cap(out) >= size {
		out = out[:size]
		if _, err := io.ReadFull(r, out); err != nil {
			return nil, prefixErr(algo, err, size)
		}
		return out, nil
	}
	buf := bytes.NewBuffer(out)
	if n, err := io.CopyN(buf, r, int64(size)); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("decompress %v prefix: the stream ends after %d bytes, want %d: %w", algo, n, size, ErrSizeMismatch)
		}
		return nil, prefixErr(algo, err, size)
	}
	return buf.Bytes(), nil
}

func prefixErr(algo Algorithm, err error, size int) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("decompress %v prefix: the stream ends before %d bytes: %w", algo, size, ErrSizeMismatch)
	}
	return fmt.Errorf("decompress %v prefix: %w", algo, err)
}
