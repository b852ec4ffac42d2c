package daemon

import (
	"maps"
	"net/http"
	"slices"
	"sort"
	"strconv"

	"github.com/nydus-go/nydus/pkg/daemon/api"
	"github.com/nydus-go/nydus/pkg/errdefs"
	nfs "github.com/nydus-go/nydus/pkg/fs"
)

// statsTarget picks the image of a metrics request: ?id=, or the only
// image mounted.
func (d *Daemon) statsTarget(id string) (*instance, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if id != "" {
		if inst, ok := d.mounts[id]; ok {
			return inst, nil
		}
		return nil, errdefs.Errorf(errdefs.ErrNotFound, "no image mounted at %q", id)
	}
	if len(d.mounts) == 1 {
		for _, inst := range d.mounts {
			return inst, nil
		}
	}
	return nil, errdefs.Errorf(errdefs.ErrInvalid, "%d images are mounted: name one with ?id=", len(d.mounts))
}

// ino is the inode number the mount reports for nid.
func (d *Daemon) ino(inst *instance, nid uint64) uint64 {
	if inst.shared {
		return inst.slot<<40 | nid
	}
	return nid
}

func (d *Daemon) serveFileMetrics(w http.ResponseWriter, r *http.Request) {
	inst, err := d.statsTarget(r.URL.Query().Get("id"))
	if err != nil {
		writeErr(w, err)
		return
	}
	stats := inst.fs.FileStats()
	if latest, _ := strconv.ParseBool(r.URL.Query().Get("latest")); latest {
		// Files read since the previous ?latest=true call.
		out := []uint64{}
		for nid, s := range stats {
			if s.ReadSinceTaken.Swap(false) {
				out = append(out, d.ino(inst, nid))
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
		writeJSON(w, 200, out)
		return
	}
	out := map[string]api.FileMetrics{}
	paths := inst.fs.Paths(slices.Collect(maps.Keys(stats)))
	for nid, s := range stats {
		m := api.FileMetrics{TotalFops: s.TotalFops.Load(), DataRead: s.DataRead.Load(), Path: paths[nid]}
		for i := range s.BlockCountRead {
			m.BlockCountRead = append(m.BlockCountRead, s.BlockCountRead[i].Load())
		}
		for i := range s.FopHits {
			m.FopHits = append(m.FopHits, s.FopHits[i].Load())
			m.FopErrors = append(m.FopErrors, s.FopErrors[i].Load())
		}
		out[strconv.FormatUint(d.ino(inst, nid), 10)] = m
	}
	writeJSON(w, 200, out)
}

func (d *Daemon) servePattern(w http.ResponseWriter, r *http.Request) {
	inst, err := d.statsTarget(r.URL.Query().Get("id"))
	if err != nil {
		writeErr(w, err)
		return
	}
	out := []api.AccessPattern{}
	stats := inst.fs.FileStats()
	paths := inst.fs.Paths(slices.Collect(maps.Keys(stats)))
	for nid, s := range stats {
		n := s.FopHits[nfs.FopRead].Load()
		if n == 0 {
			continue
		}
		t := s.FirstRead.Load()
		out = append(out, api.AccessPattern{Ino: d.ino(inst, nid), NrRead: n, FirstAccessTimeSecs: t / 1e9, FirstAccessTimeNanos: t % 1e9, Path: paths[nid]})
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].FirstAccessTimeSecs*1e9+out[i].FirstAccessTimeNanos < out[j].FirstAccessTimeSecs*1e9+out[j].FirstAccessTimeNanos
	})
	writeJSON(w, 200, out)
}

// serveFetches answers GET /api/v1/metrics/fetches[?id=]: the image's
// backend fetches in order, with their time, cause, file and size (our
// extension; needs access_pattern). `nydusify trace` draws it.
func (d *Daemon) serveFetches(w http.ResponseWriter, r *http.Request) {
	inst, err := d.statsTarget(r.URL.Query().Get("id"))
	if err != nil {
		writeErr(w, err)
		return
	}
	l := inst.fs.FetchLog()
	if l == nil {
		writeErr(w, errdefs.Errorf(errdefs.ErrInvalid, "the fetch log is off: set access_pattern in the image's config"))
		return
	}
	writeJSON(w, 200, l)
}
