package main

import (
	"fmt"
	"log/slog"
	"os"
	"sync"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/nydus-go/nydus/pkg/converter"
)

// progress shows one bar per layer on a terminal, plain log lines
// otherwise.
type progress struct {
	mu   sync.Mutex
	tty  bool
	log  *slog.Logger
	p    *mpb.Progress
	bars map[string]*mpb.Bar
}

func newProgress(tty bool, log *slog.Logger) *progress {
	pr := &progress{tty: tty, log: log, bars: map[string]*mpb.Bar{}}
	if tty {
		pr.p = mpb.New(mpb.WithOutput(os.Stderr), mpb.WithWidth(40), mpb.WithAutoRefresh())
	}
	return pr
}

func (pr *progress) event(e converter.Event) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	key := fmt.Sprintf("%s/%d", e.Platform, e.Layer)
	if !pr.tty {
		switch e.Kind {
		case "layer-start":
			pr.log.Info("converting layer", "platform", e.Platform, "layer", fmt.Sprintf("%d/%d", e.Layer+1, e.Layers), "digest", e.Digest, "size", human(e.Total))
		case "layer-done":
			pr.log.Info("layer converted", "platform", e.Platform, "layer", fmt.Sprintf("%d/%d", e.Layer+1, e.Layers), "blob", e.Digest, "size", human(e.Bytes))
		case "layer-cached":
			pr.log.Info("layer reused from the build cache", "platform", e.Platform, "layer", fmt.Sprintf("%d/%d", e.Layer+1, e.Layers), "blob", e.Digest)
		}
		return
	}
	b := pr.bars[key]
	if b == nil && (e.Kind == "layer-progress" || e.Kind == "layer-start" || e.Kind == "layer-cached") {
		total := e.Total
		if total <= 0 {
			total = 1
		}
		name := fmt.Sprintf("%s layer %d/%d", e.Platform, e.Layer+1, e.Layers)
		b = pr.p.AddBar(total,
			mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR)),
			mpb.AppendDecorators(decor.CountersKibiByte("% .1f / % .1f")),
		)
		pr.bars[key] = b
	}
	if b == nil {
		return
	}
	switch e.Kind {
	case "layer-progress":
		if e.Total > 0 {
			b.SetTotal(e.Total, false)
		}
		b.SetCurrent(e.Bytes)
	case "layer-done", "layer-cached":
		b.SetTotal(-1, true)
	}
}

func (pr *progress) stop() {
	if pr.p == nil {
		return
	}
	pr.mu.Lock()
	for _, b := range pr.bars {
		if !b.Completed() {
			b.Abort(false)
		}
	}
	pr.mu.Unlock()
	pr.p.Wait()
}
