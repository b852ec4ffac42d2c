package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nydus-go/nydus/pkg/daemon/api"
	"github.com/nydus-go/nydus/pkg/errdefs"
)

// ServeAPI serves the HTTP API on a unix socket created with mode 0600
// (never reachable with a looser one; the process's umask is left
// alone). Idle connections are never timed out: nydus-snapshotter keeps
// one open to detect the daemon's death.
func (d *Daemon) ServeAPI(ctx context.Context, sock string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	if st, err := os.Lstat(sock); err == nil && st.Mode()&os.ModeSocket != 0 {
		os.Remove(sock)
	}
	l, err := listenUnix(sock, 0o600)
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	srv := &http.Server{Handler: d.Handler()}
	go srv.Serve(l)
	return func() {
		srv.Close()
		os.Remove(sock)
	}, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeErr answers err in upstream's error body. Its status and code
// come from its kind: this is the one place where the daemon's errors
// become HTTP statuses.
func writeErr(w http.ResponseWriter, err error) {
	status, code := httpStatus(err)
	writeJSON(w, status, api.ErrorBody{Code: code, Message: err.Error()})
}

// httpStatus maps an error's kind to an HTTP status and an errno name.
func httpStatus(err error) (int, string) {
	switch {
	case errors.Is(err, errdefs.ErrInvalid), errors.Is(err, errdefs.ErrCorrupt), errors.Is(err, fs.ErrInvalid):
		return http.StatusBadRequest, "EINVAL"
	case errors.Is(err, errdefs.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return http.StatusNotFound, "ENOENT"
	case errors.Is(err, errdefs.ErrConflict), errors.Is(err, fs.ErrExist):
		return http.StatusConflict, "EEXIST"
	case errors.Is(err, errdefs.ErrUnsupported):
		return http.StatusNotImplemented, "ENOTSUP"
	case errors.Is(err, errdefs.ErrPermission), errors.Is(err, fs.ErrPermission):
		return http.StatusForbidden, "EACCES"
	case errors.Is(err, errdefs.ErrUnavailable):
		return http.StatusServiceUnavailable, "EIO"
	}
	return http.StatusInternalServerError, "EIO"
}

// Handler returns the API's HTTP handler.
func (d *Daemon) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/daemon", func(w http.ResponseWriter, r *http.Request) {
		info := api.DaemonInfo{ID: d.o.ID, Version: d.o.Version, Supervisor: d.o.Supervisor, State: d.State()}
		d.mu.Lock()
		for mp, inst := range d.mounts {
			if info.Mounts == nil {
				info.Mounts = map[string]api.MountInfo{}
			}
			info.Mounts[mp] = api.MountInfo{Bootstrap: inst.bootstrap, BootstrapDigest: inst.digest}
		}
		d.mu.Unlock()
		writeJSON(w, 200, info)
	})
	mux.HandleFunc("GET /api/v1/events", d.serveEvents)
	mux.HandleFunc("POST /api/v1/mount", func(w http.ResponseWriter, r *http.Request) {
		var req api.MountRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			writeErr(w, errdefs.Errorf(errdefs.ErrInvalid, "invalid mount request body: %w", err))
			return
		}
		if err := d.Mount(r.Context(), r.URL.Query().Get("mountpoint"), req); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("DELETE /api/v1/mount", func(w http.ResponseWriter, r *http.Request) {
		if err := d.Umount(r.Context(), r.URL.Query().Get("mountpoint")); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /api/v1/metrics", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("id")
		var out api.FsMetrics
		for mp, f := range d.Instances() {
			if id == "" || id == mp {
				out.ID = mp
				out.DataRead += f.Metrics.ReadBytes.Load()
			}
		}
		writeJSON(w, 200, out)
	})
	mux.HandleFunc("GET /api/v1/metrics/blobcache", func(w http.ResponseWriter, r *http.Request) {
		// The snapshotter pauses cache GC when underlying_files is empty.
		m := api.BlobCacheMetrics{ID: r.URL.Query().Get("id"), UnderlyingFiles: d.UnderlyingFiles(), DataAllReady: true}
		for mp, f := range d.Instances() {
			if m.ID != "" && m.ID != mp {
				continue
			}
			m.PrefetchRequestsCount += f.Metrics.PrefetchedChunks.Load()
			m.WholeHits += f.Metrics.CacheHits.Load()
			m.Total += f.Metrics.CacheHits.Load() + f.Metrics.FetchedChunks.Load()
			if !f.Metrics.PrefetchDone.Load() {
				m.DataAllReady = false
			}
		}
		writeJSON(w, 200, m)
	})
	mux.HandleFunc("GET /api/v1/metrics/backend", func(w http.ResponseWriter, r *http.Request) {
		var out api.BackendMetrics
		for _, f := range d.Instances() {
			out.ReadCount += f.Metrics.BackendReads.Load()
			out.ReadAmountTotal += f.Metrics.FetchedBytes.Load()
			out.ReadErrors += f.Metrics.BackendErrors.Load()
			out.DigestFailures += f.Metrics.DigestFailures.Load()
		}
		writeJSON(w, 200, out)
	})
	mux.HandleFunc("GET /api/v1/metrics/files", d.serveFileMetrics)
	mux.HandleFunc("GET /api/v1/metrics/pattern", d.servePattern)
	mux.HandleFunc("GET /api/v1/metrics/fetches", d.serveFetches)
	mux.HandleFunc("GET /api/v1/metrics/inflight", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("PUT /api/v1/daemon/fuse/sendfd", func(w http.ResponseWriter, r *http.Request) {
		if err := d.SendStates(r.Context()); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("PUT /api/v1/daemon/fuse/takeover", func(w http.ResponseWriter, r *http.Request) {
		if err := d.TakeOver(r.Context()); err != nil {
			d.o.Log.Error("takeover failed", "error", err)
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("PUT /api/v1/daemon/start", func(w http.ResponseWriter, r *http.Request) {
		if err := d.Start(r.Context()); err != nil {
			writeErr(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("PUT /api/v1/daemon/exit", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
		d.Exit()
	})
	mux.HandleFunc("PUT /api/v1/config", func(w http.ResponseWriter, r *http.Request) {
		var body map[string]string
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&body); err != nil {
			writeErr(w, errdefs.Errorf(errdefs.ErrInvalid, "invalid config body"))
			return
		}
		if auth, ok := body["registry_auth"]; ok {
			if err := d.SetRegistryAuth(r.Context(), r.URL.Query().Get("id"), auth); err != nil {
				writeErr(w, err)
				return
			}
			d.o.Log.Info("registry credentials renewed", "id", r.URL.Query().Get("id"))
		}
		w.WriteHeader(http.StatusNoContent)
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(d))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// Go profiles, for diagnosing memory and CPU use; the socket is
	// root-only (0600).
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, errdefs.Errorf(errdefs.ErrNotFound, "unknown API %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// maxEventsWait bounds how long GET /api/v1/events waits for an event.
const maxEventsWait = time.Minute

// serveEvents answers GET /api/v1/events?since=SEQ&wait=DURATION: the
// events after sequence number SEQ (default 0), at most 256, as a
// CloudEvents JSON batch; with wait, it waits up to that long (at most a
// minute) for one when there is none yet (long poll). Each subscriber
// keeps its own place: several read independently.
func (d *Daemon) serveEvents(w http.ResponseWriter, r *http.Request) {
	l := d.o.EventLog
	if l == nil {
		writeErr(w, errdefs.Errorf(errdefs.ErrUnsupported, "this daemon keeps no event log"))
		return
	}
	q := r.URL.Query()
	var since uint64
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeErr(w, errdefs.Errorf(errdefs.ErrInvalid, "since: %w", err))
			return
		}
		since = n
	}
	if v := q.Get("wait"); v != "" {
		wait, err := time.ParseDuration(v)
		if err != nil || wait < 0 {
			writeErr(w, errdefs.Errorf(errdefs.ErrInvalid, "wait %q: a duration such as 30s", v))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), min(wait, maxEventsWait))
		l.Wait(ctx, since)
		cancel()
	}
	evs, err := l.Since(since, 256)
	if err != nil {
		writeErr(w, err)
		return
	}
	if evs == nil {
		evs = []CloudEvent{}
	}
	w.Header().Set("Content-Type", "application/cloudevents-batch+json")
	json.NewEncoder(w).Encode(evs)
}
