package daemon

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nydus-go/nydus/pkg/fetch"
)

// TestEventLog: events get increasing sequence numbers, a reopened log
// goes on from the last one, Since reads them back in order, and the log
// stays within its bound by rotating.
func TestEventLog(t *testing.T) {
	p := filepath.Join(t.TempDir(), "api.sock.events")
	l, err := OpenEventLog(p, "d1", 4096)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if seq, err := l.Append(fetch.Event{Kind: "mount", Path: "/x"}); err != nil || seq != uint64(i+1) {
			t.Fatalf("append %d: %d, %v", i, seq, err)
		}
	}
	l.Close()
	// A new daemon on the same path (a restart, a failover) goes on.
	l, err = OpenEventLog(p, "d1", 4096)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if seq, _ := l.Append(fetch.Event{Kind: "umount"}); seq != 11 {
		t.Fatalf("after a reopen: sequence %d, want 11", seq)
	}
	evs, err := l.Since(8, 100)
	if err != nil || len(evs) != 3 || evs[0].Seq() != 9 || evs[2].Seq() != 11 || evs[2].Type != EventTypePrefix+"umount" || evs[0].Source != "nydusd/d1" {
		t.Fatalf("since 8: %+v, %v", evs, err)
	}
	// Bounded: many more events rotate the file; the newest stay.
	for i := 0; i < 200; i++ {
		l.Append(fetch.Event{Kind: "backend-error", Err: "x"})
	}
	all, _ := l.Since(0, 1000)
	if len(all) == 0 || all[len(all)-1].Seq() != 211 || len(all) >= 211 {
		t.Fatalf("after rotation: %d events, last %d", len(all), all[len(all)-1].Seq())
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq() != all[i-1].Seq()+1 {
			t.Fatalf("a gap in the events kept: %d then %d", all[i-1].Seq(), all[i].Seq())
		}
	}
}

// TestEventSinkDown: with the sink down, 1,000 events are recorded; when
// it comes back, every one is delivered, in order, once.
func TestEventSinkDown(t *testing.T) {
	var up atomic.Bool
	var mu sync.Mutex
	var got []uint64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		b, _ := io.ReadAll(r.Body)
		var e CloudEvent
		if json.Unmarshal(b, &e) != nil || r.Header.Get("Content-Type") != "application/cloudevents+json" {
			http.Error(w, "bad event", 400)
			return
		}
		mu.Lock()
		got = append(got, e.Seq())
		mu.Unlock()
	}))
	defer srv.Close()
	dir := t.TempDir()
	l, err := OpenEventLog(filepath.Join(dir, "events"), "d1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	s, err := NewEventSink(srv.URL, l, filepath.Join(dir, "events.cursor"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(0)
	for i := 0; i < 1000; i++ {
		l.Append(fetch.Event{Kind: "backend-error", Chunk: uint32(i)})
	}
	time.Sleep(300 * time.Millisecond)
	if s.Failed.Load() == 0 {
		t.Fatal("the sink was down and no delivery failed")
	}
	up.Store(true)
	deadline := time.Now().Add(20 * time.Second)
	for s.Delivered.Load() < 1000 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 1000 events delivered", s.Delivered.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1000 {
		t.Fatalf("%d deliveries, want 1000", len(got))
	}
	for i, seq := range got {
		if seq != uint64(i+1) {
			t.Fatalf("delivery %d is event %d", i, seq)
		}
	}
}

// TestEventsWait: a subscriber waiting for events after the last one
// returns when one comes.
func TestEventsWait(t *testing.T) {
	l, err := OpenEventLog(filepath.Join(t.TempDir(), "events"), "d1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l.Wait(ctx, 0)
		close(done)
	}()
	time.Sleep(50 * time.Millisecond)
	l.Append(fetch.Event{Kind: "mount"})
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Wait did not return on an event")
	}
}
