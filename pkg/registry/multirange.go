package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
)

// MaxRanges bounds the ranges of one multi-range request (its Range
// header stays short, and servers' limits are not reached).
const MaxRanges = 32

// ReadRanges reads several ranges of blob digest with one request
// ("Range: bytes=a-b,c-d,..."), calling fn with each range's index and a
// reader of its bytes, in order, as the answer streams in. The ranges
// must be in increasing order and not overlap. A multipart/byteranges
// answer is split by its parts' Content-Range, each of which must be the
// range asked for; a single 206 range covering them all is skipped
// through. A 200 with the whole blob, from a server known to ignore
// Range, is skipped through too (one pass serves every range); from any
// other server it is dropped unread and the ranges are sent one by one,
// and so are later calls, as long as single ranges are honoured: a cache
// that keeps blobs by slice (nginx's slice module) answers multi-range
// requests with the whole blob, fetching every slice of it. A server
// that refuses the request (400 or 416) is remembered and later calls
// send the ranges one by one (OpenRange); so is a single range, or more
// than MaxRanges. Sending is retried as ReadRange's is, unless fn has
// been called.
func (c *Client) ReadRanges(ctx context.Context, digest string, ranges [][2]int64, fn func(i int, r io.Reader) error) error {
	if !strings.Contains(digest, ":") {
		digest = "sha256:" + digest
	}
	for i, r := range ranges {
		if r[0] < 0 || r[1] <= 0 || (i > 0 && r[0] < ranges[i-1][0]+ranges[i-1][1]) {
			return fmt.Errorf("registry %s: blob %s: ranges must be non-empty, increasing and disjoint: %v", c.cfg, digest, ranges)
		}
	}
	if len(ranges) == 1 || len(ranges) > MaxRanges || c.singleRanges.Load() || (c.multiWhole.Load() && !c.ignoresRange.Load()) {
		return c.oneByOne(ctx, digest, ranges, fn)
	}
	called := false
	var refused bool
	err := c.retry(ctx, func(ctx context.Context) error {
		if called {
			return &permanentError{errors.New("multi-range answer failed after its first range was consumed")}
		}
		var err error
		refused, err = c.readRanges(ctx, digest, ranges, func(i int, r io.Reader) error {
			called = true
			return fn(i, r)
		})
		return err
	})
	if refused && !called {
		// Remembered: later calls go straight to single ranges.
		c.singleRanges.Store(true)
		return c.oneByOne(ctx, digest, ranges, fn)
	}
	if errors.Is(err, errWholeAnswer) && !called {
		// Single ranges, until one tells that the server ignores those
		// too: then the rest in one pass.
		for i, r := range ranges {
			if c.ignoresRange.Load() {
				return c.ReadRanges(ctx, digest, ranges[i:], func(j int, rd io.Reader) error { return fn(i+j, rd) })
			}
			if err := c.oneByOne(ctx, digest, [][2]int64{r}, func(_ int, rd io.Reader) error { return fn(i, rd) }); err != nil {
				return err
			}
		}
		return nil
	}
	return err
}

// errWholeAnswer is readRanges' error for a multi-range request answered
// with the whole blob by a server not known to ignore single ranges.
var errWholeAnswer = &permanentError{errors.New("multi-range request answered with the whole blob")}

// oneByOne reads ranges with one request each.
func (c *Client) oneByOne(ctx context.Context, digest string, ranges [][2]int64, fn func(i int, r io.Reader) error) error {
	for i, r := range ranges {
		rc, err := c.OpenRange(ctx, digest, r[0], r[1])
		if err != nil {
			return err
		}
		err = fn(i, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// readRanges sends one multi-range request; refused reports a 400 or 416
// answer (the server takes no multi-range requests).
func (c *Client) readRanges(ctx context.Context, digest string, ranges [][2]int64, fn func(i int, r io.Reader) error) (refused bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+digest, nil)
	if err != nil {
		return false, &permanentError{err}
	}
	specs := make([]string, len(ranges))
	for i, r := range ranges {
		specs[i] = strconv.FormatInt(r[0], 10) + "-" + strconv.FormatInt(r[0]+r[1]-1, 10)
	}
	req.Header.Set("Range", "bytes="+strings.Join(specs, ","))
	what := fmt.Sprintf("registry %s: blob %s bytes %s", c.cfg, digest, strings.Join(specs, ","))
	resp, err := c.client().Do(req)
	if err != nil {
		return false, fmt.Errorf("registry %s: GET blob %s: %w", c.cfg, digest, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		if !c.ignoresRange.Load() {
			// Perhaps only multi-range requests are answered whole: try
			// single ranges (which tell, see OpenRange) rather than read
			// the blob.
			c.multiWhole.Store(true)
			return false, errWholeAnswer
		}
		// A server that ignores Range: one pass through the blob.
		return false, skipThrough(resp.Body, 0, ranges, fn, what)
	case http.StatusBadRequest, http.StatusRequestedRangeNotSatisfiable:
		return true, &permanentError{fmt.Errorf("%s: HTTP %s", what, resp.Status)}
	case http.StatusNotFound, http.StatusUnauthorized, http.StatusForbidden:
		return false, &permanentError{fmt.Errorf("%s: HTTP %s", what, resp.Status)}
	default:
		return false, fmt.Errorf("%s: HTTP %s", what, resp.Status)
	}
	mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt != "multipart/byteranges" {
		// One range covering them all.
		start, end, err := contentRange(resp.Header.Get("Content-Range"))
		last := ranges[len(ranges)-1]
		if err != nil || start > ranges[0][0] || end < last[0]+last[1]-1 {
			return false, &permanentError{fmt.Errorf("%s: a single-part answer with Content-Range %q does not cover the ranges", what, resp.Header.Get("Content-Range"))}
		}
		return false, skipThrough(io.LimitReader(resp.Body, end-start+1), start, ranges, fn, what)
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	for i, r := range ranges {
		part, err := mr.NextPart()
		if err != nil {
			return false, fmt.Errorf("%s: part %d: %w", what, i, unexpected(err))
		}
		start, end, err := contentRange(part.Header.Get("Content-Range"))
		if err != nil || start != r[0] || end != r[0]+r[1]-1 {
			return false, &permanentError{fmt.Errorf("%s: part %d has Content-Range %q, want bytes %d-%d", what, i, part.Header.Get("Content-Range"), r[0], r[0]+r[1]-1)}
		}
		er := &exactReader{r: part, n: r[1], what: fmt.Sprintf("%s: part %d", what, i)}
		if err := fn(i, er); err != nil {
			return false, err
		}
		if er.n > 0 {
			if _, err := io.Copy(io.Discard, er); err != nil {
				return false, err
			}
		}
	}
	// Read the closing boundary, so the connection goes back to the pool.
	io.CopyN(io.Discard, resp.Body, 4096)
	return false, nil
}

// skipThrough calls fn for each range of a body that starts at offset
// pos, discarding the bytes between them.
func skipThrough(body io.Reader, pos int64, ranges [][2]int64, fn func(i int, r io.Reader) error, what string) error {
	for i, r := range ranges {
		if r[0] > maxSkip {
			return fmt.Errorf("%s: offset %d is too far to skip", what, r[0])
		}
		if _, err := io.CopyN(io.Discard, body, r[0]-pos); err != nil {
			return fmt.Errorf("%s: skipping to range %d: %w", what, i, unexpected(err))
		}
		er := &exactReader{r: body, n: r[1], what: fmt.Sprintf("%s: range %d", what, i)}
		if err := fn(i, er); err != nil {
			return err
		}
		if _, err := io.Copy(io.Discard, er); err != nil {
			return err
		}
		pos = r[0] + r[1]
	}
	return nil
}

// contentRange parses "bytes START-END/TOTAL".
func contentRange(v string) (start, end int64, err error) {
	if _, err := fmt.Sscanf(v, "bytes %d-%d/", &start, &end); err != nil || end < start {
		return 0, 0, fmt.Errorf("bad Content-Range %q", v)
	}
	return start, end, nil
}
