package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nydus-go/nydus/pkg/fetch"
)

// EventRecord is the JSON body POSTed to an event sink for each event.
type EventRecord struct {
	Time     time.Time `json:"time"`
	DaemonID string    `json:"daemon_id,omitempty"`
	fetch.Event
}

// EventSink delivers events asynchronously, one POST per event, to a
// webhook: an http(s) URL or unix:///path/to.sock (POST /events on that
// socket). Send never blocks: when the queue is full the event is
// dropped and counted, so a slow subscriber cannot stall file reads.
type EventSink struct {
	target  string // redacted URL, for logs
	post    func(ctx context.Context, body []byte) error
	q       chan EventRecord
	id      string
	log     *slog.Logger
	done    chan struct{}
	once    sync.Once
	Dropped atomic.Int64 // events dropped because the queue was full
	Failed  atomic.Int64 // events the sink did not accept
}

// NewEventSink starts delivering to rawURL; id is the daemon id put in
// every record. Close stops it.
func NewEventSink(rawURL, id string, log *slog.Logger) (*EventSink, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("event sink: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	s := &EventSink{target: u.Redacted(), q: make(chan EventRecord, 1024), id: id, log: log, done: make(chan struct{})}
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
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	}
	go s.run()
	return s, nil
}

// Send queues an event; it never blocks.
func (s *EventSink) Send(e fetch.Event) {
	select {
	case <-s.done:
		return
	default:
	}
	select {
	case s.q <- EventRecord{Time: time.Now().UTC(), DaemonID: s.id, Event: e}:
	default:
		if s.Dropped.Add(1) == 1 {
			s.log.Warn("event sink queue full; dropping events", "sink", s.target)
		}
	}
}

func (s *EventSink) run() {
	for {
		select {
		case <-s.done:
			return
		case r := <-s.q:
			body, _ := json.Marshal(r)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := s.post(ctx, body)
			cancel()
			if err != nil {
				if s.Failed.Add(1) == 1 || s.Failed.Load()%100 == 0 {
					// net/http strips passwords from the URLs in its errors.
					s.log.Warn("event sink", "sink", s.target, "kind", r.Kind, "err", err)
				}
			}
		}
	}
}

// Close stops delivery after trying to flush queued events for up to
// the given time.
func (s *EventSink) Close(flush time.Duration) {
	deadline := time.Now().Add(flush)
	for len(s.q) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	s.once.Do(func() { close(s.done) })
}
