package main

import (
	"fmt"
	"image/color"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// sectionHeading is the heading of the report's section in the docs.
const sectionHeading = "## Container startup (`make bench`)"

// report is everything one invocation measured.
type report struct {
	Quick     bool
	Runs      int
	Profiles  []profile
	Workloads []workload
	Prepared  []prepared
	Results   []result
	Started   time.Time
	Took      time.Duration
	// Trace is nydusify trace's summary of one cold Nydus-Go run.
	Trace string
	// Run is the -run filter: only the runs it selects were measured,
	// and the tables leave the others out.
	Run string `json:",omitempty"`
	// FS are the filesystem-level figures of make bench-fs, if given.
	FS []fsFigure
}

// fsFigure is one BenchmarkFS metric.
type fsFigure struct {
	Bench, Unit string
	Value       float64
}

// parseBenchFS reads `go test -bench BenchmarkFS` output lines such as
// "BenchmarkFS/warm-2  1  123 native-disk-MB/s  456 nydus-disk-MB/s".
func parseBenchFS(out string) []fsFigure {
	var figs []fsFigure
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 4 || !strings.HasPrefix(f[0], "BenchmarkFS/") {
			continue
		}
		name := strings.TrimPrefix(f[0], "BenchmarkFS/")
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			name = name[:i]
		}
		for i := 2; i+1 < len(f); i += 2 {
			var v float64
			if _, err := fmt.Sscan(f[i], &v); err == nil && f[i+1] != "ns/op" {
				figs = append(figs, fsFigure{Bench: name, Unit: f[i+1], Value: v})
			}
		}
	}
	return figs
}

// cell is the medians of one (workload, form, profile).
type cell struct {
	ok                    bool
	n, failed             int
	pull, ready, total    time.Duration
	bytes, requests, read int64
	err                   string
}

func (r *report) cell(w, f, p string) cell {
	var c cell
	var pulls, readys, totals []time.Duration
	var bytes, reqs, reads []int64
	for _, x := range r.Results {
		if x.Workload != w || x.Form != f || x.Profile != p {
			continue
		}
		if x.Err != "" {
			c.failed++
			c.err = x.Err
			continue
		}
		c.n++
		pulls, readys, totals = append(pulls, x.Pull), append(readys, x.Ready), append(totals, x.Total)
		bytes, reqs, reads = append(bytes, x.Bytes), append(reqs, x.Requests), append(reads, x.ReadBytes)
	}
	if c.n == 0 {
		return c
	}
	c.ok = true
	c.pull, c.ready, c.total = median(pulls), median(readys), median(totals)
	c.bytes, c.requests, c.read = median(bytes), median(reqs), median(reads)
	return c
}

func (r *report) prep(w, f string) prepared {
	for _, g := range forms {
		if g.Name == f {
			f = imageForm(g).Name
		}
	}
	for _, p := range r.Prepared {
		if p.Workload == w && p.Form == f {
			return p
		}
	}
	return prepared{Err: errNotPrepared}
}

// errNotPrepared is the error of a form setup did not prepare (-run left
// it out, or an earlier step failed).
const errNotPrepared = "not prepared"

func secs(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }
func mb(n int64) string           { return fmt.Sprintf("%.1f", float64(n)/1e6) }

func ratio(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

func (r *report) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	cmd := "make bench"
	if r.Quick {
		cmd = "make bench QUICK=1"
	}
	if r.Run != "" {
		cmd = fmt.Sprintf("cd bench/startup && go run . -run '%s'", r.Run)
	}
	commit, _ := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	kernel, _ := exec.Command("uname", "-r").Output()
	p("%s\n\n", sectionHeading)
	p("Written by `bench/startup`; rerun `%s` to refresh. Every figure below comes from that one invocation: %s UTC, commit `%s`, %d CPUs, kernel %s; it took %s.\n\n",
		cmd, r.Started.UTC().Format("2006-01-02 15:04"), strings.TrimSpace(string(commit)), runtime.NumCPU(), strings.TrimSpace(string(kernel)), r.Took.Round(time.Second))
	p("- Images: debootstrapped Debian bookworm minbase, plus one layer with the workload's packages (`scripts/debian-image.sh`).\n")
	p("- Systems: containerd 1.6 with overlayfs (`ctr image pull`, then `ctr run`); stargz-snapshotter v0.19.1 (`ctr-remote image rpull`), images from `ctr-remote image convert --estargz --oci` and `ctr-remote image optimize --oci` (which profiles the workload); upstream nydus-snapshotter v0.16.1 with our nydusd (`ctr-remote image rpull --snapshotter nydus`), in its dedicated mode (a nydusd spawned per image) and, as *shared*, in its shared mode (one nydusd started with the snapshotter mounts every image through its API), images from `nydusify convert`, and from `nydusify convert --prefetch-patterns` with the files one cold run read, in first-read order (nydusd's `/api/v1/metrics/pattern`).\n")
	p("- By reference, the OCI image's own gzip layers indexed instead of converted: *OCI + SOCI index* is the SOCI snapshotter v0.16.1 (`tools/soci`: its daemon on the root module's service package, and `soci convert`, which builds zTOCs and a v2 SOCI index with its soci package at a min layer size of %s and pushes the SOCI-enabled image, an image index beside the OCI image in its repository; pulled with `soci rpull`, which sets the labels SOCI reads); *OCI + Nydus-Go zran* is `nydusify convert --oci-ref` of the OCI image in the registry, run exactly as the Nydus-Go form.\n", sizeIEC(sociMinLayerSize))
	var profs []string
	for _, pr := range r.Profiles {
		profs = append(profs, pr.String())
	}
	p("- Network: the registry (Debian's docker-registry) sits behind a proxy in the harness that every system pulls through: %s.\n", strings.Join(profs, "; "))
	p("- Each (workload, image form, network) ran %d times, interleaved, and every run was cold: every image removed first (`ctr image rm --sync`, which also makes nydus-snapshotter stop the image's nydusd and delete its cache files; it is restarted with an empty root if anything is left), stargz-snapshotter and the SOCI snapshotter stopped, their roots and caches deleted and restarted after each of their runs (they keep fetching layers in the background and keep caches after the images are gone), and the page cache dropped. Tables show medians.\n", r.Runs)
	p("- **Pull** is `ctr image pull` / `ctr-remote image rpull` / `soci rpull`; **ready** is from the start of `ctr run` to the workload's first line of output; **total** = pull + ready. **Fetched** counts blob bytes the registry sent from the start of the pull to ready, **requests** every request.\n\n")

	p("### Images\n\n")
	if r.Quick {
		p("The quick profile converts its images at the same time, so these conversion times include contention; `make bench` converts one image at a time.\n\n")
	}
	p("| workload | form | size in the registry (MB) | conversion (s) |\n|---|---|--:|--:|\n")
	for _, w := range r.Workloads {
		for _, f := range forms {
			if imageForm(f).Name != f.Name {
				continue // the same image as an earlier form
			}
			pr := r.prep(w.Name, f.Name)
			if r.Run != "" && pr.Err == errNotPrepared {
				continue // not selected
			}
			if pr.Err != "" {
				p("| %s | %s | failed: %s | |\n", w.Name, f.Name, oneLine(pr.Err))
				continue
			}
			conv := secs(pr.Convert)
			if f.Name == "OCI" {
				conv = "(source)"
			}
			p("| %s | %s | %s | %s |\n", w.Name, f.Name, mb(pr.Size), conv)
		}
	}
	p("\n")
	r.added(p)

	var failures []string
	for _, pr := range r.Profiles {
		p("### %s\n\n| workload | system | form | pull (s) | ready (s) | total (s) | fetched (MB) | requests |\n|---|---|---|--:|--:|--:|--:|--:|\n", pr.String())
		for _, w := range r.Workloads {
			for _, f := range forms {
				c := r.cell(w.Name, f.Name, pr.Name)
				if r.Run != "" && c.n+c.failed == 0 {
					continue // not selected
				}
				if !c.ok {
					why := c.err
					if why == "" {
						why = r.prep(w.Name, f.Name).Err
					}
					p("| %s | %s | %s | failed | | | | |\n", w.Name, f.System, f.Name)
					failures = append(failures, fmt.Sprintf("%s, %s, %s: %s", pr.Name, w.Name, f.Name, oneLine(why)))
					continue
				}
				if c.failed > 0 {
					failures = append(failures, fmt.Sprintf("%s, %s, %s: %d of %d runs failed: %s", pr.Name, w.Name, f.Name, c.failed, c.failed+c.n, oneLine(c.err)))
				}
				p("| %s | %s | %s | %s | %s | %s | %s | %d |\n", w.Name, f.System, f.Name, secs(c.pull), secs(c.ready), secs(c.total), mb(c.bytes), c.requests)
			}
		}
		p("\nRatios (total cold start, and bytes fetched):\n\n| workload | Nydus-Go ÷ OCI | Nydus-Go ÷ eStargz | Nydus-Go + prefetch ÷ eStargz optimized | fetched ÷ OCI | fetched ÷ eStargz |\n|---|--:|--:|--:|--:|--:|\n")
		for _, w := range r.Workloads {
			n, o, e := r.cell(w.Name, "Nydus-Go", pr.Name), r.cell(w.Name, "OCI", pr.Name), r.cell(w.Name, "eStargz", pr.Name)
			np, eo := r.cell(w.Name, "Nydus-Go + prefetch", pr.Name), r.cell(w.Name, "eStargz optimized", pr.Name)
			p("| %s | %s | %s | %s | %s | %s |\n", w.Name, ratio(n.total.Seconds(), o.total.Seconds()), ratio(n.total.Seconds(), e.total.Seconds()),
				ratio(np.total.Seconds(), eo.total.Seconds()), ratio(float64(n.bytes), float64(o.bytes)), ratio(float64(n.bytes), float64(e.bytes)))
		}
		p("\nShared mode (one nydusd for every image, already running when the image is mounted):\n\n| workload | Nydus-Go shared ÷ eStargz | Nydus-Go + prefetch shared ÷ eStargz optimized | ready, shared ÷ dedicated | ready with prefetch, shared ÷ dedicated |\n|---|--:|--:|--:|--:|\n")
		for _, w := range r.Workloads {
			n, np := r.cell(w.Name, "Nydus-Go", pr.Name), r.cell(w.Name, "Nydus-Go + prefetch", pr.Name)
			ns, nps := r.cell(w.Name, "Nydus-Go shared", pr.Name), r.cell(w.Name, "Nydus-Go + prefetch shared", pr.Name)
			e, eo := r.cell(w.Name, "eStargz", pr.Name), r.cell(w.Name, "eStargz optimized", pr.Name)
			p("| %s | %s | %s | %s | %s |\n", w.Name, ratio(ns.total.Seconds(), e.total.Seconds()), ratio(nps.total.Seconds(), eo.total.Seconds()),
				ratio(ns.ready.Seconds(), n.ready.Seconds()), ratio(nps.ready.Seconds(), np.ready.Seconds()))
		}
		p("\n")
		r.byRef(p, pr)
		r.targets(p, pr)
		r.kinds(p, pr)
	}
	p("![Total cold start per workload and image form](bench-startup.png)\n\n")
	if r.Trace != "" {
		p("%s\n![Startup I/O of one cold Nydus-Go run: bytes fetched over time, and which files were fetched when](bench-startup-trace.png)\n\n", r.Trace)
	}
	if len(r.FS) > 0 {
		p("Filesystem level, from `BenchmarkFS` (`make bench-fs`) in the same invocation (warm: sequential read of a 1 GiB file with the page cache dropped (disk) and hot; walk: `tar -cf /dev/null` of a Debian rootfs; native ext4 is the reference):\n\n| benchmark | metric | value |\n|---|---|--:|\n")
		for _, f := range r.FS {
			p("| %s | %s | %.2f |\n", f.Bench, f.Unit, f.Value)
		}
		p("\n")
	}
	if len(failures) > 0 {
		p("Failures (the tables say \"failed\"; nothing is left out silently):\n\n")
		for _, f := range failures {
			p("- %s\n", f)
		}
		p("\n")
	}
	return b.String()
}

func verdictIf(have, ok bool) string {
	if !have {
		return "— (no reference)"
	}
	return verdict(ok)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strings.ReplaceAll(s, "|", "/")
}

// chart draws the median total cold start of every form, grouped by
// workload, one panel per network profile.
func (r *report) chart(path string) error {
	var names []string
	for _, w := range r.Workloads {
		names = append(names, w.Name)
	}
	var canvases [][]*plot.Plot
	for _, pr := range r.Profiles {
		pl := plot.New()
		pl.Title.Text = "Cold start (pull + run to first output), " + pr.Name
		pl.Y.Label.Text = "seconds (median)"
		pl.Legend.Top = true
		w := vg.Points(min(16, 136/float64(len(forms))))
		var top float64
		for i, f := range forms {
			vals := make(plotter.Values, len(r.Workloads))
			for j, wl := range r.Workloads {
				if c := r.cell(wl.Name, f.Name, pr.Name); c.ok {
					vals[j] = c.total.Seconds()
					top = max(top, vals[j])
				}
			}
			bars, err := plotter.NewBarChart(vals, w)
			if err != nil {
				return err
			}
			bars.Color = formColor(i)
			bars.LineStyle.Width = 0
			bars.Offset = w * vg.Length(float64(i)-float64(len(forms)-1)/2)
			pl.Add(bars)
			pl.Legend.Add(f.Name, bars)
		}
		pl.NominalX(names...)
		// Room above the bars for the legend, and around the groups.
		pl.Y.Min, pl.Y.Max = 0, top*1.45
		pl.X.Min, pl.X.Max = -0.6, float64(len(names))-0.4
		canvases = append(canvases, []*plot.Plot{pl})
	}
	img := vgimg.New(vg.Points(720), vg.Points(380*float64(len(canvases))))
	tiles := draw.Tiles{Rows: len(canvases), Cols: 1, PadTop: vg.Points(6), PadBottom: vg.Points(6), PadY: vg.Points(12), PadLeft: vg.Points(6), PadRight: vg.Points(6)}
	for i, c := range plot.Align(canvases, tiles, draw.New(img)) {
		canvases[i][0].Draw(c[0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// formColor is the bar colour of the i-th form: plotutil's seven, then
// colours of their own for the by-reference forms (plotutil's would repeat
// OCI's and eStargz's).
func formColor(i int) color.Color {
	if i < len(plotutil.DefaultColors) {
		return plotutil.Color(i)
	}
	extra := []color.Color{color.RGBA{R: 0x55, G: 0x55, B: 0x55, A: 0xff}, color.RGBA{R: 0x1b, G: 0x9e, B: 0x77, A: 0xff}, color.RGBA{R: 0x8c, G: 0x6d, B: 0x31, A: 0xff}}
	return extra[(i-len(plotutil.DefaultColors))%len(extra)]
}

// targets writes the cold-start targets of a profile with their verdicts.
// The floor of a Nydus-Go form is its fetched bytes at the profile's
// bandwidth, plus the round trips for manifest, config and bootstrap
// layer, plus the OCI form's create-and-run time from the same run.
func (r *report) targets(p func(string, ...any), pr profile) {
	if pr.Mbit <= 0 {
		p("Targets:\n\n| workload | Nydus-Go ÷ eStargz | target ≤ 0.8× |\n|---|--:|---|\n")
		for _, w := range r.Workloads {
			n, e := r.cell(w.Name, "Nydus-Go", pr.Name), r.cell(w.Name, "eStargz", pr.Name)
			p("| %s | %s | %s |\n", w.Name, ratio(n.total.Seconds(), e.total.Seconds()), verdictIf(n.ok && e.ok, n.total.Seconds() <= 0.8*e.total.Seconds()))
		}
		p("\n")
		return
	}
	bw := pr.Mbit * 1e6 / 8
	p("Targets. The floor of Nydus-Go + prefetch is its fetched bytes at %s Mbit/s, plus three round trips (manifest, config, bootstrap layer), plus the OCI form's create-and-run time in the same run; *read* is what the workload read (nydusd's file metrics, uncompressed):\n\n", ftoa(pr.Mbit))
	p("| workload | Nydus-Go ÷ eStargz | target ≤ %s | requests, Nydus-Go ÷ eStargz | target ≤ 0.5× | + prefetch ÷ eStargz optimized | target ≤ 0.75× | requests, + prefetch | target ≤ 10 | floor (s) | + prefetch ÷ floor | target ≤ 1.3× | fetched ÷ read | target ≤ 1.2× |\n|---|--:|---|--:|---|--:|---|--:|---|--:|--:|---|--:|---|\n", "0.6× (echo 0.8×)")
	for _, w := range r.Workloads {
		n, e := r.cell(w.Name, "Nydus-Go", pr.Name), r.cell(w.Name, "eStargz", pr.Name)
		np, eo := r.cell(w.Name, "Nydus-Go + prefetch", pr.Name), r.cell(w.Name, "eStargz optimized", pr.Name)
		o := r.cell(w.Name, "OCI", pr.Name)
		limit := 0.6
		if w.Name == "echo" {
			limit = 0.8
		}
		floor := float64(np.bytes)/bw + 3*pr.RTT.Seconds() + o.ready.Seconds()
		floorCell, floorRatio := "—", "—"
		if np.ok && o.ok {
			floorCell, floorRatio = fmt.Sprintf("%.2f", floor), ratio(np.total.Seconds(), floor)
		}
		fr, frOK := "—", false
		if n.ok && n.read > 0 {
			v := float64(n.bytes) / float64(n.read)
			if np.ok && np.read > 0 {
				v = max(v, float64(np.bytes)/float64(np.read))
			}
			fr, frOK = fmt.Sprintf("%.2f", v), v <= 1.2
		}
		p("| %s | %s | %s | %s | %s | %s | %s | %d | %s | %s | %s | %s | %s | %s |\n", w.Name,
			ratio(n.total.Seconds(), e.total.Seconds()), verdictIf(n.ok && e.ok, n.total.Seconds() <= limit*e.total.Seconds()),
			ratio(float64(n.requests), float64(e.requests)), verdictIf(n.ok && e.ok, float64(n.requests) <= 0.5*float64(e.requests)),
			ratio(np.total.Seconds(), eo.total.Seconds()), verdictIf(np.ok && eo.ok, np.total.Seconds() <= 0.75*eo.total.Seconds()),
			np.requests, verdictIf(np.ok, np.requests <= 10),
			floorCell, floorRatio, verdictIf(np.ok && o.ok, np.total.Seconds() <= 1.3*floor),
			fr, verdictIf(fr != "—", frOK))
	}
	p("\n")
}

// kindForms are the forms whose nydusd fetch log the report breaks down
// (those that run under a nydusd of their own).
var kindForms = []string{formNydus.Name, formNydusPf.Name, formZran.Name}

// fetchKinds are the fetch kinds of nydusd's fetch log, in report order.
var fetchKinds = []string{"demand", "dependency", "sibling", "hotset", "readahead", "prefetch", "wholefile"}

// kinds writes what nydusd fetched, by kind, for the dedicated Nydus-Go
// forms of a profile (medians over the runs, to the workload's exit).
func (r *report) kinds(p func(string, ...any), pr profile) {
	rows := 0
	for _, w := range r.Workloads {
		for _, f := range kindForms {
			for _, x := range r.Results {
				if x.Workload == w.Name && x.Form == f && x.Profile == pr.Name && len(x.Kinds) > 0 {
					rows++
				}
			}
		}
	}
	if rows == 0 {
		return
	}
	p("What nydusd fetched, by kind (fetch-log entries / MB, medians of the runs, from its fetch log up to the workload's exit: an entry is one request, or one file's share of a streamed request that served several files; *amplified* counts the chunks that came in another chunk's request):\n\n| workload | form |")
	for _, k := range fetchKinds {
		p(" %s |", k)
	}
	p(" amplified |\n|---|---|")
	for range fetchKinds {
		p("--:|")
	}
	p("--:|\n")
	for _, w := range r.Workloads {
		for _, f := range kindForms {
			var runs []map[string]kindStat
			for _, x := range r.Results {
				if x.Workload == w.Name && x.Form == f && x.Profile == pr.Name && x.Err == "" && len(x.Kinds) > 0 {
					runs = append(runs, x.Kinds)
				}
			}
			if len(runs) == 0 {
				continue
			}
			p("| %s | %s |", w.Name, f)
			var amp []int64
			for _, k := range fetchKinds {
				var reqs, bytes []int64
				for _, run := range runs {
					reqs, bytes = append(reqs, run[k].Requests), append(bytes, run[k].Bytes)
				}
				if median(reqs) == 0 {
					p(" — |")
					continue
				}
				p(" %d / %s |", median(reqs), mb(median(bytes)))
			}
			for _, run := range runs {
				var a int64
				for _, st := range run {
					a += st.Amplified
				}
				amp = append(amp, a)
			}
			p(" %d |\n", median(amp))
		}
	}
	p("\n")
}

func sizeIEC(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func kb(n int64) string { return fmt.Sprintf("%.1f", float64(n)/1e3) }

func pct(a, b int64) string {
	if b <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f%%", 100*float64(a)/float64(b))
}

// added writes what each by-reference form adds to the registry per
// image, against the OCI image's compressed layers, with its index or
// conversion time against nydusify convert's, and the zran targets.
func (r *report) added(p func(string, ...any)) {
	var rows []string
	for _, w := range r.Workloads {
		oci, nydus := r.prep(w.Name, formOCI.Name), r.prep(w.Name, formNydus.Name)
		for _, f := range forms {
			if !f.ByRef {
				continue
			}
			pr := r.prep(w.Name, f.Name)
			if pr.Err != "" || oci.Err != "" {
				continue // the Images table says why
			}
			ociLayers := oci.Size
			conv, convTarget := "—", "—"
			if nydus.Err == "" && nydus.Convert > 0 {
				conv = ratio(pr.Convert.Seconds(), nydus.Convert.Seconds())
			}
			sizeTarget := "—"
			if f.Name == formZran.Name {
				sizeTarget = verdict(float64(pr.Added) <= 0.05*float64(ociLayers))
				if conv != "—" {
					convTarget = verdict(pr.Convert.Seconds() <= 0.3*nydus.Convert.Seconds())
				}
			}
			rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", w.Name, f.Name, mb(ociLayers), kb(pr.Added), kb(pr.AddedBlobs),
				pct(pr.Added, ociLayers), sizeTarget, secs(pr.Convert), conv, convTarget))
		}
	}
	if len(rows) == 0 {
		return
	}
	p("What the by-reference forms add to the registry: every manifest, index, config and blob the form's tag reaches that the OCI image's does not (SOCI: the image index, the annotated image manifest, the SOCI index manifest and its zTOCs; zran: the Nydus manifest and config, the ref blobs and the bootstrap layer), against the OCI image's compressed layers, which both share; and the time to build and push it (SOCI's includes copying the OCI image from the registry, as zran's conversion reads it), against `nydusify convert`'s for the same image:\n\n")
	p("| workload | form | OCI layers (MB) | added (KB) | of which blobs (KB) | added ÷ OCI layers | target ≤ 5%% (zran) | index or conversion (s) | ÷ nydusify convert | target ≤ 0.3× (zran) |\n|---|---|--:|--:|--:|--:|---|--:|--:|---|\n")
	for _, row := range rows {
		p("%s", row)
	}
	p("\n")
}

// byRef writes the by-reference forms' cold starts against OCI and each
// other, and SOCI's lazy mounts (layers mounted lazily of those it saw).
func (r *report) byRef(p func(string, ...any), pr profile) {
	var rows []string
	for _, w := range r.Workloads {
		so, zr, o := r.cell(w.Name, formSOCI.Name, pr.Name), r.cell(w.Name, formZran.Name, pr.Name), r.cell(w.Name, formOCI.Name, pr.Name)
		if !so.ok && !zr.ok {
			continue
		}
		target := "—"
		if pr.Mbit > 0 {
			target = verdictIf(so.ok && zr.ok, zr.total.Seconds() <= 0.8*so.total.Seconds())
		}
		var remote, local []int64
		for _, x := range r.Results {
			if x.Workload == w.Name && x.Form == formSOCI.Name && x.Profile == pr.Name && x.Err == "" {
				remote, local = append(remote, int64(x.RemoteLayers)), append(local, int64(x.LocalLayers))
			}
		}
		lazy := "—"
		if len(remote) > 0 {
			lazy = fmt.Sprintf("%d of %d", median(remote), median(remote)+median(local))
		}
		rows = append(rows, fmt.Sprintf("| %s | %s | %s | %s | %s | %s | %s | %s |\n", w.Name,
			ratio(so.total.Seconds(), o.total.Seconds()), ratio(zr.total.Seconds(), o.total.Seconds()), ratio(zr.total.Seconds(), so.total.Seconds()), target,
			ratio(float64(so.bytes), float64(o.bytes)), ratio(float64(zr.bytes), float64(so.bytes)), lazy))
	}
	if len(rows) == 0 {
		return
	}
	p("By reference (total cold start and bytes fetched; *SOCI lazy layers* are the layers the SOCI snapshotter mounted lazily, of those it was asked for, from its log):\n\n| workload | SOCI ÷ OCI | zran ÷ OCI | zran ÷ SOCI | target ≤ 0.8× (constrained) | fetched, SOCI ÷ OCI | fetched, zran ÷ SOCI | SOCI lazy layers |\n|---|--:|--:|--:|---|--:|--:|--:|\n")
	for _, row := range rows {
		p("%s", row)
	}
	p("\n")
}
