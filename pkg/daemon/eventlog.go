package daemon

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nydus-go/nydus/pkg/daemon/api"
	"github.com/nydus-go/nydus/pkg/fetch"
)

// CloudEvent is one event as the log keeps it and as subscribers get it
// (the API's wire type, api.CloudEvent).
type CloudEvent = api.CloudEvent

// EventTypePrefix is put before an event's kind to make its CloudEvents
// type ("io.nydus-go.nydusd.digest-mismatch").
const EventTypePrefix = "io.nydus-go.nydusd."

// EventLog is the daemon's append-only record of its events, one JSON
// line each, in a file and its one rotated predecessor (path and
// path.1). An event is written (write(2), so the kernel has it even if
// the daemon is killed the next instant) before Append returns: an
// event acknowledged into the log survives a crash of the daemon. A new
// daemon on the same path continues the sequence. The log is bounded:
// past maxBytes the file is rotated, and the oldest events go.
type EventLog struct {
	path, source string
	max          int64

	// mu guards the fields below. It is held across the file's writes
	// (Append, rotation) and reads (Since), which it keeps in order; no
	// other lock is taken under it.
	mu     sync.Mutex
	f      *os.File      // guarded by mu
	size   int64         // guarded by mu
	seq    uint64        // the last sequence number; guarded by mu
	notify chan struct{} // closed (and replaced) at each append; guarded by mu
}

// maxEventLine bounds a line when reading the log back.
const maxEventLine = 1 << 20

// OpenEventLog opens (or creates, mode 0600) the log at path; daemonID
// names the source of its events.
func OpenEventLog(path, daemonID string, maxBytes int64) (*EventLog, error) {
	if maxBytes <= 0 {
		maxBytes = 16 << 20
	}
	l := &EventLog{path: path, source: "nydusd/" + daemonID, max: maxBytes, notify: make(chan struct{})}
	for _, p := range []string{path + ".1", path} {
		if err := readEvents(p, func(e CloudEvent) bool {
			l.seq = max(l.seq, e.Seq())
			return true
		}); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("event log: %w", err)
	}
	l.f, l.size = f, fi.Size()
	return l, nil
}

// readEvents calls fn with each event of a log file, in order, until fn
// returns false. A missing file has none; a line that is not an event
// (the end of a line a crash cut short) is skipped.
func readEvents(path string, fn func(CloudEvent) bool) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("event log: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), maxEventLine)
	for sc.Scan() {
		var e CloudEvent
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.Seq() == 0 {
			continue
		}
		if !fn(e) {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("event log %s: %w", path, err)
	}
	return nil
}

// Append records an event and returns its sequence number.
func (l *EventLog) Append(e fetch.Event) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return 0, errors.New("event log: closed")
	}
	seq := l.seq + 1
	ce := CloudEvent{SpecVersion: "1.0", ID: strconv.FormatUint(seq, 10), Source: l.source, Type: EventTypePrefix + e.Kind,
		Time: time.Now().UTC(), Subject: e.Path, DataContentType: "application/json", Sequence: strconv.FormatUint(seq, 10), Data: e}
	line, err := json.Marshal(ce)
	if err != nil {
		return 0, err
	}
	line = append(line, '\n')
	if l.size+int64(len(line)) > l.max && l.size > 0 {
		if err := l.rotate(); err != nil {
			return 0, err
		}
	}
	if _, err := l.f.Write(line); err != nil {
		return 0, fmt.Errorf("event log: %w", err)
	}
	l.size += int64(len(line))
	l.seq = seq
	close(l.notify)
	l.notify = make(chan struct{})
	return seq, nil
}

// rotate moves the file to path.1 (dropping the older one) and starts a
// new one; mu is held.
func (l *EventLog) rotate() error {
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return fmt.Errorf("event log: rotate: %w", err)
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("event log: rotate: %w", err)
	}
	l.f.Close()
	l.f, l.size = f, 0
	return nil
}

// Last is the sequence number of the last event (0: none yet).
func (l *EventLog) Last() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq
}

// Since returns up to limit events after sequence number seq, in order.
// Events rotated out of the log are gone: the first one returned may
// come later than seq+1.
func (l *EventLog) Since(seq uint64, limit int) ([]CloudEvent, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []CloudEvent
	for _, p := range []string{l.path + ".1", l.path} {
		if err := readEvents(p, func(e CloudEvent) bool {
			if e.Seq() > seq {
				out = append(out, e)
			}
			return len(out) < limit
		}); err != nil {
			return nil, err
		}
		if len(out) >= limit {
			break
		}
	}
	return out, nil
}

// Wait returns when the log holds an event after seq, or ctx ends.
func (l *EventLog) Wait(ctx context.Context, seq uint64) {
	for {
		l.mu.Lock()
		last, ch := l.seq, l.notify
		l.mu.Unlock()
		if last > seq {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// Close closes the log; later Appends fail.
func (l *EventLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	close(l.notify)
	l.notify = make(chan struct{})
	return err
}
