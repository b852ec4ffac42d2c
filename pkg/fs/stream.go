package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nydus-go/nydus/pkg/digester"
	"github.com/nydus-go/nydus/pkg/rafs"
	"github.com/nydus-go/nydus/pkg/storage"
)

// Streaming: many chunks fetched with a few large range requests whose
// bodies are consumed as they arrive. Each stored unit (a plain chunk or
// a batch) is decoded, each chunk checked against its blob's chunk-info
// table, verified, cached and handed to its waiting readers as soon as
// its bytes are in, not when the whole range is. A reader of a chunk
// that a running segment holds waits for it and sends no request of its
// own.
//
// The hot set (the bootstrap's prefetch table and the prefetch files)
// streams this way when the image is mounted: the builder lays those
// files first in each blob, in first-access order, so they come in a few
// segments, the first one small so the first files arrive after one
// round trip. prefetch_all then streams the rest of the image in
// segments of at most merging_size, behind every other kind of request.

// Streaming defaults.
const (
	// hotFirstSegment is the size of a blob's first hot-set segment: small,
	// so the first files are there one round trip after the mount.
	hotFirstSegment = 256 << 10
	// hotMaxSegment bounds the following hot-set segments (each is twice
	// the size of the one before).
	hotMaxSegment = 4 << 20
	// hotWorkers segments of the hot set are in flight at once: enough to
	// hide the round trip between two segments, few enough that the first
	// files get the bandwidth first.
	hotWorkers = 2
	// streamGap is the largest gap between two wanted units that a
	// segment reads through; past it, the next unit starts another range
	// of the same request (a multi-range GET where the backend takes
	// one), up to maxRuns ranges.
	streamGap = 64 << 10
	maxRuns   = 16
	// DefaultMergeSize bounds prefetch_all's requests when merging_size
	// is not set (upstream's default).
	DefaultMergeSize = 1 << 20
)

// chunkRef is a chunk to stream and the file it was wanted for.
type chunkRef struct {
	ino  *Inode
	info rafs.ChunkInfo
}

// segUnit is a stored unit of a segment and the wanted chunks in it.
type segUnit struct {
	u      storage.Unit
	chunks []chunkRef
}

// segment is a range of one blob streamed with one request.
type segment struct {
	blob  uint32
	units []segUnit
	rank  int // first position of its chunks in the wanted order
}

func (s *segment) off() uint64 { return s.units[0].u.Offset }
func (s *segment) end() uint64 {
	u := s.units[len(s.units)-1].u
	return u.Offset + u.Size
}

// streamOptions shape a stream.
type streamOptions struct {
	kind    string
	first   int64 // a blob's first segment's size (0: max)
	max     int64 // the largest segment
	workers int
	lim     *limiter // nil: unlimited
}

// planStream groups the wanted chunks that are neither cached nor on
// their way into segments: per blob, units in stored order; a gap over
// streamGap starts another range of the segment (at most maxRuns), and a
// new segment starts where the segment's stored bytes would exceed its
// size (o.first for a blob's first, doubling up to o.max). Segments come
// out in the order their first chunk was wanted.
func (f *FS) planStream(ctx context.Context, refs []chunkRef, o streamOptions) []*segment {
	hc, _ := f.o.Cache.(cacheHas)
	type unitAt struct {
		segUnit
		rank int
	}
	perBlob := map[uint32]map[uint64]*unitAt{}
	seen := map[[2]uint32]bool{}
	for rank, r := range refs {
		k := [2]uint32{r.info.BlobIndex, r.info.Index}
		if seen[k] {
			continue
		}
		seen[k] = true
		if hc != nil && hc.Has(ctx, f.rd.Blobs[r.info.BlobIndex].BlobID, r.info.Index) {
			continue
		}
		if _, busy := f.spans.Load(k); busy {
			continue
		}
		u, err := f.cr.Unit(ctx, r.info)
		if err != nil {
			// Left to a demand read, which reports it.
			continue
		}
		units := perBlob[r.info.BlobIndex]
		if units == nil {
			units = map[uint64]*unitAt{}
			perBlob[r.info.BlobIndex] = units
		}
		ua := units[u.Offset]
		if ua == nil {
			ua = &unitAt{segUnit: segUnit{u: u}, rank: rank}
			units[u.Offset] = ua
		}
		ua.chunks = append(ua.chunks, r)
	}
	var segs []*segment
	for blob, units := range perBlob {
		list := make([]*unitAt, 0, len(units))
		for _, u := range units {
			list = append(list, u)
		}
		slices.SortFunc(list, func(a, b *unitAt) int { return cmpU64(a.u.Offset, b.u.Offset) })
		limit := o.first
		if limit <= 0 {
			limit = o.max
		}
		var cur *segment
		var bytes int64 // cur's stored bytes, gaps read through included
		runs := 0       // cur's ranges
		for _, u := range list {
			if cur != nil {
				end := cur.end()
				gap := int64(u.u.Offset) - int64(end)
				add := int64(u.u.Size)
				newRun := gap > streamGap
				if !newRun {
					add += gap
				}
				if gap < 0 || bytes+add > limit || (newRun && runs >= maxRuns) {
					segs = append(segs, cur)
					cur = nil
					limit = min(limit*2, o.max)
				} else {
					bytes += add
					if newRun {
						runs++
					}
				}
			}
			if cur == nil {
				cur = &segment{blob: blob, rank: u.rank}
				bytes, runs = int64(u.u.Size), 1
			}
			cur.units = append(cur.units, u.segUnit)
			cur.rank = min(cur.rank, u.rank)
		}
		if cur != nil {
			segs = append(segs, cur)
		}
	}
	slices.SortFunc(segs, func(a, b *segment) int { return a.rank - b.rank })
	return segs
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// stream fetches the wanted chunks with planStream's segments, o.workers
// at a time, in order. It returns when all are done or ctx ends; chunks
// it could not fetch are left to demand reads.
func (f *FS) stream(ctx context.Context, refs []chunkRef, o streamOptions) {
	if f.o.Cache == nil || len(refs) == 0 {
		return
	}
	ctx = withFetchKind(ctx, o.kind)
	// Planning may read blobs' chunk-info tables (to locate batches):
	// logged as a fetch of the first wanted file, like a demand read's.
	var planned atomic.Int64
	began := time.Now()
	segs := f.planStream(context.WithValue(ctx, fetchBytesKey{}, &planned), refs, o)
	if n := planned.Load(); n > 0 && f.flog != nil {
		r := refs[0]
		f.flog.add(Fetch{Start: began.Sub(f.flog.start), Duration: time.Since(began), Kind: o.kind, Path: r.ino.path,
			BlobID: f.rd.Blobs[r.info.BlobIndex].BlobID, Chunk: r.info.Index, Offset: r.info.CompressedOffset, Bytes: n})
	}
	if o.workers <= 0 {
		o.workers = 1
	}
	next := make(chan *segment)
	var wg sync.WaitGroup
	for range min(o.workers, len(segs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range next {
				if ctx.Err() == nil {
					f.streamSegment(ctx, s, o)
				}
			}
		}()
	}
	for _, s := range segs {
		select {
		case next <- s:
		case <-ctx.Done():
		}
	}
	close(next)
	wg.Wait()
}

// streamSegment fetches one segment. It claims the segment's chunks that
// are still neither cached nor on their way (readers of those wait for
// it), streams the range from the first to the last unit holding a
// claimed chunk, and serves each claimed chunk as its unit arrives.
func (f *FS) streamSegment(ctx context.Context, s *segment, o streamOptions) {
	hc, _ := f.o.Cache.(cacheHas)
	bi := f.rd.Blobs[s.blob]
	type claimed struct {
		ref chunkRef
		ch  chan struct{}
	}
	claims := make([][]claimed, len(s.units))
	first, last := -1, -1
	for i, u := range s.units {
		for _, r := range u.chunks {
			k := [2]uint32{r.info.BlobIndex, r.info.Index}
			if hc != nil && hc.Has(ctx, bi.BlobID, r.info.Index) {
				continue
			}
			ch := make(chan struct{})
			if _, busy := f.spans.LoadOrStore(k, ch); busy {
				continue
			}
			claims[i] = append(claims[i], claimed{r, ch})
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	release := func(cs []claimed) {
		for _, c := range cs {
			f.spans.Delete([2]uint32{c.ref.info.BlobIndex, c.ref.info.Index})
			close(c.ch)
		}
	}
	if first < 0 {
		return
	}
	defer func() {
		for i := range claims {
			release(claims[i])
		}
	}()
	// The claimed units' ranges: neighbours closer than streamGap share
	// one, read through.
	type run struct{ from, to int } // unit indexes, inclusive
	var runs []run
	for i := first; i <= last; i++ {
		if len(claims[i]) == 0 {
			continue
		}
		if n := len(runs); n > 0 {
			prev := s.units[runs[n-1].to].u
			if int64(s.units[i].u.Offset)-int64(prev.Offset+prev.Size) <= streamGap {
				runs[n-1].to = i
				continue
			}
		}
		runs = append(runs, run{i, i})
	}
	ranges := make([][2]int64, len(runs))
	var total int64
	for k, r := range runs {
		a, b := s.units[r.from].u, s.units[r.to].u
		ranges[k] = [2]int64{int64(a.Offset), int64(b.Offset + b.Size - a.Offset)}
		total += ranges[k][1]
	}
	off := s.units[first].u.Offset
	if o.lim != nil {
		o.lim.wait(ctx, total)
	}
	began := time.Now()
	var sent atomic.Int64
	fctx := context.WithValue(ctx, fetchBytesKey{}, &sent)
	served := 0
	// attr gives each unit read, with the gap before it, to the file of
	// its first claimed chunk, for the fetch log.
	type attributed struct {
		ref    chunkRef
		off    uint64
		bytes  int64
		chunks int
	}
	var attr []attributed
	err := f.be.ReadRanges(fctx, bi.BlobID, ranges, func(k int, rd io.Reader) error {
		pos := uint64(ranges[k][0])
		for i := runs[k].from; i <= runs[k].to; i++ {
			u := s.units[i].u
			if len(claims[i]) == 0 {
				continue // read through below, or the run's end
			}
			if u.Offset > pos {
				if _, err := io.CopyN(io.Discard, rd, int64(u.Offset-pos)); err != nil {
					return unexpectedEOF(err)
				}
			}
			stored := make([]byte, u.Size)
			if _, err := io.ReadFull(rd, stored); err != nil {
				return err
			}
			attr = append(attr, attributed{ref: claims[i][0].ref, off: u.Offset, bytes: int64(u.Offset + u.Size - pos), chunks: len(claims[i])})
			pos = u.Offset + u.Size
			for _, c := range claims[i] {
				if f.serveStreamed(fctx, c.ref, u, stored) {
					served++
				}
			}
			release(claims[i])
			claims[i] = nil
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		f.Metrics.BackendErrors.Add(1)
		f.o.Log.Warn("streamed range failed; its remaining chunks are left to demand reads", "blob", bi.BlobID, "offset", off, "bytes", total, "ranges", len(ranges), "kind", o.kind, "err", err)
	}
	if f.flog != nil {
		// One entry per file the request served, in stored order, each
		// with the bytes of its units (and of the gaps before them);
		// what a failed request sent past the last served unit goes to
		// the last entry, with the error.
		var fes []Fetch
		idx := map[string]int{}
		for _, a := range attr {
			i, ok := idx[a.ref.ino.path]
			if !ok {
				i = len(fes)
				idx[a.ref.ino.path] = i
				fes = append(fes, Fetch{Start: began.Sub(f.flog.start), Kind: o.kind, Path: a.ref.ino.path,
					BlobID: bi.BlobID, Chunk: a.ref.info.Index, Offset: a.off, Amplified: -1})
			}
			fes[i].Bytes += a.bytes
			fes[i].Amplified += a.chunks
		}
		var logged int64
		for _, fe := range fes {
			logged += fe.Bytes
		}
		if rest := sent.Load() - logged; rest > 0 || err != nil || len(fes) == 0 {
			if len(fes) == 0 {
				r := s.units[first].chunks[0]
				fes = append(fes, Fetch{Start: began.Sub(f.flog.start), Kind: o.kind, Path: r.ino.path, BlobID: bi.BlobID, Chunk: r.info.Index, Offset: off})
			}
			fes[len(fes)-1].Bytes += max(rest, 0)
			if err != nil {
				fes[len(fes)-1].Err = err.Error()
			}
		}
		d := time.Since(began)
		for _, fe := range fes {
			fe.Duration, fe.Amplified = d, max(fe.Amplified, 0)
			f.flog.add(fe)
		}
	}
	f.Metrics.PrefetchedChunks.Add(int64(served))
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// serveStreamed checks, decodes, verifies and caches one streamed chunk;
// false if it failed (counted and logged; a demand read fetches it on
// its own and reports the error to its reader).
func (f *FS) serveStreamed(ctx context.Context, r chunkRef, u storage.Unit, stored []byte) bool {
	bi := f.rd.Blobs[r.info.BlobIndex]
	if err := f.checkRecord(ctx, r.ino, r.info, bi); err != nil {
		return false
	}
	data, err := f.cr.DecodeUnit(ctx, r.info, u, stored)
	if err == nil && (len(data) != int(r.info.UncompressedSize) || digester.Sum(f.dig, data) != r.info.Digest) {
		err = fmt.Errorf("chunk %d failed digest verification", r.info.Index)
		f.Metrics.DigestFailures.Add(1)
		f.o.Events(Event{Kind: "digest-mismatch", BlobID: bi.BlobID, Chunk: r.info.Index, Path: r.ino.path})
	}
	if err != nil {
		f.o.Log.Error("streamed chunk dropped", "blob", bi.BlobID, "chunk", r.info.Index, "file", r.ino.path, "err", err)
		return false
	}
	f.Metrics.FetchedChunks.Add(1)
	if err := f.o.Cache.Put(ctx, bi.BlobID, r.info.Index, int64(r.info.UncompressedOffset), data); err != nil {
		f.o.Log.Warn("caching chunk failed", "blob", bi.BlobID, "chunk", r.info.Index, "err", err)
		return false
	}
	return true
}

// fileRefs returns the chunks of ino in file order.
func (f *FS) fileRefs(ino *Inode) []chunkRef {
	out := make([]chunkRef, 0, len(ino.addrs))
	for _, a := range ino.addrs {
		if info, ok := f.chunks[[2]uint32{a.BlobIndex, a.CIIndex}]; ok {
			out = append(out, chunkRef{ino: ino, info: info})
		}
	}
	return out
}
