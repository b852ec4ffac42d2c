package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nydus-go/nydus/internal/cliutil"
	"github.com/nydus-go/nydus/internal/version"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/stargz"
	"github.com/nydus-go/nydus/pkg/storage"
)

// runCreateTOCRef builds the bootstrap of an eStargz or zstd:chunked
// layer by reference (--type estargztoc-ref, alias stargz_index).
func runCreateTOCRef(ctx context.Context, f *createFlags, source string, stdin io.Reader) error {
	switch {
	case f.encrypt:
		return notSupported("--encrypt with --type estargztoc-ref")
	case f.fsVersion != "6":
		return fmt.Errorf("invalid --fs-version %q: only RAFS v6 is supported", f.fsVersion)
	case f.inlineMeta || f.inlineBoot:
		return errors.New("--blob-inline-meta conflicts with --type estargztoc-ref: the layer is the data blob, it is not written")
	case f.blob != "" || f.blobCacheDir != "":
		return errors.New("--blob and --blob-cache-dir conflict with --type estargztoc-ref: the layer is the data blob, it is not written")
	case f.parent != "" || f.chunkDict != "":
		return notSupported("--parent-bootstrap or --chunk-dict with --type estargztoc-ref")
	case f.bootstrap == "" && f.blobDir == "":
		return errors.New("--bootstrap or --blob-dir is required")
	case f.externalBlob != "" || f.attributes != "":
		return notSupported("--external-blob or --attributes")
	case f.blobOffset != "0" && f.blobOffset != "":
		return notSupported("a non-zero --blob-offset")
	}
	o := builder.TOCOptions{Warn: func(m string) { logger.Warn(m) }}
	if f.chunkSizeSet {
		cs, err := cliutil.ParseNumber("chunk-size", f.chunkSize)
		if err != nil {
			return err
		}
		if err := builder.ValidateSize("--chunk-size", cs); err != nil {
			return err
		}
		o.ChunkSize = uint32(cs)
	}
	in, err := openLayerInputs(ctx, stdin, f.prefetchPolicy, "", "", "", "")
	if err != nil {
		return err
	}
	defer in.Close()
	o.Prefetch = in.prefetch

	layer, err := openTOCSource(source, f.blobID, f.blobDataSize)
	if err != nil {
		return fmt.Errorf("source %s: %w", source, err)
	}
	res, err := builder.CreateFromTOC(ctx, layer, o)
	if err != nil {
		return fmt.Errorf("source %s: %w", source, err)
	}
	boot := f.bootstrap
	if boot == "" {
		if err := os.MkdirAll(f.blobDir, 0o755); err != nil {
			return fmt.Errorf("create --blob-dir: %w", err)
		}
		sum := sha256.Sum256(res.Bootstrap)
		boot = filepath.Join(f.blobDir, hex.EncodeToString(sum[:]))
	}
	if err := writeBootstrap(boot, res.Bootstrap); err != nil {
		return err
	}
	blobs := res.Blobs
	if blobs == nil {
		blobs = []string{}
	}
	return writeJSON(f.outputJSON, map[string]any{
		"version":    version.Version,
		"bootstrap":  boot,
		"blobs":      blobs,
		"blob_id":    res.BlobID,
		"blob_size":  res.BlobSize,
		"fs_version": "6",
		"compressor": layer.Kind.Compressor().String(),
		"trace":      map[string]any{"stats": res.Stats},
	})
}

// openTOCSource reads SOURCE: a layer file (eStargz or zstd:chunked),
// whose id and size come from its content, or the TOC JSON of an eStargz
// layer, whose id and size must be given (upstream's form; the size in
// hex, as upstream parses it).
func openTOCSource(source, blobID, dataSize string) (builder.TOCLayer, error) {
	file, err := os.Open(source)
	if err != nil {
		return builder.TOCLayer{}, err
	}
	defer file.Close()
	st, err := file.Stat()
	if err != nil {
		return builder.TOCLayer{}, err
	}
	head := make([]byte, 1)
	n, _ := file.ReadAt(head, 0)
	if n == 1 && (head[0] == '{' || head[0] == ' ' || head[0] == '\n' || head[0] == '\t' || head[0] == '\r') {
		if blobID == "" || dataSize == "" {
			return builder.TOCLayer{}, errors.New("a TOC JSON source needs --blob-id (the layer's sha256) and --blob-data-size (its size, hex)")
		}
		if !storage.IsBlobID(blobID) {
			return builder.TOCLayer{}, fmt.Errorf("invalid --blob-id %q: want the layer's sha256 (64 lowercase hex digits)", blobID)
		}
		size, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(dataSize, "0x"), "0X"), 16, 64)
		if err != nil || size == 0 {
			return builder.TOCLayer{}, fmt.Errorf("invalid --blob-data-size %q: want the layer's size in hex", dataSize)
		}
		js, err := io.ReadAll(io.LimitReader(file, stargz.MaxTOCSize+1))
		if err != nil {
			return builder.TOCLayer{}, err
		}
		toc, err := stargz.ParseTOC(bytes.TrimSpace(js))
		if err != nil {
			return builder.TOCLayer{}, err
		}
		return builder.TOCLayer{TOC: toc, Kind: stargz.EStargz, BlobID: blobID, Size: size}, nil
	}
	l, err := builder.OpenTOCLayer(file, st.Size())
	if err != nil {
		return builder.TOCLayer{}, err
	}
	if blobID != "" && blobID != l.BlobID {
		return builder.TOCLayer{}, fmt.Errorf("--blob-id %s is not the layer's sha256 %s", blobID, l.BlobID)
	}
	if dataSize != "" {
		if size, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(dataSize, "0x"), "0X"), 16, 64); err != nil || size != l.Size {
			return builder.TOCLayer{}, fmt.Errorf("--blob-data-size %s (hex) is not the layer's size %#x", dataSize, l.Size)
		}
	}
	return l, nil
}
