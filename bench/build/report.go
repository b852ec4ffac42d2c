package main

import (
	"github.com/nydus-go/nydus/bench/internal/benchkit"

	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Targets from the project's issue.
const (
	targetSpeedRatio = 0.8 // of `zstd -3 -T0` throughput
	targetRSSMiB     = 256 // peak RSS on a ~1 GiB layer
)

// row aggregates the runs of one contender.
type row struct {
	group, kind, label string
	inputBytes         int64
	walls, cpus        []float64
	others             []float64 // cores other processes kept busy
	rss, out           []int64
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func (r *row) wall() float64 { return median(r.walls) }
func (r *row) mbps() float64 { return float64(r.inputBytes) / 1e6 / r.wall() }
func (r *row) cpuPct() float64 {
	return 100 * median(r.cpus) / r.wall()
}
func (r *row) cpuSec() float64     { return median(r.cpus) }
func (r *row) mbPerCPUs() float64  { return float64(r.inputBytes) / 1e6 / r.cpuSec() }
func (r *row) otherCores() float64 { return median(r.others) }
func (r *row) maxRSS() int64       { return slices.Max(r.rss) }
func (r *row) outSize() int64 {
	s := slices.Clone(r.out)
	slices.Sort(s)
	return s[len(s)/2]
}

// rowsOf groups the records by input and contender, in the order of
// their first run.
func rowsOf(records []record) ([]*row, error) {
	var rows []*row
	byLabel := map[string]*row{}
	for _, rec := range records {
		key := rec.group + "\x00" + rec.label
		r := byLabel[key]
		if r == nil {
			r = &row{group: rec.group, kind: rec.kind, label: rec.label, inputBytes: rec.inputBytes}
			byLabel[key] = r
			rows = append(rows, r)
		}
		r.walls = append(r.walls, rec.wall)
		r.cpus = append(r.cpus, rec.cpu)
		r.others = append(r.others, rec.others/rec.wall)
		r.rss = append(r.rss, rec.rssKiB)
		r.out = append(r.out, rec.outBytes)
	}
	if len(rows) == 0 {
		return nil, errors.New("no runs recorded")
	}
	return rows, nil
}

// writeSection prints the section and splices it into the doc.
func writeSection(doc, heading, body string) error {
	fmt.Print(body)
	if err := benchkit.SpliceSection(doc, heading, body, docHeader); err != nil {
		return fmt.Errorf("update %s: %w", doc, err)
	}
	return nil
}

// readStats reads the "trace.stats" of a `nydus-image create -J` report.
func readStats(path string) (map[string]float64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var v struct {
		Trace struct {
			Stats map[string]float64 `json:"stats"`
		} `json:"trace"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return v.Trace.Stats, nil
}

func ref(rows []*row, group string) *row {
	for _, r := range rows {
		if r.group == group && r.kind == "zstd" {
			return r
		}
	}
	return nil
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

// profileParts are the functions whose cumulative share of the CPU
// profile the report quotes; missing ones (renamed, or not sampled) are
// left out.
var profileParts = []struct{ fn, what string }{
	{"github.com/nydus-go/nydus/pkg/compress.Compress", "zstd compression of chunks"},
	{"github.com/nydus-go/nydus/pkg/builder.readTar", "tar parsing and copying chunk data (reader goroutine)"},
	{"github.com/nydus-go/nydus/pkg/digester.Sum", "BLAKE3 chunk digests"},
	{"github.com/nydus-go/nydus/pkg/builder.(*pipeline).committer", "ordered commit (blob sha256 + write)"},
	{"github.com/nydus-go/nydus/pkg/builder.marshalTree", "bootstrap"},
	{"runtime.gcBgMarkWorker", "garbage collector"},
}

// summariseProfile quotes the cum% of profileParts from `pprof -top -cum`.
func summariseProfile(text string) string {
	cum := map[string]string{}
	for _, l := range strings.Split(text, "\n") {
		f := strings.Fields(l)
		if len(f) >= 6 && strings.HasSuffix(f[4], "%") {
			cum[strings.Join(f[5:], " ")] = f[4]
		}
	}
	var parts []string
	for _, p := range profileParts {
		if v, ok := cum[p.fn]; ok {
			parts = append(parts, fmt.Sprintf("%s %s", p.what, v))
		}
	}
	return strings.Join(parts, ", ")
}

// render writes the section: facts about the run, the table, the peak
// RSS on the big layer, the interpretation, the exact commands and the
// CPU profile (if any).
func render(heading string, rows []*row, kv map[string]string, stats map[string]float64, cmds [][2]string, prof, summary string) string {
	var b strings.Builder
	f := facts(kv)
	fmt.Fprintf(&b, "%s\n\n", heading)
	renderIntro(&b, rows, f)
	renderTable(&b, rows, kv)
	big := bigOurs(rows)
	renderPeakRSS(&b, big, kv)
	renderInterpretation(&b, rows, big, f, stats, summary)
	renderCommands(&b, cmds)
	renderProfile(&b, prof)
	b.WriteString("\n")
	return b.String()
}

// facts looks facts up, "?" for a missing or empty one.
type facts map[string]string

func (f facts) get(k string) string {
	if v, ok := f[k]; ok && v != "" {
		return v
	}
	return "?"
}

func renderIntro(b *strings.Builder, rows []*row, f facts) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("Written by `make bench-build` (`bench/build`); rerun it to refresh these figures.\n\n")
	p("- Command: `%s` (work dir `%s`, outputs on %s)\n", f.get("command"), f.get("workdir"), f.get("outfs"))
	p("- Date: %s; commit `%s`; %s\n", f.get("date"), f.get("commit"), f.get("go"))
	p("- Machine: nproc %s (GOMAXPROCS %s), %s, kernel %s, %s RAM\n", f.get("nproc"), f.get("gomaxprocs"), f.get("cpu"), f.get("kernel"), f.get("mem"))
	p("- Tools: %s; %s\n", f.get("zstd_version"), f.get("erofs_version"))
	p("- Layer: %s\n", f.get("layer_desc"))
	p("- 1 GiB layer: %s\n", f.get("big_desc"))
	p("\nEach contender ran %d times, interleaved, with its input already in the page cache; the table shows the median. ", len(rows[0].walls))
	p("Before each run the benchmark waits (bounded) for other processes to leave the CPUs idle and retries a run during which they kept more than %s cores busy; *Others* is what they still used during the recorded runs (median, in cores). ", f.get("reject"))
	p("MB/s is input bytes (the layer tar's size, for `mkfs.erofs` too, which reads the same files from the unpacked tree) / 10^6 / median wall seconds. ")
	p("CPU is (user+sys)/wall (100%% per busy core); *MB/CPU-s* is input MB per CPU-second, which contention on the shared machine distorts much less than wall time. ")
	p("Output is blob + bootstrap for `nydus-image -B`, the blob (bootstrap inside) for `--blob-inline-meta`, image + blob device for `mkfs.erofs --blobdev`; sizes in 10^6 bytes.\n\n")
}

func renderTable(b *strings.Builder, rows []*row, kv map[string]string) {
	b.WriteString("| Input | Contender | Median s | Runs (s) | MB/s | Speed ÷ zstd | CPU | MB/CPU-s | Peak RSS | Output | Size ÷ zstd | Others |\n")
	b.WriteString("|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, r := range rows {
		b.WriteString(tableRow(r, ref(rows, r.group), kv))
	}
	b.WriteString("\n")
}

// tableRow is r's line of the table; z is its group's zstd row, if any.
func tableRow(r, z *row, kv map[string]string) string {
	speed, size := "–", "–"
	if z != nil {
		speed = fmt.Sprintf("%.2f×", r.mbps()/z.mbps())
		if z.outSize() > 0 {
			size = fmt.Sprintf("%.3f", float64(r.outSize())/float64(z.outSize()))
		}
	}
	var runs []string
	for _, w := range r.walls {
		runs = append(runs, fmt.Sprintf("%.2f", w))
	}
	return fmt.Sprintf("| %s | %s | %.3f | %s | %.1f | %s | %.0f%% | %.1f | %.0f MiB | %.1f MB | %s | %.2f |\n",
		groupName(r.group, kv), "`"+r.label+"`", r.wall(), strings.Join(runs, " / "), r.mbps(), speed, r.cpuPct(), r.mbPerCPUs(), mib(r.maxRSS()), float64(r.outSize())/1e6, size, r.otherCores())
}

// bigOurs is the row of nydus-image on the big layer, or nil.
func bigOurs(rows []*row) *row {
	for _, r := range rows {
		if r.group == "big" && r.kind == "ours" {
			return r
		}
	}
	return nil
}

func rssOK(r *row) bool { return mib(r.maxRSS()) <= targetRSSMiB }

func renderPeakRSS(b *strings.Builder, big *row, kv map[string]string) {
	if big == nil {
		return
	}
	var all []string
	for _, k := range big.rss {
		all = append(all, fmt.Sprintf("%.0f", mib(k)))
	}
	fmt.Fprintf(b, "**Peak RSS** of `%s` on the %s (wait4's `ru_maxrss`, max of %d runs): **%.0f MiB** (runs: %s MiB); target ≤ %d MiB: **%s**. Throughput there: %.1f MB/s.\n\n",
		big.label, groupName("big", kv), len(big.rss), mib(big.maxRSS()), strings.Join(all, " / "), targetRSSMiB, benchkit.Verdict(rssOK(big)), big.mbps())
}

func renderInterpretation(b *strings.Builder, rows []*row, big *row, f facts, stats map[string]float64, summary string) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p("Interpretation:\n\n")
	z := ref(rows, "layer")
	for _, r := range rows {
		if r.group != "layer" || r.kind != "ours" || z == nil {
			continue
		}
		ratio := r.mbps() / z.mbps()
		p("- `%s`: %.1f MB/s = %.2f× `%s` (%.1f MB/s); target ≥ %.1f×: **%s**. It kept %.2f of %s cores busy (zstd: %.2f); per CPU-second it does %.2f× zstd's work; its output is %.3f× the size of zstd's.\n",
			r.label, r.mbps(), ratio, z.label, z.mbps(), targetSpeedRatio, benchkit.Verdict(ratio >= targetSpeedRatio), r.cpuPct()/100, f.get("nproc"), z.cpuPct()/100,
			r.mbPerCPUs()/z.mbPerCPUs(), float64(r.outSize())/float64(z.outSize()))
	}
	if big != nil {
		p("- Peak RSS on the 1 GiB layer: %.0f MiB, target ≤ %d MiB: **%s**.", mib(big.maxRSS()), targetRSSMiB, benchkit.Verdict(rssOK(big)))
		if stats != nil && stats["bytes"] > 0 {
			p(" That layer holds %.0f files; %.0f%% of its %.0f MB of file data were deduplicated chunks (the repeated copies of the rootfs), which are hashed but not compressed nor stored, so its MB/s is not comparable with the first rows'.",
				stats["files"], 100*stats["dedup_bytes"]/stats["bytes"], stats["bytes"]/1e6)
		}
		p("\n")
	}
	if summary != "" {
		p("- Where the builder's CPU time goes (share of CPU samples of one in-process build of the layer, see the profile below): %s.\n", summary)
	}
	renderNoise(b, rows, f)
	p("- `zstd -3 -T0` splits one stream into multi-MiB jobs compressed on all cores and does nothing else; the builder also parses the tar, hashes every 1 MiB chunk (BLAKE3) for dedup and the chunk table, compresses each chunk as its own zstd frame, sha256-hashes the blob, and writes the RAFS bootstrap, so matching zstd exactly is not expected.\n")
	p("- `mkfs.erofs` (erofs-utils %s) builds an *uncompressed* image on one thread: it is a lower bound on the metadata + copy cost, not a like-for-like contender.\n", strings.TrimPrefix(f.get("erofs_version"), "mkfs.erofs "))
	if strings.HasPrefix(f.get("outfs"), "tmpfs") {
		p("- Outputs went to %s, so `nydus-image`'s fsync of its outputs costs nothing here; on a disk it would add the device's write time.\n", f.get("outfs"))
	} else {
		p("- Outputs went to %s; `nydus-image` fsyncs its outputs, the other tools do not, which counts against it here.\n", f.get("outfs"))
	}
}

// renderNoise notes the contention the runs met and the spread of the
// CPU time of one and the same job.
func renderNoise(b *strings.Builder, rows []*row, f facts) {
	maxOthers := 0.0
	for _, r := range rows {
		maxOthers = max(maxOthers, slices.Max(r.others))
	}
	fmt.Fprintf(b, "- The machine is shared with other sessions' builds and tests: the benchmark %s; other processes still used up to %.2f cores during a recorded run. ", f.get("contention"), maxOthers)
	spread, label := cpuSpread(rows, f)
	fmt.Fprintf(b, "Even on idle CPUs the VM is noisy: the CPU time of one and the same job varied by up to %.0f%% between its runs (%s), so ratios of single medians are good to about that much.\n", 100*spread, label)
}

// cpuSpread is the largest max/min-1 of the CPU times of a row's runs
// (mkfs.erofs left out), and which row.
func cpuSpread(rows []*row, kv map[string]string) (float64, string) {
	spread, label := 0.0, ""
	for _, r := range rows {
		if r.kind == "erofs" || len(r.cpus) < 2 {
			continue
		}
		if v := slices.Max(r.cpus)/slices.Min(r.cpus) - 1; v > spread {
			spread, label = v, "`"+r.label+"` on the "+groupName(r.group, kv)
		}
	}
	return spread, label
}

func renderCommands(b *strings.Builder, cmds [][2]string) {
	if len(cmds) == 0 {
		return
	}
	b.WriteString("\nExact commands (`$L` = layer tar, `$B` = 1 GiB layer tar, `$R` = rootfs tree, `$O` = output dir):\n\n")
	for _, c := range cmds {
		fmt.Fprintf(b, "- `%s`: `%s`\n", c[0], c[1])
	}
}

func renderProfile(b *strings.Builder, prof string) {
	if prof != "" {
		fmt.Fprintf(b, "\n<details><summary>CPU profile of one in-process build of the layer (`bench/build profile`, `go tool pprof -top`)</summary>\n\n```\n%s\n```\n\n</details>\n", prof)
	}
}

func groupName(g string, kv map[string]string) string {
	switch g {
	case "layer":
		if v := kv["layer_short"]; v != "" {
			return v
		}
	case "big":
		if v := kv["big_short"]; v != "" {
			return v
		}
	}
	return g
}

const docHeader = `# Benchmarks

Performance figures measured on the project's machines. Each section is
written by the script named in its heading; rerun it to refresh the
figures. Other sections are left as they are.

`
