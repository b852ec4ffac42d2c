package checker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"sort"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nydus-go/nydus/pkg/builder"
	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/storage"
)

// checkImage checks one Nydus manifest, filling r. An error is returned
// only when the check itself cannot go on (e.g. an unreadable source).
func checkImage(ctx context.Context, r *Report, tgt *opened, img v1.Image, src *compareSource, rr storage.RangeReader, o *Options) error {
	mf, err := img.Manifest()
	if err != nil {
		return imageref.Describe(tgt.what(), tgt.host(), err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		r.problem("config %s: %v", mf.Config.Digest, imageref.Describe(tgt.what(), tgt.host(), err))
		cf = nil
	}
	boot := checkManifest(r, mf, cf)
	if src != nil {
		srcCf, err := src.img.ConfigFile()
		if err != nil {
			return imageref.Describe(src.what, src.host, err)
		}
		if cf != nil {
			compareConfigs(r, srcCf, cf)
		}
		if want := mf.Annotations[imageref.AnnotationSourceDigest]; want != "" && r.SourceDigest != "" && want != r.SourceDigest {
			r.warn("the target records source manifest %s (annotation %s) but is compared with %s", want, imageref.AnnotationSourceDigest, r.SourceDigest)
		}
	}
	if boot < 0 {
		r.BootstrapErr = "the manifest has no bootstrap layer"
		return nil
	}

	// Bootstrap.
	bootDesc := mf.Layers[boot]
	o.Log.Info("reading bootstrap layer", "digest", bootDesc.Digest, "size", bootDesc.Size)
	var wantDiff *v1.Hash
	if cf != nil && len(cf.RootFS.DiffIDs) == len(mf.Layers) {
		wantDiff = &cf.RootFS.DiffIDs[boot]
	}
	data, err := readBootstrap(img, bootDesc, wantDiff, r)
	if err != nil {
		r.BootstrapErr = imageref.OneLine(imageref.Describe(fmt.Sprintf("bootstrap layer %s", bootDesc.Digest), tgt.host(), err).Error())
		return nil
	}
	rd, err := rafs.Open(ctx, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		r.BootstrapErr = imageref.OneLine(err.Error())
		return nil
	}
	sum, err := builder.Check(ctx, rd, nil)
	if err != nil {
		r.BootstrapErr = imageref.OneLine(err.Error())
		return nil
	}
	r.Files, r.Dirs, r.Symlinks, r.Others, r.Hardlinks = sum.Files, sum.Dirs, sum.Symlinks, sum.Others, sum.Hardlinks
	r.Bytes, r.Chunks, r.Blobs = int64(sum.Bytes), sum.Chunks, sum.Blobs

	// The blob table must name exactly the manifest's blob layers.
	layerIDs := blobLayerIDs(mf, boot)
	inTable := map[string]bool{}
	for _, b := range rd.Blobs {
		inTable[b.BlobID] = true
		size, ok := layerIDs[b.BlobID]
		switch {
		case !ok:
			r.problem("the bootstrap references blob %s, which is not a blob layer of the manifest", b.BlobID)
		case b.CompressedSize > uint64(size):
			// compressed_size excludes what an inline-meta blob appends
			// after its data (the layer bootstrap, the ToC), so it may be
			// smaller than the blob, never larger.
			r.problem("blob %s: the bootstrap's blob table gives it %d bytes, more than its %d bytes in the manifest", b.BlobID, b.CompressedSize, size)
		}
	}
	var unused []string
	for id := range layerIDs {
		if !inTable[id] {
			unused = append(unused, id)
		}
	}
	sort.Strings(unused)
	for _, id := range unused {
		r.problem("blob layer sha256:%s is not referenced by the bootstrap's blob table", id)
	}

	tree, err := rd.Load(ctx, rafs.LoadOptions{})
	if err != nil {
		r.BootstrapErr = imageref.OneLine(err.Error())
		return nil
	}

	// Read every chunk of the target while the source tree is built.
	var (
		wg      sync.WaitGroup
		srcRoot *fsNode
		srcErr  error
		srcWarn []string
	)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if src != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			srcRoot, srcWarn, srcErr = buildSourceTree(rctx, src.img, o)
			if srcErr != nil {
				cancel() // the check fails anyway
			}
		}()
	}
	sums := readContents(rctx, r, rd, tree, rr, o)
	wg.Wait()
	if src == nil {
		return nil
	}
	if srcErr != nil {
		return imageref.Describe(src.what, src.host, srcErr)
	}
	for _, w := range srcWarn {
		r.warn("source: %s", w)
	}
	r.Compared = true
	compareTrees(r, srcRoot, tree, sums)
	return nil
}

// readBootstrap downloads the bootstrap layer, checks that its
// uncompressed tar matches diff_id and returns the bootstrap.
func readBootstrap(img v1.Image, d v1.Descriptor, diffID *v1.Hash, r *Report) ([]byte, error) {
	l, err := img.LayerByDigest(d.Digest)
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	h := sha256.New()
	tarStream, closeDec, err := decompress(rc, h)
	if err != nil {
		return nil, err
	}
	defer closeDec()
	boot, err := imageref.ExtractBootstrap(tarStream, rafs.MaxMetadataSize)
	if err != nil {
		return nil, err
	}
	if err := drain(tarStream, rc); err != nil {
		return nil, err
	}
	if diffID != nil {
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != diffID.String() {
			r.problem("bootstrap layer %s: rootfs.diff_ids gives %s but its uncompressed tar has digest %s", d.Digest, diffID, got)
		}
	}
	return boot, nil
}

// decompress returns the uncompressed stream of a layer (gzip, zstd or
// a plain tar, told apart by their magic numbers), hashing what it
// returns into h.
func decompress(r io.Reader, h hash.Hash) (io.Reader, func(), error) {
	out, _, closeFn, err := compress.NewStreamReader(r)
	if err != nil {
		return nil, nil, err
	}
	return io.TeeReader(out, h), closeFn, nil
}

// drain reads the rest of the uncompressed stream (completing its hash)
// and of the compressed one (so that go-containerregistry verifies the
// blob digest at EOF).
func drain(uncompressed, compressed io.Reader) error {
	if _, err := io.Copy(io.Discard, uncompressed); err != nil {
		return err
	}
	_, err := io.Copy(io.Discard, compressed)
	return err
}

// fileSum is the sha256 of a target file's content.
type fileSum struct {
	sum [sha256.Size]byte
	bad bool // unknown: a chunk failed (see ChunkErrors) or was not read
}

// readContents reads and verifies every chunk of every regular file of
// the tree and returns the sha256 of each file's content.
func readContents(ctx context.Context, r *Report, rd *rafs.Reader, tree *rafs.Node, rr storage.RangeReader, o *Options) map[*rafs.Inode]*fileSum {
	type job struct {
		path string
		ino  *rafs.Inode
	}
	var jobs []job
	seen := map[*rafs.Inode]bool{}
	tree.Walk(func(p string, n *rafs.Node) error {
		if n.Inode.IsRegular() && !seen[n.Inode] {
			seen[n.Inode] = true
			jobs = append(jobs, job{p, n.Inode})
		}
		return nil
	})
	sums := make(map[*rafs.Inode]*fileSum, len(jobs))
	for _, j := range jobs {
		sums[j.ino] = &fileSum{bad: true} // until its chunks are verified
	}
	cr, err := storage.NewChunkReader(ctx, rd, rr)
	if err != nil {
		r.BootstrapErr = imageref.OneLine(err.Error())
		return sums
	}
	dig := rd.Ext.Flags.Digester()
	o.Log.Info("reading files", "files", len(jobs), "chunks", r.Chunks)

	var (
		mu        sync.Mutex
		errs      []string
		read      int
		noDigest  int
		next      = make(chan job)
		wg        sync.WaitGroup
		chunkSize = uint64(rd.ChunkSize())
	)
	worker := func() {
		defer wg.Done()
		h := sha256.New()
		for j := range next {
			h.Reset()
			n, nd, cerr := hashFile(ctx, rd, cr, dig, chunkSize, j.path, j.ino, h)
			if s := sums[j.ino]; cerr == nil {
				h.Sum(s.sum[:0])
				s.bad = false
			}
			mu.Lock()
			read += n
			noDigest += nd
			if cerr != nil {
				errs = append(errs, imageref.OneLine(cerr.Error()))
			}
			mu.Unlock()
		}
	}
	for range o.Concurrency {
		wg.Add(1)
		go worker()
	}
	for _, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		next <- j
	}
	close(next)
	wg.Wait()
	r.ChunksRead = read
	if err := ctx.Err(); err != nil {
		r.BootstrapErr = "check interrupted: " + err.Error()
		return sums
	}
	sort.Strings(errs)
	for _, e := range errs {
		if len(r.ChunkErrors) < MaxDifferences {
			r.ChunkErrors = append(r.ChunkErrors, e)
		} else {
			r.MoreChunkErrors++
		}
	}
	if noDigest > 0 {
		r.warn("%d chunks have no digest and could not be verified", noDigest)
	}
	return sums
}

// hashFile reads the chunks of one file in order, verifying each, and
// hashes the content into h. It returns the number of chunks read, the
// number without a digest and the first bad chunk (a *builder.ChunkError
// naming the file).
func hashFile(ctx context.Context, rd *rafs.Reader, cr *storage.ChunkReader, dig digester.Algorithm, chunkSize uint64, path string, ino *rafs.Inode, h hash.Hash) (read, noDigest int, err error) {
	var total uint64
	for i, c := range ino.Chunks {
		blobID := ""
		if int(c.BlobIndex) < len(rd.Blobs) {
			blobID = rd.Blobs[c.BlobIndex].BlobID
		}
		fail := func(err error) (int, int, error) {
			return read, noDigest, &builder.ChunkError{Path: path, Chunk: i, BlobID: blobID, Err: err}
		}
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		if c.FileOffset != uint64(i)*chunkSize {
			return fail(fmt.Errorf("chunk at file offset %d, want %d", c.FileOffset, uint64(i)*chunkSize))
		}
		data, err := cr.ReadChunk(ctx, c)
		read++
		if err != nil {
			return fail(err)
		}
		if uint32(len(data)) != c.UncompressedSize {
			return fail(fmt.Errorf("read %d bytes, the chunk holds %d", len(data), c.UncompressedSize))
		}
		if c.Digest == (digester.Digest{}) {
			noDigest++
		} else if got := digester.Sum(dig, data); got != c.Digest {
			return fail(fmt.Errorf("%w: data at compressed offset %d has digest %s, the bootstrap records %s", builder.ErrDigestMismatch, c.CompressedOffset, got, c.Digest))
		}
		h.Write(data)
		total += uint64(len(data))
	}
	if total != ino.Size {
		return read, noDigest, fmt.Errorf("%s: its chunks hold %d bytes but the file size is %d", path, total, ino.Size)
	}
	return read, noDigest, nil
}
