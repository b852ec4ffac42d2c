package fetch

import (
	"context"
	"io"
	"sync"

	"github.com/nydus-go/nydus/pkg/storage"
)

// countingBackend counts what the backend answers in an engine's
// metrics, and admits each request by priority.
type countingBackend struct {
	Backend
	m    *Metrics
	prio *priorities
}

func (c countingBackend) ReadRange(ctx context.Context, blobID string, off, n int64) ([]byte, error) {
	leave, err := c.prio.enter(ctx)
	if err != nil {
		return nil, err
	}
	b, err := c.Backend.ReadRange(ctx, blobID, off, n)
	leave()
	if err == nil {
		c.m.BackendReads.Add(1)
		c.m.FetchedBytes.Add(int64(len(b)))
		addFetchedBytes(ctx, int64(len(b)))
	}
	return b, err
}

// OpenRange streams a range (storage.OpenRange), counting its bytes as
// they arrive; the request holds its priority until the stream is closed.
func (c countingBackend) OpenRange(ctx context.Context, blobID string, off, n int64) (io.ReadCloser, error) {
	leave, err := c.prio.enter(ctx)
	if err != nil {
		return nil, err
	}
	rc, err := storage.OpenRange(ctx, c.Backend, blobID, off, n)
	if err != nil {
		leave()
		return nil, err
	}
	c.m.BackendReads.Add(1)
	return &countedStream{countedReader: countedReader{r: rc, ctx: ctx, m: c.m}, rc: rc, leave: leave}, nil
}

// countedStream is a streamed range whose bytes are counted as they are
// read; closing it ends its request's priority.
type countedStream struct {
	countedReader
	rc    io.ReadCloser
	leave func()
	once  sync.Once
}

func (s *countedStream) Close() error {
	s.once.Do(s.leave)
	return s.rc.Close()
}

// ReadRanges reads several ranges of a blob (storage.ReadRanges), with
// one request where the backend can, counting the bytes as they arrive;
// it holds its priority until the last range is read.
func (c countingBackend) ReadRanges(ctx context.Context, blobID string, ranges [][2]int64, fn func(i int, r io.Reader) error) error {
	leave, err := c.prio.enter(ctx)
	if err != nil {
		return err
	}
	defer leave()
	if _, ok := c.Backend.(storage.MultiRangeReader); ok {
		c.m.BackendReads.Add(1)
	} else {
		c.m.BackendReads.Add(int64(len(ranges)))
	}
	return storage.ReadRanges(ctx, c.Backend, blobID, ranges, func(i int, r io.Reader) error {
		return fn(i, &countedReader{r: r, ctx: ctx, m: c.m})
	})
}

// countedReader counts a range's bytes in an engine's metrics and its
// fetch's byte counter.
type countedReader struct {
	r   io.Reader
	ctx context.Context
	m   *Metrics
}

func (s *countedReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.m.FetchedBytes.Add(int64(n))
		addFetchedBytes(s.ctx, int64(n))
	}
	return n, err
}
