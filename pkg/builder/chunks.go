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

// job is one chunk travelling through the pipeline.
type job struct {
	ino    *rafs.Inode
	idx    int
	data   []byte // uncompressed, from the pool
	digest digester.Digest
	comp   []byte // compressed bytes (nil: store data raw)
	skip   bool   // a worker saw the digest already claimed
	err    error
	done   chan struct{}
}

// pipeline hashes and compresses chunks on several goroutines and
// commits them strictly in input order, so the output does not depend on
// scheduling.
type pipeline struct {
	chunkSize uint32
	comp      compress.Algorithm
	dig       digester.Algorithm
	blobIndex uint32
	out       dataWriter
	cache     io.WriterAt // optional uncompressed blob.data

	jobs  chan *job
	order chan *job
	pool  sync.Pool
	wg    sync.WaitGroup
	cdone chan struct{}

	claimed sync.Map // digest -> struct{}: some job will store it

	// Owned by the committer goroutine.
	known     map[digester.Digest]rafs.ChunkInfo
	cis       []blob.ChunkInfo
	digests   []digester.Digest
	uncompOff uint64
	compBytes uint64
	stats     Stats
	commitErr error
	errMu     sync.Mutex
	firstErr  error
}

// Stats counts what a build wrote and deduplicated.
type Stats struct {
	Files         int    `json:"files"`
	Chunks        int    `json:"chunks"`
	UniqueChunks  int    `json:"unique_chunks"`
	DedupChunks   int    `json:"dedup_chunks"`
	Bytes         uint64 `json:"bytes"`
	DedupBytes    uint64 `json:"dedup_bytes"`
	StoredBytes   uint64 `json:"stored_bytes"`
	CompressedOut uint64 `json:"compressed_bytes"`
}

func newPipeline(chunkSize uint32, comp compress.Algorithm, dig digester.Algorithm, workers int, blobIndex uint32, known map[digester.Digest]rafs.ChunkInfo, out dataWriter, cache io.WriterAt) *pipeline {
	if workers < 1 {
		workers = 1
	}
	if known == nil {
		known = map[digester.Digest]rafs.ChunkInfo{}
	}
	p := &pipeline{
		chunkSize: chunkSize, comp: comp, dig: dig, blobIndex: blobIndex,
		out: out, cache: cache, known: known,
		jobs:  make(chan *job, workers*2),
		order: make(chan *job, workers*2+2),
		cdone: make(chan struct{}),
	}
	p.pool.New = func() any { return make([]byte, chunkSize) }
	for d := range known {
		p.claimed.Store(d, struct{}{})
	}
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
		j.digest = digester.Sum(p.dig, j.data)
		// Digests of parent and dictionary chunks are pre-claimed, so a
		// worker compresses only data that may be new.
		if _, loaded := p.claimed.LoadOrStore(j.digest, struct{}{}); loaded {
			j.skip = true
		} else {
			j.comp, j.err = p.compress(j.data)
		}
		close(j.done)
	}
}

func (p *pipeline) compress(data []byte) ([]byte, error) {
	if p.comp == compress.None {
		return nil, nil
	}
	c, err := compress.Compress(p.comp, nil, data)
	if err != nil {
		return nil, err
	}
	if len(c) >= len(data) {
		return nil, nil // stored raw, as upstream does
	}
	return c, nil
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
	for j := range p.order {
		<-j.done
		if p.commitErr == nil {
			p.commitErr = p.commit(j)
			if p.commitErr != nil {
				p.fail(p.commitErr)
			}
		}
		p.pool.Put(j.data[:cap(j.data)])
	}
}

func (p *pipeline) commit(j *job) error {
	if j.err != nil {
		return j.err
	}
	size := uint32(len(j.data))
	fileOff := uint64(j.idx) * uint64(p.chunkSize)
	p.stats.Chunks++
	p.stats.Bytes += uint64(size)
	if c, ok := p.known[j.digest]; ok {
		c.FileOffset = fileOff
		j.ino.Chunks[j.idx] = c
		p.stats.DedupChunks++
		p.stats.DedupBytes += uint64(size)
		return nil
	}
	comp := j.comp
	if j.skip && comp == nil {
		// The worker skipped compression because another job claimed
		// the digest, but this job is the first in order: compress now.
		var err error
		if comp, err = p.compress(j.data); err != nil {
			return err
		}
	}
	stored := comp
	compressed := stored != nil
	if !compressed {
		stored = j.data
	}
	off, err := p.out.WriteChunkData(stored)
	if err != nil {
		return fmt.Errorf("write blob: %w", err)
	}
	if len(p.cis) >= rafs.MaxChunksPerBlob {
		return fmt.Errorf("blob has more than %d chunks", rafs.MaxChunksPerBlob)
	}
	ci := blob.ChunkInfo{
		CompressedOffset:   off,
		CompressedSize:     uint32(len(stored)),
		UncompressedOffset: p.uncompOff,
		UncompressedSize:   size,
		Compressed:         compressed,
	}
	if p.cache != nil {
		if _, err := p.cache.WriteAt(j.data, int64(p.uncompOff)); err != nil {
			return fmt.Errorf("write blob cache: %w", err)
		}
	}
	info := rafs.ChunkInfo{
		Digest:             j.digest,
		BlobIndex:          p.blobIndex,
		CompressedSize:     ci.CompressedSize,
		UncompressedSize:   size,
		CompressedOffset:   off,
		UncompressedOffset: p.uncompOff,
		FileOffset:         fileOff,
		Index:              uint32(len(p.cis)),
	}
	if compressed {
		info.Flags |= rafs.ChunkCompressed
	}
	p.cis = append(p.cis, ci)
	p.digests = append(p.digests, j.digest)
	p.known[j.digest] = info
	j.ino.Chunks[j.idx] = info
	p.uncompOff += (uint64(size) + rafs.BlockSize - 1) / rafs.BlockSize * rafs.BlockSize
	p.compBytes += uint64(len(stored))
	p.stats.UniqueChunks++
	p.stats.StoredBytes += uint64(size)
	p.stats.CompressedOut += uint64(len(stored))
	return nil
}

// addFile splits r into chunks and queues them.
func (p *pipeline) addFile(ctx context.Context, name string, ino *rafs.Inode, r io.Reader) error {
	n := (ino.Size + uint64(p.chunkSize) - 1) / uint64(p.chunkSize)
	ino.Chunks = make([]rafs.ChunkInfo, n)
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
		buf := p.pool.Get().([]byte)[:sz]
		if _, err := io.ReadFull(r, buf); err != nil {
			p.pool.Put(buf[:cap(buf)])
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("data of %s ends at offset %d, header says %d bytes: %w", name, ino.Size-remaining, ino.Size, io.ErrUnexpectedEOF)
			}
			return fmt.Errorf("read data of %s at offset %d: %w", name, ino.Size-remaining, err)
		}
		j := &job{ino: ino, idx: i, data: buf, done: make(chan struct{})}
		p.order <- j
		p.jobs <- j
		remaining -= sz
	}
	return nil
}

// close drains the pipeline and returns the first error.
func (p *pipeline) close() error {
	close(p.jobs)
	p.wg.Wait()
	close(p.order)
	<-p.cdone
	return p.err()
}
