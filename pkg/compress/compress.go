package compress

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"

	"github.com/nydus-go/nydus/pkg/errdefs"
)

// Algorithm identifies a compression algorithm by its on-disk value.
type Algorithm uint32

// On-disk values of the compression algorithms (upstream compress::Algorithm).
const (
	// None stores data as is.
	None Algorithm = 0
	// Lz4Block is a raw LZ4 block with no size prefix; the decompressed
	// size must be known to the reader.
	Lz4Block Algorithm = 1
	// GZip is an RFC 1952 gzip stream; upstream uses it only for data of
	// OCI-ref (zran) and stargz conversions.
	GZip Algorithm = 2
	// Zstd is a Zstandard stream (upstream uses zstd::bulk at the default
	// level).
	Zstd Algorithm = 3
)

// MaxSize is the largest decompressed size Decompress accepts (2 GiB, the
// upstream limit for RAFS metadata, RAFS_MAX_METADATA_SIZE).
const MaxSize = 1 << 31

// ErrUnsupported is returned for an unknown algorithm or an operation an
// algorithm does not support. It matches errdefs.ErrUnsupported.
var ErrUnsupported = errdefs.New(errdefs.ErrUnsupported, "unsupported compression algorithm")

// ErrSizeMismatch is returned when decompressed data does not have the
// expected size.
var ErrSizeMismatch = errors.New("decompressed size mismatch")

// String returns the upstream name of a: "none", "lz4_block", "gzip" or
// "zstd", or "Algorithm(N)" for an unknown value.
func (a Algorithm) String() string {
	switch a {
	case None:
		return "none"
	case Lz4Block:
		return "lz4_block"
	case GZip:
		return "gzip"
	case Zstd:
		return "zstd"
	}
	return fmt.Sprintf("Algorithm(%d)", uint32(a))
}

// Valid reports whether a is one of the known algorithms.
func (a Algorithm) Valid() bool {
	return a <= Zstd
}

// ParseAlgorithm parses an upstream algorithm name ("none", "lz4_block",
// "gzip" or "zstd").
func ParseAlgorithm(s string) (Algorithm, error) {
	switch s {
	case "none":
		return None, nil
	case "lz4_block":
		return Lz4Block, nil
	case "gzip":
		return GZip, nil
	case "zstd":
		return Zstd, nil
	}
	return None, fmt.Errorf("parse compression algorithm %q: %w (want none, lz4_block, gzip or zstd)", s, ErrUnsupported)
}

// DefaultZstdLevel is the zstd level used unless another is asked for:
// libzstd's default, 3, as upstream uses.
const DefaultZstdLevel = 3

// zstdEncoders holds one encoder per speed class, shared by all
// goroutines: EncodeAll is safe for concurrent use. The frame checksum is
// off and empty input still yields a frame, as with libzstd's
// ZSTD_compress.
var zstdEncoders sync.Map // zstd.EncoderLevel -> func() (*zstd.Encoder, error)

func zstdEncoderFor(level int) (*zstd.Encoder, error) {
	if level <= 0 {
		level = DefaultZstdLevel
	}
	el := zstd.EncoderLevelFromZstd(level)
	f, _ := zstdEncoders.LoadOrStore(el, sync.OnceValues(func() (*zstd.Encoder, error) {
		return zstd.NewWriter(nil,
			zstd.WithEncoderLevel(el),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithEncoderCRC(false),
			zstd.WithZeroFrames(true),
		)
	}))
	return f.(func() (*zstd.Encoder, error))()
}

func zstdEncoder() (*zstd.Encoder, error) { return zstdEncoderFor(DefaultZstdLevel) }

// CompressLevel is Compress with a compression level. Only zstd has
// levels (1–22, mapped onto the encoder's four speed classes: 1–2 fastest,
// 3–5 default, 6–9 better, 10+ best); 0 means the default. Other
// algorithms ignore it.
func CompressLevel(algo Algorithm, level int, dst, src []byte) ([]byte, error) {
	if algo != Zstd || level == 0 || level == DefaultZstdLevel {
		return Compress(algo, dst, src)
	}
	enc, err := zstdEncoderFor(level)
	if err != nil {
		return nil, fmt.Errorf("compress zstd: create encoder: %w", err)
	}
	return enc.EncodeAll(src, dst[:0]), nil
}

// CompressIfSmallerLevel is CompressIfSmaller with a compression level
// (see CompressLevel).
func CompressIfSmallerLevel(algo Algorithm, level int, dst, src []byte) ([]byte, bool, error) {
	if len(src) == 0 || algo == None {
		return CompressIfSmaller(algo, dst, src)
	}
	out, err := CompressLevel(algo, level, dst, src)
	if err != nil {
		return nil, false, err
	}
	if len(out) >= len(src) {
		return src, false, nil
	}
	return out, true, nil
}

// zstdDecoder is shared by all goroutines: DecodeAll is safe for concurrent
// use. DecodeAll never writes past cap(dst), which bounds every allocation
// by the expected size.
var zstdDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
	return zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxMemory(MaxSize),
		zstd.WithDecoderMaxWindow(MaxSize),
	)
})

// lz4Compressors pools LZ4 block compressors, which are not safe for
// concurrent use. CompressorCCompat produces the same bytes as the C
// library's LZ4_compress_default that upstream calls.
var lz4Compressors = sync.Pool{New: func() any { return new(lz4.CompressorCCompat) }}

// gzipWriters pools gzip writers at the default level (upstream uses
// flate2's default level 6).
var gzipWriters = sync.Pool{New: func() any {
	w, _ := gzip.NewWriterLevel(io.Discard, gzip.DefaultCompression)
	return w
}}

// Compress compresses src with algo and returns the result appended to
// dst[:0]. The output is always produced, even if it is larger than src; use
// [CompressIfSmaller] for upstream's store-raw-if-not-smaller rule.
func Compress(algo Algorithm, dst, src []byte) ([]byte, error) {
	dst = dst[:0]
	switch algo {
	case None:
		return append(dst, src...), nil
	case Lz4Block:
		if len(src) > lz4MaxInput {
			return nil, fmt.Errorf("compress lz4_block: input of %d bytes exceeds %d", len(src), lz4MaxInput)
		}
		bound := lz4.CompressBlockBound(len(src))
		if cap(dst) < bound {
			dst = make([]byte, 0, bound)
		}
		c := lz4Compressors.Get().(*lz4.CompressorCCompat)
		n, err := c.CompressBlock(src, dst[:bound])
		lz4Compressors.Put(c)
		if err != nil {
			return nil, fmt.Errorf("compress lz4_block: %w", err)
		}
		if n == 0 && len(src) > 0 {
			return nil, errors.New("compress lz4_block: compressor produced no output")
		}
		return dst[:n], nil
	case GZip:
		buf := bytes.NewBuffer(dst)
		w := gzipWriters.Get().(*gzip.Writer)
		w.Reset(buf)
		_, err := w.Write(src)
		if err == nil {
			err = w.Close()
		}
		w.Reset(io.Discard)
		gzipWriters.Put(w)
		if err != nil {
			return nil, fmt.Errorf("compress gzip: %w", err)
		}
		return buf.Bytes(), nil
	case Zstd:
		enc, err := zstdEncoder()
		if err != nil {
			return nil, fmt.Errorf("compress zstd: create encoder: %w", err)
		}
		return enc.EncodeAll(src, dst), nil
	}
	return nil, fmt.Errorf("compress with %v: %w", algo, ErrUnsupported)
}

// lz4MaxInput is LZ4_MAX_INPUT_SIZE of the reference implementation.
const lz4MaxInput = 0x7E000000

// CompressIfSmaller implements upstream's compress::compress: it compresses
// src with algo and returns the compressed bytes (appended to dst[:0]) and
// true only if they are strictly smaller than src. Otherwise, and for empty
// input or None, it returns src itself (not a copy) and false, and the data
// must be stored uncompressed.
func CompressIfSmaller(algo Algorithm, dst, src []byte) ([]byte, bool, error) {
	if len(src) == 0 || algo == None {
		if !algo.Valid() {
			return nil, false, fmt.Errorf("compress with %v: %w", algo, ErrUnsupported)
		}
		return src, false, nil
	}
	out, err := Compress(algo, dst, src)
	if err != nil {
		return nil, false, err
	}
	if len(out) >= len(src) {
		return src, false, nil
	}
	return out, true, nil
}

// zstdStreamThreshold is the size above which Decompress decodes zstd
// through a stream, so that memory grows only as data is actually produced
// instead of being reserved up front for a size claimed by untrusted
// metadata. It is the largest chunk size (16 MiB), so chunks always take
// the faster DecodeAll path.
const zstdStreamThreshold = 16 << 20

// Decompress decompresses src, which must expand to exactly size bytes, and
// returns the result in dst's backing array if it is large enough (else in a
// new buffer). It never returns more or fewer than size bytes: any mismatch
// is an error wrapping [ErrSizeMismatch]. size must be in [0, MaxSize].
func Decompress(algo Algorithm, dst, src []byte, size int) ([]byte, error) {
	if size < 0 || size > MaxSize {
		return nil, fmt.Errorf("decompress %v: size %d out of range [0, %d]", algo, size, MaxSize)
	}
	switch algo {
	case None:
		if len(src) != size {
			return nil, fmt.Errorf("decompress none: input is %d bytes, want %d: %w", len(src), size, ErrSizeMismatch)
		}
		return append(dst[:0], src...), nil
	case Lz4Block:
		// An LZ4 sequence of n input bytes expands to at most about
		// 255*n bytes, so a tiny input cannot legitimately claim a huge
		// size; check before allocating.
		if uint64(size) > 255*uint64(len(src))+16 {
			return nil, fmt.Errorf("decompress lz4_block: %d input bytes cannot expand to %d: %w", len(src), size, ErrSizeMismatch)
		}
		out := sized(dst, size)
		n, err := lz4.UncompressBlock(src, out)
		if err != nil {
			return nil, fmt.Errorf("decompress lz4_block: %w", err)
		}
		if n != size {
			return nil, fmt.Errorf("decompress lz4_block: got %d bytes, want %d: %w", n, size, ErrSizeMismatch)
		}
		return out, nil
	case GZip:
		zr, err := gzip.NewReader(bytes.NewReader(src))
		if err != nil {
			return nil, fmt.Errorf("decompress gzip: %w", err)
		}
		return readExact(zr, dst, size, "gzip")
	case Zstd:
		if size > zstdStreamThreshold {
			zr, err := zstd.NewReader(bytes.NewReader(src),
				zstd.WithDecoderConcurrency(1),
				zstd.WithDecoderMaxMemory(MaxSize),
				zstd.WithDecoderMaxWindow(MaxSize))
			if err != nil {
				return nil, fmt.Errorf("decompress zstd: %w", err)
			}
			defer zr.Close()
			return readExact(zr, dst, size, "zstd")
		}
		var fh zstd.Header
		if err := fh.Decode(src); err == nil && fh.HasFCS && !fh.Skippable && fh.FrameContentSize > uint64(size) {
			return nil, fmt.Errorf("decompress zstd: frame declares %d bytes, want %d: %w", fh.FrameContentSize, size, ErrSizeMismatch)
		}
		dec, err := zstdDecoder()
		if err != nil {
			return nil, fmt.Errorf("decompress zstd: create decoder: %w", err)
		}
		buf := dst[:0]
		if cap(buf) < size {
			buf = make([]byte, 0, size)
		}
		out, err := dec.DecodeAll(src, buf[:0:size])
		if err != nil {
			if errors.Is(err, zstd.ErrDecoderSizeExceeded) {
				return nil, fmt.Errorf("decompress zstd: output exceeds %d bytes: %w", size, ErrSizeMismatch)
			}
			return nil, fmt.Errorf("decompress zstd: %w", err)
		}
		if len(out) != size {
			return nil, fmt.Errorf("decompress zstd: got %d bytes, want %d: %w", len(out), size, ErrSizeMismatch)
		}
		return out, nil
	}
	return nil, fmt.Errorf("decompress with %v: %w", algo, ErrUnsupported)
}

// sized returns dst resized to n bytes if it has the capacity, else a new
// slice of n bytes.
func sized(dst []byte, n int) []byte {
	if cap(dst) >= n {
		return dst[:n]
	}
	return make([]byte, n)
}

// readExact reads exactly size bytes from r and checks that r then ends.
// Memory grows with the data actually read, so a false size claim costs at
// most what the stream really produces (plus one read buffer).
func readExact(r io.Reader, dst []byte, size int, name string) ([]byte, error) {
	var out []byte
	if cap(dst) >= size {
		out = dst[:size]
		if _, err := io.ReadFull(r, out); err != nil {
			return nil, readErr(name, err, size)
		}
	} else {
		buf := bytes.NewBuffer(dst[:0])
		n, err := io.CopyN(buf, r, int64(size))
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("decompress %s: got %d bytes, want %d: %w", name, n, size, ErrSizeMismatch)
			}
			return nil, fmt.Errorf("decompress %s: %w", name, err)
		}
		out = buf.Bytes()
	}
	var one [1]byte
	n, err := io.ReadFull(r, one[:])
	if n > 0 {
		return nil, fmt.Errorf("decompress %s: output exceeds %d bytes: %w", name, size, ErrSizeMismatch)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decompress %s: %w", name, err)
	}
	return out, nil
}

func readErr(name string, err error, size int) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("decompress %s: stream ends before %d bytes: %w", name, size, ErrSizeMismatch)
	}
	return fmt.Errorf("decompress %s: %w", name, err)
}
