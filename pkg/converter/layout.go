package converter

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"sort"

	"github.com/klauspost/compress/gzip"

	"github.com/nydus-go/nydus/pkg/imageref"
)

// bootstrapLayer is the gzip-compressed tar of the bootstrap layer and
// the sha256 of its uncompressed tar (its diff_id).
type bootstrapLayer struct {
	gz     []byte
	diffID string
}

// makeBootstrapLayer packs the bootstrap and each blob's `.blob.meta`
// (uncompressed CI + header, the snapshotter copies them to its cache)
// the way nydus-snapshotter does: dir image (0755), image/image.boot
// (0444), image/<blob-hex>.blob.meta. The result is deterministic.
func makeBootstrapLayer(boot []byte, metas map[string][]byte) (*bootstrapLayer, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	hdr := func(name string, mode int64, size int, typ byte) error {
		return tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(size), Typeflag: typ, Format: tar.FormatUSTAR})
	}
	if err := hdr("image", 0o755, 0, tar.TypeDir); err != nil {
		return nil, err
	}
	if err := hdr(imageref.BootstrapPath, 0o444, len(boot), tar.TypeReg); err != nil {
		return nil, err
	}
	if _, err := tw.Write(boot); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(metas))
	for id := range metas {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := metas[id]
		if err := hdr("image/"+id+".blob.meta", 0o444, len(m), tar.TypeReg); err != nil {
			return nil, err
		}
		if _, err := tw.Write(m); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw.Bytes())
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return &bootstrapLayer{gz: gz.Bytes(), diffID: "sha256:" + hex.EncodeToString(sum[:])}, nil
}
