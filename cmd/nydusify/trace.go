package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/nydus-go/nydus/internal/atomicfile"
	"github.com/nydus-go/nydus/pkg/daemon/api"
	"github.com/nydus-go/nydus/pkg/fetch"
)

func newTraceCmd(lo *logOptions) *cobra.Command {
	var apisock, id, output, jsonOut, prefetchList string
	var top int
	c := &cobra.Command{
		Use:   "trace --apisock SOCKET [--output startup.png]",
		Short: "Draw what a running image fetched, and when: a startup I/O picture",
		Long: `Read the fetch log of an image served by nydusd (GET
/api/v1/metrics/fetches on its API socket) and draw a PNG timeline: bytes
fetched over time, and which files' chunks were fetched when, on demand,
by dependency speculation, in the hot-set stream, by read-ahead or by
prefetch. It also prints a summary.

The image's nydusd config must set "access_pattern": true (the snapshotter
keeps that field of its nydusd_config template). Use --id /SNAPSHOT for a
shared daemon serving several images.

--prefetch-list FILE (or - for stdout) writes the files the image read, in
first-read order (GET /api/v1/metrics/pattern), one path per line: the
input of "nydusify convert --prefetch-patterns". So a recorded run becomes
an optimized image in two commands (see the examples).`,
		Example: `  nydusify trace --apisock /var/lib/containerd-nydus/socket/ID/api.sock --output startup.png

  # the optimize loop: record a cold run's reads, convert with them
  nydusify trace --apisock /var/lib/containerd-nydus/socket/ID/api.sock --prefetch-list app.list
  nydusify convert --source app:1 --target app:1-nydus --prefetch-patterns < app.list`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if apisock == "" {
				return errors.New("--apisock is required")
			}
			if output == "" && jsonOut == "" && prefetchList == "" {
				return errors.New("nothing to write: give --output, --json and/or --prefetch-list")
			}
			client := api.NewClient(apisock)
			defer client.Close()
			if prefetchList != "" {
				if err := writePrefetchList(cmd, client, id, prefetchList); err != nil {
					return err
				}
				if output == "" && jsonOut == "" {
					return nil
				}
			}
			l, err := client.FetchLog(cmd.Context(), id)
			if err != nil {
				return err
			}
			if len(l.Fetches) == 0 {
				return fmt.Errorf("%s: the image has fetched nothing yet", apisock)
			}
			if jsonOut != "" {
				b, _ := json.MarshalIndent(l, "", "  ")
				if err := atomicfile.WriteFile(jsonOut, append(b, '\n'), 0o644); err != nil {
					return err
				}
			}
			if output != "" {
				if err := drawTrace(l, output, top); err != nil {
					return fmt.Errorf("draw %s: %w", output, err)
				}
			}
			summarizeTrace(cmd.OutOrStdout(), l, top)
			return nil
		},
	}
	c.Flags().StringVar(&apisock, "apisock", "", "nydusd API socket")
	c.Flags().StringVar(&id, "id", "", "image id (mountpoint) for a shared daemon, e.g. /42")
	c.Flags().StringVarP(&output, "output", "o", "", "PNG file to write")
	c.Flags().StringVar(&jsonOut, "json", "", "also write the fetch log as JSON to this file")
	c.Flags().IntVar(&top, "top", 12, "files to name in the picture and the summary")
	c.Flags().StringVar(&prefetchList, "prefetch-list", "", "write the files the image read, in first-read order, for convert --prefetch-patterns (- for stdout)")
	return c
}

// writePrefetchList writes the image's access pattern, one path a line.
func writePrefetchList(cmd *cobra.Command, c *api.Client, id, out string) error {
	pattern, err := c.AccessPattern(cmd.Context(), id)
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, p := range pattern {
		if strings.HasPrefix(p.Path, "/") {
			b.WriteString(p.Path + "\n")
		}
	}
	if b.Len() == 0 {
		return fmt.Errorf("%s: the image has read no file yet (is access_pattern set in its nydusd config?)", c.Socket())
	}
	if out == "-" {
		_, err := io.WriteString(cmd.OutOrStdout(), b.String())
		return err
	}
	return atomicfile.WriteFile(out, []byte(b.String()), 0o644)
}

var traceKinds = []string{fetch.Demand, fetch.Dependency, fetch.Sibling, fetch.HotSet, fetch.ReadAhead, fetch.Prefetch, fetch.WholeFile}

// fileOrder ranks files by their first fetch and totals their bytes.
func fileOrder(l *fetch.Log) (rank map[string]int, bytes map[string]int64, byBytes []string) {
	rank, bytes = map[string]int{}, map[string]int64{}
	for _, f := range l.Fetches {
		if _, ok := rank[f.Path]; !ok {
			rank[f.Path] = len(rank)
			byBytes = append(byBytes, f.Path)
		}
		bytes[f.Path] += f.Bytes
	}
	sort.SliceStable(byBytes, func(i, j int) bool { return bytes[byBytes[i]] > bytes[byBytes[j]] })
	return rank, bytes, byBytes
}

func drawTrace(l *fetch.Log, output string, top int) error {
	t0 := l.Fetches[0].Start
	secs := func(f fetch.Entry) float64 { return (f.Start - t0).Seconds() }
	rank, _, byBytes := fileOrder(l)

	// Panel 1: cumulative MB fetched over time, per kind.
	cum := plot.New()
	cum.Title.Text = fmt.Sprintf("Bytes fetched over time (%d fetches)", len(l.Fetches))
	cum.X.Label.Text = "seconds since the first fetch"
	cum.Y.Label.Text = "MB fetched (cumulative)"
	cum.Legend.Top, cum.Legend.Left = true, true
	// Panel 2: which file each fetch was for.
	files := plot.New()
	files.Title.Text = "Fetches by file (files in first-fetch order)"
	files.X.Label.Text = "seconds since the first fetch"
	files.Y.Label.Text = "file"
	files.Legend.Top = true
	named := map[int]string{}
	for i, p := range byBytes {
		if i >= top {
			break
		}
		named[rank[p]] = shortPath(p)
	}
	files.Y.Tick.Marker = plot.TickerFunc(func(min, max float64) []plot.Tick {
		var ts []plot.Tick
		for r, name := range named {
			ts = append(ts, plot.Tick{Value: float64(r), Label: name})
		}
		sort.Slice(ts, func(i, j int) bool { return ts[i].Value < ts[j].Value })
		return ts
	})
	var total float64
	all := plotter.XYs{{X: 0, Y: 0}}
	for _, f := range l.Fetches {
		total += float64(f.Bytes) / 1e6
		all = append(all, plotter.XY{X: secs(f), Y: total})
	}
	line, err := plotter.NewLine(all)
	if err != nil {
		return err
	}
	line.Color = plotutil.Color(7)
	cum.Add(line)
	cum.Legend.Add("all", line)
	for i, k := range traceKinds {
		var pts, fpts plotter.XYs
		var sum float64
		for _, f := range l.Fetches {
			if f.Kind != k {
				continue
			}
			sum += float64(f.Bytes) / 1e6
			pts = append(pts, plotter.XY{X: secs(f), Y: sum})
			fpts = append(fpts, plotter.XY{X: secs(f), Y: float64(rank[f.Path])})
		}
		if len(pts) == 0 {
			continue
		}
		sc, err := plotter.NewScatter(pts)
		if err != nil {
			return err
		}
		sc.GlyphStyle.Color, sc.GlyphStyle.Radius, sc.GlyphStyle.Shape = plotutil.Color(i), vg.Points(2), draw.CircleGlyph{}
		cum.Add(sc)
		cum.Legend.Add(fmt.Sprintf("%s (%.1f MB)", k, sum), sc)
		fs, err := plotter.NewScatter(fpts)
		if err != nil {
			return err
		}
		fs.GlyphStyle.Color, fs.GlyphStyle.Radius, fs.GlyphStyle.Shape = plotutil.Color(i), vg.Points(2.5), draw.CircleGlyph{}
		files.Add(fs)
		files.Legend.Add(k, fs)
	}
	img := vgimg.New(vg.Points(900), vg.Points(900))
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadTop: vg.Points(8), PadBottom: vg.Points(8), PadLeft: vg.Points(8), PadRight: vg.Points(8), PadY: vg.Points(16)}
	plots := [][]*plot.Plot{{cum}, {files}}
	for i, c := range plot.Align(plots, tiles, draw.New(img)) {
		plots[i][0].Draw(c[0])
	}
	var png bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(&png); err != nil {
		return err
	}
	return atomicfile.WriteFile(output, png.Bytes(), 0o644)
}

// shortPath keeps a label readable.
func shortPath(p string) string {
	if len(p) <= 40 {
		return p
	}
	return "…" + p[len(p)-39:]
}

func summarizeTrace(w io.Writer, l *fetch.Log, top int) {
	t0, t1 := l.Fetches[0].Start, l.Fetches[len(l.Fetches)-1].Start+l.Fetches[len(l.Fetches)-1].Duration
	var total int64
	kinds := map[string][2]int64{}
	errs := 0
	for _, f := range l.Fetches {
		total += f.Bytes
		k := kinds[f.Kind]
		kinds[f.Kind] = [2]int64{k[0] + 1, k[1] + f.Bytes}
		if f.Err != "" {
			errs++
		}
	}
	fmt.Fprintf(w, "%d fetches, %.1f MB, over %.2f s (from %.2f s after the image was opened)", len(l.Fetches), float64(total)/1e6,
		(t1 - t0).Seconds(), t0.Seconds())
	if l.Dropped > 0 {
		fmt.Fprintf(w, "; %d older fetches were dropped from the log", l.Dropped)
	}
	if errs > 0 {
		fmt.Fprintf(w, "; %d failed", errs)
	}
	fmt.Fprintln(w)
	for _, k := range traceKinds {
		if v, ok := kinds[k]; ok {
			fmt.Fprintf(w, "  %-10s %5d fetches %8.1f MB\n", k, v[0], float64(v[1])/1e6)
		}
	}
	_, bytes, byBytes := fileOrder(l)
	fmt.Fprintf(w, "top files by bytes fetched:\n")
	for i, p := range byBytes {
		if i >= top {
			break
		}
		fmt.Fprintf(w, "  %8.2f MB  %s\n", float64(bytes[p])/1e6, p)
	}
}
