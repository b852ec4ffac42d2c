package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nydus-go/nydus/internal/atomicfile"
)

// EventSink delivers the events of an EventLog, in order, to a webhook:
// an http(s) URL or unix:///path/to.sock (POST /events on that socket),
// one CloudEvent per POST (Content-Type application/cloudevents+json).
// An event the sink does not accept is retried, with a backoff up to 5
// s, before any later one: nothing is lost while the sink is down. The
// sequence number of the last event delivered is kept in a cursor file,
// so a restarted daemon carries on where it stopped (at least once: an
// event delivered just before a crash may come again, with the same
// sequence number). Sending never blocks a read: events go to the log.
type EventSink struct {
	target string // redacted URL, for logs
	post   func(ctx context.Context, body []byte) error
	log    *EventLog
	cursor string
	slog   *slog.Logger
	stop   context.CancelFunc
	ctx    context.Context
	done   chan struct{}
	// Delivered is the sequence number of the last event delivered.
	Delivered atomic.Uint64
	// Failed counts delivery attempts the sink did not accept.
	Failed atomic.Int64
}

// NewEventSink starts delivering the events of l to rawURL, from the one
// after the sequence number in the cursor file (created if need be).
// Close stops it.
func NewEventSink(rawURL string, l *EventLog, cursor string, log *slog.Logger) (*EventSink, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("event sink: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	s := &EventSink{target: u.Redacted(), log: l, cursor: cursor, slog: log, done: make(chan struct{})}
	var client *http.Client
	var endpoint string
	switch u.Scheme {
	case "http", "https":
		client, endpoint = &http.Client{Timeout: 5 * time.Second}, rawURL
	case "unix":
		path := u.Path
		if path == "" {
			return nil, fmt.Errorf("event sink %s: no socket path", s.target)
		}
		client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}}}
		endpoint = "http://unix/events"
	default:
		return nil, fmt.Errorf("event sink %s: scheme must be http, https or unix", s.target)
	}
	s.post = func(ctx context.Context, body []byte) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/cloudevents+json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	}
	if b, err := os.ReadFile(cursor); err == nil {
		n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		s.Delivered.Store(n)
	}
	s.ctx, s.stop = context.WithCancel(context.Background())
	go s.run()
	return s, nil
}

func (s *EventSink) run() {
	defer close(s.done)
	for s.ctx.Err() == nil {
		evs, err := s.log.Since(s.Delivered.Load(), 256)
		if err != nil {
			s.slog.Error("event sink: reading the event log", "err", err)
			s.sleep(time.Second)
			continue
		}
		if len(evs) == 0 {
			s.log.Wait(s.ctx, s.Delivered.Load())
			continue
		}
		for _, e := range evs {
			body, _ := json.Marshal(e)
			for backoff := 100 * time.Millisecond; ; backoff = min(backoff*2, 5*time.Second) {
				ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
				err := s.post(ctx, body)
				cancel()
				if err == nil {
					break
				}
				if s.ctx.Err() != nil {
					return
				}
				if n := s.Failed.Add(1); n == 1 || n%100 == 0 {
					// net/http strips passwords from the URLs in its errors.
					s.slog.Warn("event sink; retrying in order", "sink", s.target, "sequence", e.Sequence, "type", e.Type, "failures", n, "err", err)
				}
				s.sleep(backoff)
				if s.ctx.Err() != nil {
					return
				}
			}
			s.Delivered.Store(e.Seq())
			if err := atomicfile.WriteFile(s.cursor, []byte(e.Sequence+"\n"), 0o600); err != nil {
				s.slog.Warn("event sink: saving the cursor", "err", err)
			}
		}
	}
}

func (s *EventSink) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
	}
}

// Close stops delivery after trying, for up to flush, to deliver what the
// log holds.
func (s *EventSink) Close(flush time.Duration) {
	deadline := time.Now().Add(flush)
	for s.Delivered.Load() < s.log.Last() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	s.stop()
	<-s.done
}
