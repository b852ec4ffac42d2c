package api

import (
	"strconv"
	"time"

	"github.com/nydus-go/nydus/pkg/fetch"
)

// CloudEvent is one event of the daemon's event log, as the log keeps it
// and as GET /api/v1/events and the event sink deliver it: a CloudEvents
// 1.0 event in the structured JSON format, with the documented
// "sequence" extension (a decimal string: the event's place in the
// daemon's log, from 1).
type CloudEvent struct {
	SpecVersion     string      `json:"specversion"`
	ID              string      `json:"id"`
	Source          string      `json:"source"`
	Type            string      `json:"type"`
	Time            time.Time   `json:"time"`
	Subject         string      `json:"subject,omitempty"`
	DataContentType string      `json:"datacontenttype"`
	Sequence        string      `json:"sequence"`
	Data            fetch.Event `json:"data"`
}

// Seq is the event's sequence number (0 if it has none).
func (e *CloudEvent) Seq() uint64 {
	n, _ := strconv.ParseUint(e.Sequence, 10, 64)
	return n
}

// FileMetrics is one file's entry in GET /api/v1/metrics/files, whose
// body maps inode numbers (decimal strings) to them: upstream's
// InodeIoStats plus the file's path (an extension).
type FileMetrics struct {
	TotalFops      uint64   `json:"total_fops"`
	DataRead       uint64   `json:"data_read"`
	BlockCountRead []uint64 `json:"block_count_read"`
	FopHits        []uint64 `json:"fop_hits"`
	FopErrors      []uint64 `json:"fop_errors"`
	Path           string   `json:"path,omitempty"`
}

// AccessPattern is one entry of GET /api/v1/metrics/pattern: a file the
// image read, in first-read order.
type AccessPattern struct {
	Ino                  uint64 `json:"ino"`
	NrRead               uint64 `json:"nr_read"`
	FirstAccessTimeSecs  int64  `json:"first_access_time_secs"`
	FirstAccessTimeNanos int64  `json:"first_access_time_nanos"`
	Path                 string `json:"path,omitempty"`
}
