package builder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/nydus-go/nydus/pkg/blob"
	"github.com/nydus-go/nydus/pkg/compress"
	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/rafs"
)

// dataWriter appends compressed chunk data to a blob.
type dataWriter interface {
	WriteChunkData(p []byte) (uint64, error)
}

// batchMember is one chunk inside a batch buffer.
type batchMember struct {
	ci  uint32 // CI index
	off uint32 // offset in the batch's uncompressed buffer
}

// job is one unit of compression: a single chunk, or a batch of small
// chunks compressed together (upstream's BATCH blob feature).
type job struct {
	data    []byte        // uncompressed, from a pool
	members []batchMember // batch members; nil for a single chunk
	ci      uint32        // CI index of a single chunk
	out     []byte        // stored bytes (compressed, or data itself)
	packed  bool          // out is compressed
	outBuf  *[]byte       // pooled buffer backing out, if any
	parts   []batchPart   // a batch's stored units, in member order
	err     error
	done    chan struct{}
}

// batchPart is one stored unit of a batch job: the members [lo, hi),
// whose data is contiguous in the job's buffer, compressed together. A
// batch is one part unless its compressed form exceeds the pipeline's
// batch limit, when the worker splits it.
type batchPart struct {
	lo, hi int
	out    []byte
	packed bool
	outBuf *[]byte
}

// compInfo is the committer's half of a CI entry.
type compInfo struct {
	off    uint64
	size   uint32
	packed bool
	batch  bool
	ctx    uint32 // batch context index
	inOff  uint32 // offset inside the batch buffer
}

// pipeline turns file data into blob chunks. The reading goroutine
// hashes every chunk and makes all layout decisions (dedup, CI index,
// uncompressed offset, batch membership) in input order; workers only
// compress; a committer writes compressed data in order. The output is
// therefore the same whatever the number of workers.
type pipeline struct {
	chunkSize uint32
	batchSize uint32
	// batchLimit, when non-zero, is the most compressed bytes a batch
	// stores: a lazy read of one member fetches the whole batch.
	batchLimit uint32
	comp       compress.Algorithm
	level      int
	dig        digester.Algorithm
	blobIndex  uint32
	out        dataWriter
	cache      io.WriterAt // optional uncompressed blob.data

	jobs    chan *job
	order   chan *job
	bufs    sync.Pool // chunk-size read buffers
	batches sync.Pool // batch buffers
	outs    sync.Pool // compression output buffers
	wg      sync.WaitGroup
	cdone   chan struct{}

	// Owned by the reading goroutine.
	known     map[digester.Digest]rafs.ChunkInfo
	cis       []blob.ChunkInfo
	digests   []digester.Digest
	uncompOff uint64
	batch     []byte
	members   []batchMember
	stats     Stats

	// Owned by the committer until close.
	comps    []compInfo
	contexts []blob.BatchContext
	compOut  uint64

	errMu    sync.Mutex
	firstErr error
}

// Stats counts what a build wrote and deduplicated.
type Stats struct {
	Files         int    `json:"files"`
	Chunks        int    `json:"chunks"`
	UniqueChunks  int    `json:"unique_chunks"`
	DedupChunks   int    `json:"dedup_chunks"`
	BatchedChunks int    `json:"batched_chunks"`
	Bytes         uint64 `json:"bytes"`
	DedupBytes    uint64 `json:"dedup_bytes"`
	StoredBytes   uint64 `json:"stored_bytes"`
	CompressedOut uint64 `json:"compressed_bytes"`
}

func newPipeline(chunkSize, batchSize, batchLimit uint32, comp compress.Algorithm, level int, dig digester.Algorithm, workers int, blobIndex uint32, known map[digester.Digest]rafs.ChunkInfo, out dataWriter, cache io.WriterAt) *pipeline {
	if workers < 1 {
		workers = 1
	}
	if known == nil {
		known = map[digester.Digest]rafs.ChunkInfo{}
	}
	p := &pipeline{
		chunkSize: chunkSize, batchSize: batchSize, batchLimit: batchLimit, comp: comp, level: level, dig: dig, blobIndex: blobIndex,
		out: out, cache: cache, known: known,
		jobs:  make(chan *job, workers*4),
		order: make(chan *job, workers*4+4),
		cdone: make(chan struct{}),
	}
	p.bufs.New = func() any { return make([]byte, chunkSize) }
	p.batches.New = func() any { return make([]byte, 0, batchSize) }
	p.outs.New = func() any { b := make([]byte, 0, chunkSize); return &b }
	for range workers {
		p.wg.Add(1)
		go p.worker()
	}
	go p.committer()
	return p
}

func (p *pipeline) worker() {
	defer p.wg.Done()
	for j := range p.jobs {
		if j.members != nil {
			p.compressBatch(j, 0, len(j.members), false)
			close(j.done)
			continue
		}
		j.out, j.packed = j.data, false
		if p.comp != compress.None {
			bp := p.outs.Get().(*[]byte)
			out, packed, err := compress.CompressIfSmallerLevel(p.comp, p.level, (*bp)[:0], j.data)
			switch {
			case err != nil:
				j.err = err
				p.outs.Put(bp)
			case packed:
				j.out, j.packed, j.outBuf = out, true, bp
			default:
				p.outs.Put(bp)
			}
		}
		close(j.done)
	}
}

// span is the part of a batch job's buffer holding members [lo, hi).
func (j *job) span(lo, hi int) []byte {
	end := len(j.data)
	if hi < len(j.members) {
		end = int(j.members[hi].off)
	}
	return j.data[j.members[lo].off:end]
}

// compressBatch compresses members [lo, hi) of a batch job as one part,
// or, when that would exceed the batch limit, splits them into groups of
// about equal uncompressed size, as many as the excess asks for, and
// handles each group the same way. A member alone is never split. The
// size of a span larger than the limit is first estimated with zstd's
// fastest level (an upper bound in practice, at a fraction of the cost),
// unless sized says its parent already split it by size. The parts
// depend only on the data, so the blob is the same whatever the number
// of workers.
func (p *pipeline) compressBatch(j *job, lo, hi int, sized bool) {
	src := j.span(lo, hi)
	n, limit := hi-lo, int(p.batchLimit)
	if limit > 0 && n > 1 && !sized && len(src) > limit && p.comp == compress.Zstd && p.level != 1 {
		bp := p.outs.Get().(*[]byte)
		est, err := compress.CompressLevel(compress.Zstd, 1, (*bp)[:0], src)
		*bp = est[:0]
		p.outs.Put(bp)
		if err != nil {
			j.err = err
			return
		}
		if len(est) > limit {
			p.splitBatch(j, lo, hi, len(est))
			return
		}
	}
	part := batchPart{lo: lo, hi: hi, out: src}
	if p.comp != compress.None {
		bp := p.outs.Get().(*[]byte)
		out, packed, err := compress.CompressIfSmallerLevel(p.comp, p.level, (*bp)[:0], src)
		if err != nil {
			p.outs.Put(bp)
			j.err = err
			return
		}
		if packed {
			part.out, part.packed, part.outBuf = out, true, bp
		} else {
			p.outs.Put(bp)
		}
	}
	if limit == 0 || n == 1 || len(part.out) <= limit {
		j.parts = append(j.parts, part)
		return
	}
	if part.outBuf != nil {
		p.outs.Put(part.outBuf)
	}
	p.splitBatch(j, lo, hi, len(part.out))
}

// splitBatch splits members [lo, hi) of a batch job, whose compressed
// size is about size, into ceil(size / limit) groups of about equal
// uncompressed size (each at least one member) and compresses each.
func (p *pipeline) splitBatch(j *job, lo, hi, size int) {
	limit := int(p.batchLimit)
	k := min((size+limit-1)/limit, hi-lo)
	base, total := j.members[lo].off, len(j.span(lo, hi))
	start := lo
	for g := 1; g <= k; g++ {
		end := hi
		if g < k {
			// The first member starting at or past g/k of the span,
			// leaving at least one member for each group after it.
			cut := base + uint32(g*total/k)
			end = start + 1
			for end < hi-(k-g) && j.members[end].off < cut {
				end++
			}
		}
		p.compressBatch(j, start, end, true)
		if j.err != nil {
			return
		}
		start = end
	}
}

func (p *pipeline) fail(err error) {
	p.errMu.Lock()
	if p.firstErr == nil {
		p.firstErr = err
	}
	p.errMu.Unlock()
}

func (p *pipeline) err() error {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	return p.firstErr
}

func (p *pipeline) committer() {
	defer close(p.cdone)
	failed := false
	for j := range p.order {
		<-j.done
		if !failed {
			if err := p.commit(j); err != nil {
				p.fail(err)
				failed = true
			}
		}
		if j.outBuf != nil {
			*j.outBuf = j.out[:0]
			p.outs.Put(j.outBuf)
		}
		for _, pt := range j.parts {
			if pt.outBuf != nil {
				*pt.outBuf = pt.out[:0]
				p.outs.Put(pt.outBuf)
			}
		}
		if j.members == nil {
			p.putBuf(j.data)
		} else {
			p.putBatch(j.data)
		}
	}
}

// putBuf returns a chunk-size read buffer to its pool.
func (p *pipeline) putBuf(b []byte) {
	//lint:ignore SA6002 a slice header's allocation is nothing next to the chunk buffer it recycles
	p.bufs.Put(b[:cap(b)])
}

// putBatch returns a batch buffer to its pool.
func (p *pipeline) putBatch(b []byte) {
	//lint:ignore SA6002 a slice header's allocation is nothing next to the batch buffer it recycles
	p.batches.Put(b[:0])
}

func (p *pipeline) commit(j *job) error {
	if j.err != nil {
		return j.err
	}
	grow := func(ci uint32) {
		for uint32(len(p.comps)) <= ci {
			p.comps = append(p.comps, compInfo{})
		}
	}
	if j.members == nil {
		off, err := p.out.WriteChunkData(j.out)
		if err != nil {
			return fmt.Errorf("write blob: %w", err)
		}
		p.compOut += uint64(len(j.out))
		grow(j.ci)
		p.comps[j.ci] = compInfo{off: off, size: uint32(len(j.out)), packed: j.packed}
		return nil
	}
	for _, pt := range j.parts {
		off, err := p.out.WriteChunkData(pt.out)
		if err != nil {
			return fmt.Errorf("write blob: %w", err)
		}
		p.compOut += uint64(len(pt.out))
		base := j.members[pt.lo].off
		ctx := uint32(len(p.contexts))
		p.contexts = append(p.contexts, blob.BatchContext{CompressedSize: uint32(len(pt.out)), UncompressedSize: uint32(len(j.span(pt.lo, pt.hi)))})
		for _, m := range j.members[pt.lo:pt.hi] {
			grow(m.ci)
			p.comps[m.ci] = compInfo{off: off, size: uint32(len(pt.out)), packed: pt.packed, batch: true, ctx: ctx, inOff: m.off - base}
		}
	}
	return nil
}

// submit queues a job for compression and ordered commit.
func (p *pipeline) submit(j *job) {
	j.done = make(chan struct{})
	p.order <- j
	p.jobs <- j
}

// flushBatch seals the current batch, if any.
func (p *pipeline) flushBatch() {
	if len(p.members) == 0 {
		return
	}
	p.submit(&job{data: p.batch, members: p.members})
	p.batch, p.members = nil, nil
}

// MaxFileSize is the largest regular file the builder accepts: a blob's
// uncompressed address space (chunk-info entries hold 44-bit offsets).
// Larger sizes, from a tar header (octal, base-256 or PAX) or a
// directory, fail before anything is allocated for them.
const MaxFileSize = 1 << 44

// addFile splits r into chunks and queues them.
func (p *pipeline) addFile(ctx context.Context, name string, ino *rafs.Inode, r io.Reader) error {
	if ino.Size > MaxFileSize {
		return fmt.Errorf("%s: size %d exceeds the limit of %d bytes (2^44, a blob's uncompressed address space)", name, ino.Size, uint64(MaxFileSize))
	}
	// The size is the header's word: the chunk list grows with the data
	// actually read, so a header declaring petabytes allocates nothing.
	n := (ino.Size + uint64(p.chunkSize) - 1) / uint64(p.chunkSize)
	ino.Chunks = make([]rafs.ChunkInfo, 0, min(n, 1024))
	p.stats.Files++
	remaining := ino.Size
	for i := 0; remaining > 0; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := p.err(); err != nil {
			return err
		}
		sz := uint64(p.chunkSize)
		if remaining < sz {
			sz = remaining
		}
		buf := p.bufs.Get().([]byte)[:sz]
		if got, err := io.ReadFull(r, buf); err != nil {
			p.putBuf(buf)
			at := ino.Size - remaining + uint64(got)
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("data of %s ends at offset %d, header says %d bytes: %w", name, at, ino.Size, io.ErrUnexpectedEOF)
			}
			return fmt.Errorf("read data of %s at offset %d: %w", name, at, err)
		}
		remaining -= sz
		if err := p.addChunk(ino, i, buf, n == 1); err != nil {
			return err
		}
	}
	return nil
}

// addChunk decides the fate of one chunk, in input order.
func (p *pipeline) addChunk(ino *rafs.Inode, idx int, data []byte, whole bool) error {
	size := uint32(len(data))
	d := digester.Sum(p.dig, data)
	fileOff := uint64(idx) * uint64(p.chunkSize)
	p.stats.Chunks++
	p.stats.Bytes += uint64(size)
	if c, ok := p.known[d]; ok {
		c.FileOffset = fileOff
		ino.Chunks = append(ino.Chunks, c)
		p.stats.DedupChunks++
		p.stats.DedupBytes += uint64(size)
		p.putBuf(data)
		return nil
	}
	if len(p.cis) >= rafs.MaxChunksPerBlob {
		return fmt.Errorf("blob has more than %d chunks", rafs.MaxChunksPerBlob)
	}
	ci := uint32(len(p.cis))
	p.cis = append(p.cis, blob.ChunkInfo{UncompressedOffset: p.uncompOff, UncompressedSize: size})
	p.digests = append(p.digests, d)
	info := rafs.ChunkInfo{Digest: d, BlobIndex: p.blobIndex, Index: ci,
		UncompressedOffset: p.uncompOff, UncompressedSize: size, FileOffset: fileOff}
	p.known[d] = info
	ino.Chunks = append(ino.Chunks, info)
	if p.cache != nil {
		if _, err := p.cache.WriteAt(data, int64(p.uncompOff)); err != nil {
			p.putBuf(data)
			return fmt.Errorf("write blob cache: %w", err)
		}
	}
	p.uncompOff += (uint64(size) + rafs.BlockSize - 1) / rafs.BlockSize * rafs.BlockSize
	p.stats.UniqueChunks++
	p.stats.StoredBytes += uint64(size)

	// Upstream's rule: a file made of one chunk smaller than half the
	// batch size joins the current batch; anything else seals it first.
	if p.batchSize > 0 && whole && size < p.batchSize/2 {
		if len(p.batch)+int(size) >= int(p.batchSize) {
			p.flushBatch()
		}
		if p.batch == nil {
			p.batch = p.batches.Get().([]byte)[:0]
		}
		p.members = append(p.members, batchMember{ci: ci, off: uint32(len(p.batch))})
		p.batch = append(p.batch, data...)
		p.putBuf(data)
		p.stats.BatchedChunks++
		return nil
	}
	p.flushBatch()
	p.submit(&job{data: data, ci: ci})
	return nil
}

// close drains the pipeline, completes the CI entries and returns the
// first error.
func (p *pipeline) close() error {
	p.flushBatch()
	close(p.jobs)
	p.wg.Wait()
	close(p.order)
	<-p.cdone
	if err := p.err(); err != nil {
		return err
	}
	p.stats.CompressedOut = p.compOut
	if len(p.comps) != len(p.cis) {
		return fmt.Errorf("internal error: %d chunks committed of %d", len(p.comps), len(p.cis))
	}
	for i := range p.cis {
		c, ci := &p.cis[i], p.comps[i]
		c.CompressedOffset = ci.off
		c.Compressed = ci.packed
		if ci.batch {
			// A batch chunk's CI entry points at its batch: size 0, the
			// context index and the offset inside the batch buffer.
			c.CompressedSize = 0
			c.Compressed = true
			c.Flags = blob.ChunkBatch
			c.Data = uint64(ci.ctx)<<32 | uint64(ci.inOff)
		} else {
			c.CompressedSize = ci.size
		}
	}
	return nil
}

// chunkInfo completes a chunk of this blob with its compressed location,
// for the bootstrap's chunk table. A batch chunk records its batch's
// offset with size 0, flagged BATCH, like its CI entry: readers locate it
// through the blob's CI table.
func (p *pipeline) chunkInfo(c rafs.ChunkInfo) rafs.ChunkInfo {
	if c.BlobIndex != p.blobIndex || int(c.Index) >= len(p.comps) {
		return c
	}
	ci := p.comps[c.Index]
	c.CompressedOffset = ci.off
	c.CompressedSize = ci.size
	if ci.batch {
		c.CompressedSize = 0
	}
	c.Flags = 0
	if ci.packed {
		c.Flags |= rafs.ChunkCompressed
	}
	if ci.batch {
		c.Flags |= rafs.ChunkBatch
	}
	return c
}
