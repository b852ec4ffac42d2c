package stargz

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/errdefs"
)

// Kind is the format of a TOC-indexed layer.
type Kind uint8

// Layer formats with a TOC.
const (
	// EStargz is a gzip layer of one gzip member per file chunk, with its
	// TOC (stargz.index.json in a tar, gzip-compressed) and a 51-byte
	// footer (47 bytes in legacy stargz) at its end.
	EStargz Kind = 1
	// ZstdChunked is a zstd layer of one zstd frame per file chunk, with
	// its TOC (zstd-compressed JSON in a skippable frame) and a 40-byte
	// footer in a skippable frame at its end (the layout of
	// stargz-snapshotter's estargz/zstdchunked package).
	ZstdChunked Kind = 2
)

// String returns "eStargz" or "zstd:chunked".
func (k Kind) String() string {
	switch k {
	case EStargz:
		return "eStargz"
	case ZstdChunked:
		return "zstd:chunked"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Compressor returns the compression of the kind's chunks: the
// compressor its blob table entry records.
func (k Kind) Compressor() compress.Algorithm {
	if k == ZstdChunked {
		return compress.Zstd
	}
	return compress.GZip
}

// KindOf returns the kind whose chunks a blob compressor denotes.
func KindOf(c compress.Algorithm) (Kind, bool) {
	switch c {
	case compress.GZip:
		return EStargz, true
	case compress.Zstd:
		return ZstdChunked, true
	}
	return 0, false
}

// Footer and TOC format constants.
const (
	// TOCTarName is the name of the TOC file in an eStargz TOC member.
	TOCTarName = "stargz.index.json"
	// EStargzFooterSize is the size of an eStargz footer: an empty gzip
	// member whose extra field holds "%016xSTARGZ" (the TOC offset) in a
	// subfield 'S','G'.
	EStargzFooterSize = 51
	// LegacyFooterSize is the size of a legacy stargz footer: the same
	// without the subfield header.
	LegacyFooterSize = 47
	// ZstdChunkedFooterSize is the size of a zstd:chunked footer (the
	// content of the last skippable frame): u64 TOC offset, u64 TOC
	// compressed size, u64 TOC uncompressed size, u64 manifest type (1),
	// 8-byte magic "GnUlInUx", little-endian.
	ZstdChunkedFooterSize = 40
	// MaxTOCCompressed bounds the stored size of a TOC that is read.
	MaxTOCCompressed = 64 << 20
	// MaxTOCSize bounds the size of the TOC JSON.
	MaxTOCSize = 256 << 20
	// MaxEntries bounds the number of TOC entries.
	MaxEntries = 1 << 24
)

var zstdChunkedMagic = []byte("GnUlInUx")

// ErrNoTOC is returned for a layer with no eStargz or zstd:chunked TOC:
// a plain gzip or plain zstd layer, or not a layer at all. It matches
// errdefs.ErrUnsupported.
var ErrNoTOC = errdefs.New(errdefs.ErrUnsupported, "layer has no eStargz or zstd:chunked TOC")

// ErrCorrupt is wrapped by errors for a malformed footer or TOC. It
// matches errdefs.ErrCorrupt.
var ErrCorrupt = errdefs.New(errdefs.ErrCorrupt, "malformed eStargz or zstd:chunked TOC")

// Entry is one TOC entry (the JSON of eStargz's TOCEntry, which
// stargz-snapshotter's zstd:chunked writer uses too).
type Entry struct {
	Name        string            `json:"name"`
	Type        string            `json:"type"`
	Size        int64             `json:"size,omitempty"`
	ModTime     string            `json:"modtime,omitempty"`
	LinkName    string            `json:"linkName,omitempty"`
	Mode        int64             `json:"mode,omitempty"`
	UID         int64             `json:"uid,omitempty"`
	GID         int64             `json:"gid,omitempty"`
	Offset      int64             `json:"offset,omitempty"`
	InnerOffset int64             `json:"innerOffset,omitempty"`
	DevMajor    int64             `json:"devMajor,omitempty"`
	DevMinor    int64             `json:"devMinor,omitempty"`
	Xattrs      map[string][]byte `json:"xattrs,omitempty"`
	Digest      string            `json:"digest,omitempty"`
	ChunkOffset int64             `json:"chunkOffset,omitempty"`
	ChunkSize   int64             `json:"chunkSize,omitempty"`
	ChunkDigest string            `json:"chunkDigest,omitempty"`
}

// TOC is a parsed table of contents.
type TOC struct {
	Version int     `json:"version"`
	Entries []Entry `json:"entries"`
}

// entryTypes are the TOC entry types.
var entryTypes = map[string]bool{"dir": true, "reg": true, "symlink": true, "hardlink": true, "char": true, "block": true, "fifo": true, "chunk": true}

// ParseTOC parses and checks TOC JSON: version 1, known entry types,
// non-negative sizes and offsets, ids that fit 32 bits, chunk digests of
// the form "sha256:<64 hex>" where a chunk needs one.
func ParseTOC(b []byte) (*TOC, error) {
	if len(b) > MaxTOCSize {
		return nil, fmt.Errorf("TOC of %d bytes exceeds %d: %w", len(b), MaxTOCSize, ErrCorrupt)
	}
	var t TOC
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("TOC JSON: %v: %w", err, ErrCorrupt)
	}
	if t.Version != 1 {
		return nil, fmt.Errorf("TOC version %d is not supported (want 1): %w", t.Version, ErrCorrupt)
	}
	if len(t.Entries) > MaxEntries {
		return nil, fmt.Errorf("TOC has %d entries, more than %d: %w", len(t.Entries), MaxEntries, ErrCorrupt)
	}
	for i := range t.Entries {
		if err := t.Entries[i].check(); err != nil {
			return nil, fmt.Errorf("TOC entry %d %q: %w", i, t.Entries[i].Name, err)
		}
	}
	return &t, nil
}

func (e *Entry) check() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf(format+": %w", append(a, ErrCorrupt)...)
	}
	switch {
	case e.Name == "":
		return bad("empty name")
	case !entryTypes[e.Type]:
		return bad("unknown type %q", e.Type)
	case e.Size < 0 || e.Offset < 0 || e.InnerOffset < 0 || e.ChunkOffset < 0 || e.ChunkSize < 0:
		return bad("negative size or offset")
	case e.Size > 1<<44 || e.ChunkOffset > 1<<44 || e.ChunkSize > 1<<44:
		return bad("size or offset beyond 2^44")
	case e.UID < 0 || e.UID > 0xffffffff || e.GID < 0 || e.GID > 0xffffffff:
		return bad("uid/gid %d/%d out of range", e.UID, e.GID)
	case e.Mode < 0 || e.Mode > 0xffffffff:
		return bad("mode %#o out of range", e.Mode)
	case e.DevMajor < 0 || e.DevMajor > 0xfff || e.DevMinor < 0 || e.DevMinor > 0xfffff:
		return bad("device %d:%d out of range", e.DevMajor, e.DevMinor)
	case (e.Type == "symlink" || e.Type == "hardlink") && e.LinkName == "":
		return bad("%s with an empty target", e.Type)
	case e.Type == "chunk" && e.ChunkOffset == 0:
		return bad("chunk entry at file offset 0")
	}
	if e.isData() && e.ChunkDigest != "" {
		if _, err := ParseDigest(e.ChunkDigest); err != nil {
			return err
		}
	}
	return nil
}

// isData reports whether e holds file data: a regular file (its first
// chunk) or a further chunk.
func (e *Entry) isData() bool { return e.Type == "reg" || e.Type == "chunk" }

// ParseDigest decodes a "sha256:<64 lowercase hex>" digest.
func ParseDigest(s string) ([32]byte, error) {
	var d [32]byte
	hexs, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(hexs) != 64 || strings.ToLower(hexs) != hexs {
		return d, fmt.Errorf("chunk digest %q is not sha256:<64 lowercase hex>: %w", s, ErrCorrupt)
	}
	for i := range d {
		v, err := strconv.ParseUint(hexs[2*i:2*i+2], 16, 8)
		if err != nil {
			return d, fmt.Errorf("chunk digest %q is not sha256:<64 lowercase hex>: %w", s, ErrCorrupt)
		}
		d[i] = byte(v)
	}
	return d, nil
}

// Footer locates a layer's TOC.
type Footer struct {
	// Kind is the layer format.
	Kind Kind
	// Size is the footer's size in bytes (at the layer's end).
	Size int64
	// TOCOffset and TOCSize are the stored range of the TOC: an eStargz
	// TOC gzip member (which ends where the footer starts), or the
	// zstd-compressed TOC JSON of zstd:chunked.
	TOCOffset, TOCSize int64
}

// TailSize is how many bytes at a layer's end ParseFooter needs at most.
const TailSize = 64

// ParseFooter finds the footer in tail, the last min(TailSize, size)
// bytes of a layer of size bytes, and checks that the TOC range it gives
// lies before it. It fails with an error wrapping ErrNoTOC if tail ends
// with no known footer.
func ParseFooter(tail []byte, size int64) (Footer, error) {
	if int64(len(tail)) > size {
		return Footer{}, fmt.Errorf("tail of %d bytes is longer than the layer's %d: %w", len(tail), size, ErrCorrupt)
	}
	var f Footer
	switch {
	case len(tail) >= EStargzFooterSize && estargzFooter(tail[len(tail)-EStargzFooterSize:], 26, &f):
		f.Size = EStargzFooterSize
	case len(tail) >= LegacyFooterSize && estargzFooter(tail[len(tail)-LegacyFooterSize:], 22, &f):
		f.Size = LegacyFooterSize
	case len(tail) >= ZstdChunkedFooterSize+8 && bytes.Equal(tail[len(tail)-8:], zstdChunkedMagic):
		p := tail[len(tail)-ZstdChunkedFooterSize:]
		le := binary.LittleEndian
		off, csize, mtype := le.Uint64(p[0:]), le.Uint64(p[8:]), le.Uint64(p[24:])
		if mtype != 1 {
			return Footer{}, fmt.Errorf("zstd:chunked footer with manifest type %d (want 1): %w", mtype, ErrCorrupt)
		}
		if off > uint64(size) || csize > uint64(size) {
			return Footer{}, fmt.Errorf("zstd:chunked footer: TOC at %d+%d beyond the layer's %d bytes: %w", off, csize, size, ErrCorrupt)
		}
		f = Footer{Kind: ZstdChunked, Size: ZstdChunkedFooterSize + 8, TOCOffset: int64(off), TOCSize: int64(csize)}
		if f.TOCOffset+f.TOCSize > size-f.Size {
			return Footer{}, fmt.Errorf("zstd:chunked footer: TOC at %d+%d overlaps the footer at %d: %w", off, csize, size-f.Size, ErrCorrupt)
		}
		return f, nil
	default:
		return Footer{}, ErrNoTOC
	}
	f.Kind = EStargz
	if f.TOCOffset >= size-f.Size {
		return Footer{}, fmt.Errorf("eStargz footer: TOC offset %d not before the footer at %d: %w", f.TOCOffset, size-f.Size, ErrCorrupt)
	}
	f.TOCSize = size - f.Size - f.TOCOffset
	return f, nil
}

// estargzFooter parses an (e)stargz footer: a gzip header with FEXTRA
// whose extra field (xlen bytes: 26 with the 'S','G' subfield header, 22
// without) is "%016xSTARGZ".
func estargzFooter(p []byte, xlen int, f *Footer) bool {
	if p[0] != 0x1f || p[1] != 0x8b || p[2] != 8 || p[3]&0x04 == 0 || int(binary.LittleEndian.Uint16(p[10:])) != xlen {
		return false
	}
	extra := p[12 : 12+xlen]
	if xlen == 26 {
		if extra[0] != 'S' || extra[1] != 'G' || binary.LittleEndian.Uint16(extra[2:]) != 22 {
			return false
		}
		extra = extra[4:]
	}
	if string(extra[16:]) != "STARGZ" {
		return false
	}
	off, err := strconv.ParseUint(string(extra[:16]), 16, 63)
	if err != nil {
		return false
	}
	f.TOCOffset = int64(off)
	return true
}

// ReadFunc reads n bytes at off of a layer.
type ReadFunc func(off, n int64) ([]byte, error)

// ReadTOC reads the footer and TOC of a layer of size bytes through read:
// two reads, the tail and the stored TOC. It returns the parsed TOC, the
// footer and the TOC JSON. A layer with no footer fails with an error
// wrapping ErrNoTOC that says what the layer is (plain gzip, plain zstd).
func ReadTOC(read ReadFunc, size int64) (*TOC, Footer, []byte, error) {
	if size <= 0 {
		return nil, Footer{}, nil, fmt.Errorf("layer of %d bytes: %w", size, ErrNoTOC)
	}
	n := min(size, TailSize)
	tail, err := read(size-n, n)
	if err != nil {
		return nil, Footer{}, nil, fmt.Errorf("read the layer's last %d bytes: %w", n, err)
	}
	f, err := ParseFooter(tail, size)
	if errors.Is(err, ErrNoTOC) {
		head, herr := read(0, min(size, 4))
		if herr != nil {
			return nil, Footer{}, nil, err
		}
		switch compress.Sniff(head) {
		case compress.Zstd:
			return nil, Footer{}, nil, fmt.Errorf("a plain zstd layer (not zstd:chunked): it has no TOC, and a zstd stream cannot be read at random, so it cannot be used by reference (convert it instead): %w", err)
		case compress.GZip:
			return nil, Footer{}, nil, fmt.Errorf("a gzip layer without an eStargz footer (use -t targz-ref for plain gzip layers): %w", err)
		}
		return nil, Footer{}, nil, fmt.Errorf("neither eStargz nor zstd:chunked: %w", err)
	}
	if err != nil {
		return nil, Footer{}, nil, err
	}
	if f.TOCSize > MaxTOCCompressed {
		return nil, Footer{}, nil, fmt.Errorf("%s TOC of %d stored bytes exceeds %d: %w", f.Kind, f.TOCSize, MaxTOCCompressed, ErrCorrupt)
	}
	raw, err := read(f.TOCOffset, f.TOCSize)
	if err != nil {
		return nil, Footer{}, nil, fmt.Errorf("read the %s TOC at %d+%d: %w", f.Kind, f.TOCOffset, f.TOCSize, err)
	}
	js, err := DecodeTOC(f.Kind, raw)
	if err != nil {
		return nil, Footer{}, nil, err
	}
	t, err := ParseTOC(js)
	if err != nil {
		return nil, Footer{}, nil, err
	}
	return t, f, js, nil
}

// DecodeTOC returns the TOC JSON of a stored TOC: for eStargz, the file
// stargz.index.json of the tar in one gzip member; for zstd:chunked, a
// zstd frame of JSON.
func DecodeTOC(k Kind, raw []byte) ([]byte, error) {
	var r io.Reader
	switch k {
	case EStargz:
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("eStargz TOC: %v: %w", err, ErrCorrupt)
		}
		zr.Multistream(false)
		tr := tar.NewReader(zr)
		h, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("eStargz TOC tar: %v: %w", err, ErrCorrupt)
		}
		if h.Name != TOCTarName {
			return nil, fmt.Errorf("eStargz TOC tar holds %q, not %s: %w", h.Name, TOCTarName, ErrCorrupt)
		}
		r = tr
	case ZstdChunked:
		zr, err := zstd.NewReader(bytes.NewReader(raw), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxTOCSize+1))
		if err != nil {
			return nil, fmt.Errorf("zstd:chunked TOC: %v: %w", err, ErrCorrupt)
		}
		defer zr.Close()
		r = zr
	default:
		return nil, fmt.Errorf("TOC of kind %v: %w", k, ErrNoTOC)
	}
	js, err := io.ReadAll(io.LimitReader(r, MaxTOCSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s TOC: %v: %w", k, err, ErrCorrupt)
	}
	if len(js) > MaxTOCSize {
		return nil, fmt.Errorf("%s TOC JSON exceeds %d bytes: %w", k, MaxTOCSize, ErrCorrupt)
	}
	return js, nil
}
