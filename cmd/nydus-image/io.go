package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nydus-go/nydus/internal/atomicfile"
	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/storage"
)

// output is a destination file: a FIFO or character device is written in
// place, strictly sequentially; anything else atomically.
type output struct {
	io.Writer
	path   string
	direct *os.File
	atomic *atomicfile.File
}

func isStream(path string) bool {
	st, err := os.Stat(path)
	return err == nil && (st.Mode()&os.ModeNamedPipe != 0 || st.Mode()&os.ModeCharDevice != 0)
}

func createOutput(path string) (*output, error) {
	if isStream(path) {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
		return &output{Writer: f, path: path, direct: f}, nil
	}
	f, err := atomicfile.Create(path, 0o644)
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	return &output{Writer: bw, path: path, atomic: f}, nil
}

// commit publishes the output (under newPath if not empty).
func (o *output) commit(newPath string) error {
	if o.direct != nil {
		return o.direct.Close()
	}
	if bw, ok := o.Writer.(*bufio.Writer); ok {
		if err := bw.Flush(); err != nil {
			o.atomic.Abort()
			return fmt.Errorf("write %s: %w", o.path, err)
		}
	}
	if newPath != "" {
		return o.atomic.CommitAs(newPath)
	}
	return o.atomic.Commit()
}

// abort discards a regular-file output.
func (o *output) abort() {
	if o.direct != nil {
		o.direct.Close()
		return
	}
	o.atomic.Abort()
}

// openBootstrap opens and validates a bootstrap file. As an extension to
// upstream, the file may also be a layer blob with an inline bootstrap
// (--blob-inline-meta), whose embedded bootstrap is used.
func openBootstrap(ctx context.Context, path string) (*rafs.Reader, *os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open bootstrap: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("stat bootstrap %s: %w", path, err)
	}
	rd, err := rafs.Open(ctx, f, st.Size())
	if err == nil {
		fixPlaceholderIDs(rd, path, nil)
		return rd, f, nil
	}
	if errors.Is(err, rafs.ErrNotRafsV6) {
		f.Close()
		return nil, nil, fmt.Errorf("bootstrap %s: %w", path, err)
	}
	// Not a bootstrap: maybe a layer blob carrying one.
	if br, berr := blob.Open(f, st.Size()); berr == nil {
		if boot, berr := br.Bootstrap(); berr == nil && boot != nil {
			if brd, berr := rafs.Open(ctx, bytes.NewReader(boot), int64(len(boot))); berr == nil {
				fixPlaceholderIDs(brd, path, f)
				return brd, f, nil
			}
		}
	}
	f.Close()
	return nil, nil, fmt.Errorf("bootstrap %s: %w", path, err)
}

// parseChunkDict accepts "bootstrap=PATH" or a bare PATH.
func parseChunkDict(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if i := strings.IndexByte(s, '='); i >= 0 {
		if s[:i] != "bootstrap" {
			return "", fmt.Errorf("invalid --chunk-dict %q: only bootstrap=PATH is supported", s)
		}
		return s[i+1:], nil
	}
	return s, nil
}

// readPrefetch reads prefetch paths from stdin until EOF.
func readPrefetch(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if !strings.HasPrefix(line, "/") {
			logger.Warn("prefetch pattern is not an absolute path; ignored", "pattern", line)
			continue
		}
		out = append(out, filepath.Clean(line))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read prefetch patterns from stdin: %w", err)
	}
	return out, nil
}

// writeJSON writes v to path atomically (pretty-printed).
func writeJSON(path string, v any) error {
	if path == "" {
		return nil
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if isStream(path) {
		return os.WriteFile(path, b, 0o644)
	}
	return atomicfile.WriteFile(path, b, 0o644)
}

// fixPlaceholderIDs gives inline-meta blobs, which carry a placeholder id
// until merge, their real id, as upstream does when loading a bootstrap:
// the file name up to the first "." if it is a blob digest, else (for a
// layer blob) the sha256 of the blob file itself.
func fixPlaceholderIDs(rd *rafs.Reader, path string, blobFile *os.File) {
	id := builder.BlobIDFromPath(path)
	if !storage.IsBlobID(id) {
		if blobFile == nil {
			return
		}
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(blobFile, 0, 1<<62)); err != nil {
			return
		}
		id = hex.EncodeToString(h.Sum(nil))
	}
	for i := range rd.Blobs {
		if rd.Blobs[i].BlobID == rafs.PlaceholderBlobID {
			rd.Blobs[i].BlobID = id
		}
	}
}

// blobDirOpener opens blobs stored as dir/<blob_id> (builder.BlobOpener).
func blobDirOpener(dir string) builder.BlobOpener {
	return func(id string) (io.ReaderAt, int64, func(), error) {
		if _, err := hex.DecodeString(id); err != nil || len(id) != 64 || strings.ToLower(id) != id {
			return nil, 0, nil, fmt.Errorf("blob id %q is not 64 lowercase hex characters: %w", id, fs.ErrNotExist)
		}
		f, err := os.Open(filepath.Join(dir, id))
		if err != nil {
			return nil, 0, nil, err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, 0, nil, err
		}
		return f, st.Size(), func() { f.Close() }, nil
	}
}

// layerInputs are what create and merge read besides their sources: the
// prefetch list (--prefetch-policy fs|blob, from stdin), the parent
// bootstrap and its blobs (--parent-bootstrap, --parent-blob-dir or
// --blob-dir) and the chunk dictionary (--chunk-dict). Close releases
// the files.
type layerInputs struct {
	prefetch    []string
	parent      *rafs.Reader
	parentBlobs builder.BlobOpener
	dict        *rafs.Reader
	files       []*os.File
}

// openLayerInputs reads the inputs create and merge share.
func openLayerInputs(ctx context.Context, stdin io.Reader, prefetchPolicy, parent, parentBlobDir, blobDir, chunkDict string) (*layerInputs, error) {
	in := &layerInputs{}
	var err error
	switch prefetchPolicy {
	case "none", "":
	case "fs", "blob":
		if in.prefetch, err = readPrefetch(stdin); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("invalid --prefetch-policy %q (want fs, blob or none)", prefetchPolicy)
	}
	if parent != "" {
		rd, pf, err := openBootstrap(ctx, parent)
		if err != nil {
			return nil, fmt.Errorf("--parent-bootstrap: %w", err)
		}
		in.files = append(in.files, pf)
		in.parent = rd
		if dir := cmp.Or(parentBlobDir, blobDir); dir != "" {
			in.parentBlobs = blobDirOpener(dir)
		}
	}
	dict, err := parseChunkDict(chunkDict)
	if err != nil {
		in.Close()
		return nil, err
	}
	if dict != "" {
		rd, df, err := openBootstrap(ctx, dict)
		if err != nil {
			in.Close()
			return nil, fmt.Errorf("--chunk-dict: %w", err)
		}
		in.files = append(in.files, df)
		in.dict = rd
	}
	return in, nil
}

// Close closes the bootstrap files.
func (in *layerInputs) Close() {
	for _, f := range in.files {
		f.Close()
	}
}
