package fetch

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

// Streaming defaults: the shape of the hot-set stream (StreamOptions
// First, Max and Workers) and of prefetch_all's.
const (
	// HotFirstSegment is the size of a blob's first hot-set segment: small,
	// so the first files are there one round trip after the mount.
	HotFirstSegment = 256 << 10
	// HotMaxSegment bounds the following hot-set segments (each is four
	// times the size of the one before): large, so a hot set of tens of
	// megabytes comes in a handful of requests.
	HotMaxSegment = 8 << 20
	// HotWorkers segments of the hot set are in flight at once: enough to
	// hide the round trip between two segments, few enough that the first
	// files get the bandwidth first.
	HotWorkers = 2
	// DefaultMergeSize bounds prefetch_all's requests when merging_size
	// is not set (upstream's default).
	DefaultMergeSize = 1 << 20
)

// Bounds of a segment's ranges.
const (
	// streamGap is the largest gap between two wanted units that a
	// segment reads through; past it, the next unit starts another range
	// of the same request (a multi-range GET where the backend takes
	// one), up to maxRuns ranges.
	streamGap = 64 << 10
	maxRuns   = 16
)

// segUnit is a stored unit of a segment and the wanted chunks in it.
type segUnit struct {
	u      storage.Unit
	chunks []Ref
}

// segment is a range of one blob streamed with one request.
type segment struct {
	blob  uint32
	units []segUnit
	rank  int // first position of its chunks in the wanted order
}

func (s *segment) end() uint64 {
	u := s.units[len(s.units)-1].u
	return u.Offset + u.Size
}

// StreamOptions shape a stream.
type StreamOptions struct {
	// Kind is the fetch kind of the stream's requests (the fetch log,
	// priorities).
	Kind string
	// First is a blob's first segment's size (0: Max).
	First int64
	// Max is the largest segment, in stored bytes.
	Max int64
	// Workers is how many segments are in flight at once (0: 1).
	Workers int
	// Limit paces the stream's stored bytes (nil: unlimited); streams
	// given the same Limiter share its rate.
	Limit *Limiter
}

// planStream groups the wanted chunks that are neither cached nor on
// their way into segments: per blob, units in stored order; a gap over
// streamGap starts another range of the segment (at most maxRuns), and a
// new segment starts where the segment's stored bytes would exceed its
// size (o.First for a blob's first, then four times the one before, up to
// o.Max). Segments come out in the order their first chunk was wanted.
func (e *Engine) planStream(ctx context.Context, refs []Ref, o StreamOptions) []*segment {
	hc, _ := e.o.Cache.(cacheHas)
	type unitAt struct {
		segUnit
		rank int
	}
	perBlob := map[uint32]map[uint64]*unitAt{}
	seen := map[[2]uint32]bool{}
	for rank, r := range refs {
		k := [2]uint32{r.Info.BlobIndex, r.Info.Index}
		if seen[k] {
			continue
		}
		seen[k] = true
		bi := e.rd.Blobs[r.Info.BlobIndex]
		if hc != nil && hc.Has(ctx, bi.BlobID, r.Info.Index) {
			continue
		}
		if _, busy := e.spans.Load(k); busy {
			continue
		}
		// Another blob of a node's cache may hold the same content.
		if data, ok := e.shared(ctx, r.Info); ok && e.checkRecord(ctx, r.Path, r.Info, bi) == nil && e.put(ctx, bi, r.Info, data) {
			continue
		}
		u, err := e.cr.Unit(ctx, r.Info)
		if err != nil {
			// Left to a demand read, which reports it.
			continue
		}
		units := perBlob[r.Info.BlobIndex]
		if units == nil {
			units = map[uint64]*unitAt{}
			perBlob[r.Info.BlobIndex] = units
		}
		ua := units[u.Offset]
		if ua == nil {
			ua = &unitAt{segUnit: segUnit{u: u}, rank: rank}
			units[u.Offset] = ua
		}
		if u.Size > ua.u.Size {
			// A zran context's later chunk needs more of its input:
			// the unit grows to hold every wanted chunk.
			ua.u = u
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
		limit := o.First
		if limit <= 0 {
			limit = o.Max
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
				// Zran units overlap: the next context starts before
				// the last one's input ends. The stream reads the
				// shared bytes once.
				overlap := gap < 0 && u.u.Zran && cur.units[len(cur.units)-1].u.Zran && int64(u.u.Offset+u.u.Size) > int64(end)
				if (gap < 0 && !overlap) || bytes+add > limit || (newRun && runs >= maxRuns) {
					segs = append(segs, cur)
					cur = nil
					limit = min(limit*4, o.Max)
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

// Stream fetches the wanted chunks into the cache with planStream's
// segments, o.Workers at a time, in order (it does nothing without a
// Cache). It returns when all are done or ctx ends; chunks it could not
// fetch are left to demand reads (Chunk), which report their errors.
// refs are wanted in order; each Ref's Info is one of the engine's
// chunks.
func (e *Engine) Stream(ctx context.Context, refs []Ref, o StreamOptions) {
	if e.o.Cache == nil || len(refs) == 0 {
		return
	}
	ctx = WithKind(ctx, o.Kind)
	// Planning may read blobs' chunk-info tables (to locate batches):
	// logged as a fetch of the first wanted file, like a demand read's.
	var planned atomic.Int64
	began := time.Now()
	segs := e.planStream(context.WithValue(ctx, fetchBytesKey{}, &planned), refs, o)
	if n := planned.Load(); n > 0 && e.flog != nil {
		r := refs[0]
		e.flog.add(Entry{Start: began.Sub(e.flog.start), Duration: time.Since(began), Kind: o.Kind, Path: r.Path,
			BlobID: e.rd.Blobs[r.Info.BlobIndex].BlobID, Chunk: r.Info.Index, Offset: r.Info.CompressedOffset, Bytes: n})
	}
	if o.Workers <= 0 {
		o.Workers = 1
	}
	next := make(chan *segment)
	var wg sync.WaitGroup
	for range min(o.Workers, len(segs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range next {
				if ctx.Err() == nil {
					e.streamSegment(ctx, s, o)
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
func (e *Engine) streamSegment(ctx context.Context, s *segment, o StreamOptions) {
	hc, _ := e.o.Cache.(cacheHas)
	bi := e.rd.Blobs[s.blob]
	type claimed struct {
		ref Ref
		ch  chan struct{}
	}
	claims := make([][]claimed, len(s.units))
	first, last := -1, -1
	for i, u := range s.units {
		for _, r := range u.chunks {
			k := [2]uint32{r.Info.BlobIndex, r.Info.Index}
			if hc != nil && hc.Has(ctx, bi.BlobID, r.Info.Index) {
				continue
			}
			ch := make(chan struct{})
			if _, busy := e.spans.LoadOrStore(k, ch); busy {
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
			e.spans.Delete([2]uint32{c.ref.Info.BlobIndex, c.ref.Info.Index})
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
		a, end := s.units[r.from].u, uint64(0)
		for i := r.from; i <= r.to; i++ {
			if len(claims[i]) > 0 {
				end = max(end, s.units[i].u.Offset+s.units[i].u.Size)
			}
		}
		ranges[k] = [2]int64{int64(a.Offset), int64(end - a.Offset)}
		total += ranges[k][1]
	}
	off := s.units[first].u.Offset
	if o.Limit != nil {
		o.Limit.wait(ctx, total)
	}
	began := time.Now()
	var sent atomic.Int64
	fctx := context.WithValue(ctx, fetchBytesKey{}, &sent)
	served := 0
	// attr gives each unit read, with the gap before it, to the file of
	// its first claimed chunk, for the fetch log.
	type attributed struct {
		ref    Ref
		off    uint64
		bytes  int64
		chunks int
	}
	var attr []attributed
	err := e.be.ReadRanges(fctx, bi.BlobID, ranges, func(k int, rd io.Reader) error {
		pos := uint64(ranges[k][0])
		var prev []byte // the last unit read
		for i := runs[k].from; i <= runs[k].to; i++ {
			u := s.units[i].u
			if len(claims[i]) == 0 {
				continue // read through below, or the run's end
			}
			if u.Offset > pos {
				if _, err := io.CopyN(io.Discard, rd, int64(u.Offset-pos)); err != nil {
					return unexpectedEOF(err)
				}
				pos = u.Offset
			}
			// A zran unit may start inside the previous one: its
			// first bytes were read with it.
			stored := make([]byte, u.Size)
			have := copy(stored, prev[max(0, len(prev)-int(pos-u.Offset)):])
			if _, err := io.ReadFull(rd, stored[have:]); err != nil {
				return err
			}
			attr = append(attr, attributed{ref: claims[i][0].ref, off: u.Offset, bytes: max(int64(u.Offset+u.Size)-int64(pos), 0), chunks: len(claims[i])})
			if end := u.Offset + u.Size; end > pos {
				pos, prev = end, stored
			}
			for _, c := range claims[i] {
				if e.serveStreamed(fctx, c.ref, u, stored) {
					served++
				}
			}
			release(claims[i])
			claims[i] = nil
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		e.Metrics.BackendErrors.Add(1)
		e.o.Logger.Warn("streamed range failed; its remaining chunks are left to demand reads", "blob", bi.BlobID, "offset", off, "bytes", total, "ranges", len(ranges), "kind", o.Kind, "err", err)
	}
	if e.flog != nil {
		// One entry per file the request served, in stored order, each
		// with the bytes of its units (and of the gaps before them);
		// what a failed request sent past the last served unit goes to
		// the last entry, with the error.
		var fes []Entry
		idx := map[string]int{}
		for _, a := range attr {
			i, ok := idx[a.ref.Path]
			if !ok {
				i = len(fes)
				idx[a.ref.Path] = i
				fes = append(fes, Entry{Start: began.Sub(e.flog.start), Kind: o.Kind, Path: a.ref.Path,
					BlobID: bi.BlobID, Chunk: a.ref.Info.Index, Offset: a.off, Amplified: -1})
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
				fes = append(fes, Entry{Start: began.Sub(e.flog.start), Kind: o.Kind, Path: r.Path, BlobID: bi.BlobID, Chunk: r.Info.Index, Offset: off})
			}
			fes[len(fes)-1].Bytes += max(rest, 0)
			if err != nil {
				fes[len(fes)-1].Err = err.Error()
			}
		}
		d := time.Since(began)
		for _, fe := range fes {
			fe.Duration, fe.Amplified = d, max(fe.Amplified, 0)
			e.flog.add(fe)
		}
	}
	e.Metrics.PrefetchedChunks.Add(int64(served))
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
func (e *Engine) serveStreamed(ctx context.Context, r Ref, u storage.Unit, stored []byte) bool {
	bi := e.rd.Blobs[r.Info.BlobIndex]
	if err := e.checkRecord(ctx, r.Path, r.Info, bi); err != nil {
		return false
	}
	data, err := e.cr.DecodeUnit(ctx, r.Info, u, stored)
	if err == nil && (len(data) != int(r.Info.UncompressedSize) || digester.Sum(e.dig, data) != r.Info.Digest) {
		err = fmt.Errorf("chunk %d failed digest verification", r.Info.Index)
		e.Metrics.DigestFailures.Add(1)
		e.o.Events(Event{Kind: "digest-mismatch", BlobID: bi.BlobID, Chunk: r.Info.Index, Path: r.Path})
	}
	if err != nil {
		e.o.Logger.Error("streamed chunk dropped", "blob", bi.BlobID, "chunk", r.Info.Index, "file", r.Path, "err", err)
		return false
	}
	e.Metrics.FetchedChunks.Add(1)
	return e.put(ctx, bi, r.Info, data)
}
