package main

import (
	"context"

	"github.com/nydus-go/nydus/bench/internal/benchkit"

	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Targets from the project's issue.
const (
	targetSpeedRatio = 5.0 // eStargz conversion time / Nydus conversion time, at least
	targetSizeRatio  = 1.0 // Nydus image size / OCI gzip image size, at most
)

// famEntry is one image of the dedup family, in conversion order.
type famEntry struct {
	name, dict, desc string
}

// plan is what the benchmark tells the report about the run: the images it
// pushed and converted (registry references), nydusify's JSON reports,
// the family's order, the exact commands and free-form notes.
type plan struct {
	images map[string]string
	jsons  map[string]string
	family []famEntry
	tags   [][3]string // image key prefix, HOST:PORT/REPO, tag prefix
	cmds   [][2]string
	notes  []string
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// timing is a row of the speed table: per-round wall and CPU seconds.
type timing struct {
	walls, cpus, svcs, others []float64
}

func (t timing) ok() bool            { return len(t.walls) > 0 }
func (t timing) wall() float64       { return median(t.walls) }
func (t timing) cpuPct() float64     { return 100 * median(t.cpus) / t.wall() }
func (t timing) otherCores() float64 { return median(t.others) }
func (t timing) cpuSec() float64     { return median(t.cpus) }
func (t timing) svcSec() float64     { return median(t.svcs) }

// totalCPU is the median over runs of the command's plus the services'
// CPU seconds.
func (t timing) totalCPU() float64 {
	v := make([]float64, len(t.cpus))
	for i := range v {
		v[i] = t.cpus[i] + t.svcs[i]
	}
	return median(v)
}

func timingOf(rs []record) timing {
	var t timing
	for _, r := range rs {
		t.walls = append(t.walls, r.wall)
		t.cpus = append(t.cpus, r.cpu)
		t.svcs = append(t.svcs, r.svc)
		t.others = append(t.others, r.others/r.wall)
	}
	return t
}

// sumTiming adds the labels' records round by round (rounds that lack
// one of them are skipped).
func sumTiming(res map[string][]record, labels ...string) timing {
	byRound := map[int][]record{}
	for _, l := range labels {
		for _, r := range res[l] {
			byRound[r.round] = append(byRound[r.round], r)
		}
	}
	var rounds []int
	for k, rs := range byRound {
		if len(rs) == len(labels) {
			rounds = append(rounds, k)
		}
	}
	slices.Sort(rounds)
	var t timing
	for _, k := range rounds {
		var w, c, sv, o float64
		for _, r := range byRound[k] {
			w += r.wall
			c += r.cpu
			sv += r.svc
			o += r.others
		}
		t.walls = append(t.walls, w)
		t.cpus = append(t.cpus, c)
		t.svcs = append(t.svcs, sv)
		t.others = append(t.others, o/w)
	}
	return t
}

// nydusReport is the part of nydusify's --output-json report used here.
type nydusReport struct {
	Images []struct {
		Layers []struct {
			BlobSize int64 `json:"blob_size"`
			InImage  bool  `json:"in_image"`
			Stats    struct {
				Files      int    `json:"files"`
				Bytes      uint64 `json:"bytes"`
				DedupBytes uint64 `json:"dedup_bytes"`
			} `json:"stats"`
		} `json:"layers"`
		SourceSize    int64    `json:"source_size"`
		NydusSize     int64    `json:"nydus_size"`
		BootstrapSize int64    `json:"bootstrap_size"`
		DedupBytes    uint64   `json:"dedup_bytes"`
		DictBlobs     []string `json:"chunk_dict_blobs"`
	} `json:"images"`
	Seconds float64 `json:"seconds"`
}

func readNydusReport(path string) (*nydusReport, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r nydusReport
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(r.Images) == 0 {
		return nil, fmt.Errorf("%s: no images", path)
	}
	return &r, nil
}

// writeReport reads the plan's images back from the registry (and the
// tags it names) and nydusify's JSON reports, renders the section,
// prints it and splices it into doc.
func writeReport(ctx context.Context, doc string, res map[string][]record, p *plan, kv map[string]string) error {
	for _, t := range p.tags {
		host, repo, _, err := splitRef(t[1])
		if err != nil {
			return err
		}
		tags, err := listTags(host, repo)
		if err != nil {
			return err
		}
		for _, tag := range tags {
			if strings.HasPrefix(tag, t[2]) {
				p.images[t[0]+tag] = t[1] + ":" + tag
			}
		}
	}
	imgs := map[string]*image{}
	for k, ref := range p.images {
		if err := ctx.Err(); err != nil {
			return err
		}
		im, err := fetchImage(ref)
		if err != nil {
			return fmt.Errorf("image %s: %w", k, err)
		}
		imgs[k] = im
	}
	reps := map[string]*nydusReport{}
	for k, path := range p.jsons {
		r, err := readNydusReport(path)
		if err != nil {
			return err
		}
		reps[k] = r
	}
	body, err := render(heading, res, p, imgs, reps, kv)
	if err != nil {
		return err
	}
	fmt.Print(body)
	return benchkit.SpliceSection(doc, heading, body, docHeader)
}

// shortRef drops the registry host (a temporary port) from a reference.
func shortRef(ref string) string {
	if _, rest, ok := strings.Cut(ref, "/"); ok {
		return rest
	}
	return ref
}

func mb(n int64) string { return fmt.Sprintf("%.2f MB", float64(n)/1e6) }

func runsText(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	return strings.Join(s, " / ")
}

// Labels of the speed runs.
const (
	lNydus      = "speed/nydus"
	lNydusIndep = "speed/nydus-independent"
	lFetch      = "speed/estargz-fetch"
	lConvert    = "speed/estargz-convert"
	lPush       = "speed/estargz-push"
	lZstdConv   = "speed/zstdchunked-convert"
)

// uniq accumulates distinct blob digests in conversion order.
type uniq struct {
	seen              map[string]bool
	blobs, boots, all int64
}

func newUniq() *uniq { return &uniq{seen: map[string]bool{}} }

// add counts the layers of im not seen before and returns their bytes.
func (u *uniq) add(im *image) int64 {
	var n int64
	for _, l := range im.layers {
		if u.seen[l.Digest] {
			continue
		}
		u.seen[l.Digest] = true
		n += l.Size
		u.all += l.Size
		if l.role == "nydus-bootstrap" {
			u.boots += l.Size
		} else {
			u.blobs += l.Size
		}
	}
	return n
}

func render(heading string, res map[string][]record, p *plan, imgs map[string]*image, reps map[string]*nydusReport, kv map[string]string) (string, error) {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	get := func(k string) string {
		if v, ok := kv[k]; ok && v != "" {
			return v
		}
		return "?"
	}
	w("%s\n\n", heading)
	w("Written by `bench/convert` (`make bench-convert`); rerun it to refresh these figures. All figures below come from one invocation.\n\n")
	w("- Command: `%s` (as root; cache `%s`, temporary files on %s)\n", get("command"), get("workdir"), get("tmpfs"))
	w("- Date: %s; commit `%s`; %s\n", get("date"), get("commit"), get("go"))
	w("- Machine: nproc %s, %s, kernel %s, %s RAM\n", get("nproc"), get("cpu"), get("kernel"), get("mem"))
	w("- Tools: %s\n", get("tools"))
	w("- Services: a temporary `docker-registry` on %s and a temporary containerd (own config, root, state and sockets under the temporary directory, CRI plugin disabled), both stopped by PID at the end\n", get("registry"))
	w("- Run: the whole `make bench-convert` took %s s up to this report (%s)\n", get("elapsed"), get("cache"))
	w("- Contention: %s\n\n", get("contention"))

	// --- 1. speed and size ----------------------------------------------
	oci, esgz, nyd, nydI := imgs["speed/oci"], imgs["speed/estargz"], imgs["speed/nydus"], imgs["speed/nydus-independent"]
	if oci == nil || esgz == nil || nyd == nil || nydI == nil {
		return "", errors.New("plan lacks one of the images speed/oci, speed/estargz, speed/nydus, speed/nydus-independent")
	}
	tN, tNI := timingOf(res[lNydus]), timingOf(res[lNydusIndep])
	tF, tC, tP := timingOf(res[lFetch]), timingOf(res[lConvert]), timingOf(res[lPush])
	tCP, tFCP := sumTiming(res, lConvert, lPush), sumTiming(res, lFetch, lConvert, lPush)
	tZ := timingOf(res[lZstdConv])
	if !tN.ok() || !tNI.ok() || !tC.ok() || !tP.ok() || !tF.ok() || !tCP.ok() {
		return "", errors.New("results lack some of the speed runs")
	}
	var fileBytes uint64
	var files int
	if r := reps["speed/nydus"]; r != nil {
		for _, l := range r.Images[0].Layers {
			fileBytes += l.Stats.Bytes
			files += l.Stats.Files
		}
	}
	w("### Conversion speed and size: one 2-layer Debian image\n\n")
	w("Image `$REG/%s`: layer 1 = %s; layer 2 = %s. It is pushed to the registry as an OCI image with gzip layers (%s): %d layers, %s compressed",
		shortRef(oci.ref), get("layer1_desc"), get("layer2_desc"), get("oci_desc"), len(oci.layers), mb(oci.size()))
	if fileBytes > 0 {
		w(", %d files / %s of file data (nydusify's count)", files, mb(int64(fileBytes)))
	}
	w(".\n\n")
	w("Each conversion ran %s times, the rounds interleaved; the table shows the median and every run. Nydus conversions push to a fresh repository each round; before each eStargz round containerd's images are removed (`ctr image rm --sync`, content garbage-collected), so every round starts from the registry. *CPU s* is the median user+system time of the command (and its children), *CPU* that time / wall time (100%% per busy core); *Services CPU s* is what the temporary registry and containerd used meanwhile (for `ctr` and `ctr-remote` containerd does part of the work: it reads and writes the content store); *Others* is how many cores the other processes on the shared machine kept busy meanwhile (median).\n\n", get("runs"))
	w("| Step | Median s | Runs (s) | CPU s | CPU | Services CPU s | Others | Output |\n|---|--:|---|--:|--:|--:|--:|--:|\n")
	row := func(name string, t timing, out string) {
		if !t.ok() {
			return
		}
		w("| %s | %.2f | %s | %.2f | %.0f%% | %.2f | %.2f | %s |\n", name, t.wall(), runsText(t.walls), t.cpuSec(), t.cpuPct(), t.svcSec(), t.otherCores(), out)
	}
	row("Nydus: `nydusify convert` (registry → registry, default options)", tN, "Nydus "+mb(nyd.size()))
	row("Nydus: `nydusify convert --independent` (registry → registry)", tNI, "Nydus "+mb(nydI.size()))
	row("eStargz: `ctr content fetch` (registry → containerd content store)", tF, "")
	row("eStargz: `ctr-remote image convert --estargz --oci` (content store → content store)", tC, "eStargz "+mb(esgz.size()))
	row("eStargz: `ctr image push` (content store → registry)", tP, "")
	row("eStargz: convert + push", tCP, "")
	row("eStargz: fetch + convert + push (registry → registry)", tFCP, "")
	if tZ.ok() {
		out := ""
		if z := imgs["speed/zstdchunked"]; z != nil {
			out = "zstd:chunked " + mb(z.size())
		}
		row("for reference: `ctr-remote image convert --zstdchunked --oci` (content store → content store)", tZ, out)
	}
	w("\n")
	nBlobs, nBoot := nyd.size("nydus-blob"), nyd.size("nydus-bootstrap")
	iBlobs, iBoot := nydI.size("nydus-blob"), nydI.size("nydus-bootstrap")
	w("| Image (sizes from the registry's manifests) | Layers | Size | ÷ OCI gzip |\n|---|--:|--:|--:|\n")
	w("| OCI, gzip layers (source) | %d | %s | 1.000 |\n", len(oci.layers), mb(oci.size()))
	w("| eStargz (`ctr-remote image convert --estargz --oci`, pushed; %d of %d layers carry a TOC digest) | %d | %s | %.3f |\n",
		esgz.count("estargz"), len(esgz.layers), len(esgz.layers), mb(esgz.size()), float64(esgz.size())/float64(oci.size()))
	w("| Nydus (`nydusify convert`): %d blobs %s + bootstrap layer %s | %d | %s | %.3f |\n",
		nyd.count("nydus-blob"), mb(nBlobs), mb(nBoot), len(nyd.layers), mb(nyd.size()), float64(nyd.size())/float64(oci.size()))
	w("| Nydus (`nydusify convert --independent`): %d blobs %s + bootstrap layer %s | %d | %s | %.3f |\n",
		nydI.count("nydus-blob"), mb(iBlobs), mb(iBoot), len(nydI.layers), mb(nydI.size()), float64(nydI.size())/float64(oci.size()))
	if z := imgs["speed/zstdchunked"]; z != nil {
		w("| for reference: zstd:chunked (`ctr-remote image convert --zstdchunked --oci`, pushed) | %d | %s | %.3f |\n",
			len(z.layers), mb(z.size()), float64(z.size())/float64(oci.size()))
	}
	w("\n")
	speed := tC.wall() / tN.wall()
	sizeR := float64(nyd.size()) / float64(oci.size())
	w("Result:\n\n")
	w("- **Speed**: eStargz conversion %.2f s ÷ Nydus conversion %.2f s = **%.1f×**; target ≥ %.0f×: **%s**. ", tC.wall(), tN.wall(), speed, targetSpeedRatio, benchkit.Verdict(speed >= targetSpeedRatio))
	w("The eStargz time here excludes moving any bytes to or from the registry, while nydusify's includes pulling the source and pushing the result. Counting eStargz's push (convert + push, %.2f s) the ratio is %.1f×; counting the fetch as well (registry → registry like nydusify, %.2f s) it is %.1f×. Against `nydusify convert --independent` (%.2f s) the ratios are %.1f× / %.1f× / %.1f×.\n",
		tCP.wall(), tCP.wall()/tN.wall(), tFCP.wall(), tFCP.wall()/tN.wall(), tNI.wall(), tC.wall()/tNI.wall(), tCP.wall()/tNI.wall(), tFCP.wall()/tNI.wall())
	w("- By CPU time, which contention on the shared machine distorts less than wall time: the eStargz conversion used %.1f CPU-s (`ctr-remote` + containerd + registry), nydusify %.1f CPU-s for the whole job (nydusify + registry): %.1f×.\n",
		tC.totalCPU(), tN.totalCPU(), tC.totalCPU()/tN.totalCPU())
	if tZ.ok() {
		w("- For reference, `ctr-remote image convert --zstdchunked --oci` (zstd instead of gzip, one run) took %.2f s (%.1f× nydusify), ", tZ.wall(), tZ.wall()/tN.wall())
		switch {
		case tZ.wall() < 0.5*tC.wall():
			w("so much of the eStargz time is its gzip compression.\n")
		default:
			if tZ.wall() >= tC.wall() {
				w("no faster than eStargz with gzip, ")
			} else {
				w("not much faster than eStargz with gzip, ")
			}
			w("so the gap is not mainly gzip level 9 against zstd: `ctr-remote` 0.12 spends far more CPU per image (its client alone used %.1f CPU-s for eStargz and %.1f for zstd:chunked, containerd another %.1f and %.1f) than nydusify does for the whole job (%.1f CPU-s), while both keep about as many cores busy (%.1f and %.1f).\n",
				tC.cpuSec(), tZ.cpuSec(), tC.svcSec(), tZ.svcSec(), tN.cpuSec(), tC.cpuPct()/100, tN.cpuPct()/100)
		}
	}
	w("- **Size**: Nydus %s ÷ OCI gzip %s = **%.3f**; target ≤ %.1f: **%s** (eStargz: %.3f; Nydus `--independent`: %.3f).\n",
		mb(nyd.size()), mb(oci.size()), sizeR, targetSizeRatio, benchkit.Verdict(sizeR <= targetSizeRatio), float64(esgz.size())/float64(oci.size()), float64(nydI.size())/float64(oci.size()))
	if r := reps["speed/nydus"]; r != nil {
		im := r.Images[0]
		w("- nydusify's own report for one round: source %s, Nydus %s (bootstrap %s), %s of file data deduplicated (chunks already stored, in this layer or the ones below)",
			mb(im.SourceSize), mb(im.NydusSize), mb(im.BootstrapSize), mb(int64(im.DedupBytes)))
		if r2 := reps["speed/nydus-independent"]; r2 != nil {
			w("; with `--independent`: %s deduplicated", mb(int64(r2.Images[0].DedupBytes)))
		}
		w(".\n")
	}
	w("\n")

	// --- 2. family dedup ----------------------------------------------------
	if len(p.family) > 0 {
		modes := []struct{ key, name string }{
			{"dict", "Nydus, `--chunk-dict`"},
			{"default", "Nydus, defaults (dedup scope)"},
			{"none", "Nydus, `--dedup-scope none`"},
			{"independent", "Nydus `--independent --dedup-scope none`"},
		}
		for _, f := range p.family {
			for _, k := range append([]string{"oci"}, "dict", "default", "none", "independent") {
				if imgs["family/"+f.name+"/"+k] == nil {
					return "", fmt.Errorf("plan lacks the image family/%s/%s", f.name, k)
				}
			}
		}
		w("### Dedup across an image family\n\n")
		w("%d images, pushed as OCI gzip images, then converted in this order (top to bottom) into one repository per column, four ways: with `--chunk-dict bootstrap:registry:<the Nydus image in the *Chunk dict* column>` (converted earlier in the same way); with nydusify's defaults, which dedup against the chunk dictionary nydusify keeps in the target repository (the dedup scope; no dict named); with `--dedup-scope none`; and upstream-style with `--independent --dedup-scope none`. *New bytes* is what the image adds to the registry: the sizes of the layer blobs (for Nydus: data blobs and the bootstrap layer) whose digest no image above it in the same column references; the manifests are read back from the registry. *Deduplicated* is nydusify's `dedup_bytes` for the default conversion: uncompressed file data it found in the dictionary or in a lower layer and did not store again.\n\n", len(p.family))
		w("| # | Image | OCI layers | OCI gzip | Chunk dict | Deduplicated | Convert s | New bytes: OCI gzip | Nydus, `--chunk-dict` | Nydus, defaults | Nydus, `--dedup-scope none` | Nydus `--independent` |\n")
		w("|--:|---|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|\n")
		uo := newUniq()
		u := map[string]*uniq{}
		for _, m := range modes {
			u[m.key] = newUniq()
		}
		var ociSum int64
		var worse []string // images that add more with the dict than without
		for i, f := range p.family {
			o := imgs["family/"+f.name+"/oci"]
			ociSum += o.size()
			newO := uo.add(o)
			nd := u["dict"].add(imgs["family/"+f.name+"/dict"])
			ns := u["default"].add(imgs["family/"+f.name+"/default"])
			nn := u["none"].add(imgs["family/"+f.name+"/none"])
			ni := u["independent"].add(imgs["family/"+f.name+"/independent"])
			if ns > nn {
				worse = append(worse, fmt.Sprintf("`%s` adds %s with the scope's dict and %s without; its bootstrap layer is %s with the dict and %s without",
					f.name, mb(ns), mb(nn), mb(imgs["family/"+f.name+"/default"].size("nydus-bootstrap")), mb(imgs["family/"+f.name+"/none"].size("nydus-bootstrap"))))
			}
			dict := "—"
			if f.dict != "-" && f.dict != "" {
				dict = "`" + f.dict + "`"
			}
			dedup := "?"
			if r := reps["family/"+f.name+"/default"]; r != nil {
				dedup = mb(int64(r.Images[0].DedupBytes))
			}
			secs := "?"
			if t := timingOf(res["family/default/"+f.name]); t.ok() {
				secs = fmt.Sprintf("%.2f", t.wall())
			}
			w("| %d | `%s`: %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
				i+1, f.name, f.desc, len(o.layers), mb(o.size()), dict, dedup, secs, mb(newO), mb(nd), mb(ns), mb(nn), mb(ni))
		}
		// The dedup scope's dictionary artifacts are stored too: they count
		// in the defaults column.
		var arts []string
		for k := range imgs {
			if strings.HasPrefix(k, "family-dictart/") {
				arts = append(arts, k)
			}
		}
		sort.Strings(arts)
		var artBytes int64
		for _, k := range arts {
			artBytes += u["default"].add(imgs[k])
		}
		w("| | dictionary artifacts (the dedup scope's `nydus-chunk-dict-*` tags left in the repository: %d) | | | | | | | | %s | | |\n", len(arts), mb(artBytes))
		w("| | **Total** | | **%s** | | | | **%s** | **%s** | **%s** | **%s** | **%s** |\n",
			mb(ociSum), mb(uo.all), mb(u["dict"].all), mb(u["default"].all), mb(u["none"].all), mb(u["independent"].all))
		w("| | of which bootstrap layers | | | | | | | %s | %s | %s | %s |\n\n",
			mb(u["dict"].boots), mb(u["default"].boots), mb(u["none"].boots), mb(u["independent"].boots))
		w("Result:\n\n")
		w("- Sum of the %d images' OCI gzip layer sizes: **%s**; distinct OCI layers (what the registry stores, identical layers counted once): %s.\n", len(p.family), mb(ociSum), mb(uo.all))
		for _, m := range modes {
			x := u[m.key]
			blobs, extra := x.blobs, ""
			if m.key == "default" {
				blobs -= artBytes
				extra = fmt.Sprintf(" + %d dictionary artifacts %s", len(arts), mb(artBytes))
			}
			w("- %s: unique blob bytes **%s** (data blobs %s + bootstrap layers %s%s) = %.3f of the OCI sum, %.3f of the distinct OCI layers.\n",
				m.name, mb(x.all), mb(blobs), mb(x.boots), extra, float64(x.all)/float64(ociSum), float64(x.all)/float64(uo.all))
		}
		ratio := float64(u["default"].all) / float64(ociSum)
		verdict := "met"
		if ratio > 0.35 {
			verdict = "NOT met"
		}
		w("- Defaults (the dedup scope, its dictionary artifacts included): %.3f of the OCI sum; target ≤ 0.35: **%s**. They save %s (%.0f%%) over upstream-style `--independent` conversion and %s over `--dedup-scope none`.\n",
			ratio, verdict, mb(u["independent"].all-u["default"].all), 100*float64(u["independent"].all-u["default"].all)/float64(u["independent"].all), mb(u["none"].all-u["default"].all))
		if len(worse) > 0 {
			w("- The scope's dict does not help every image: %s.\n", strings.Join(worse, "; "))
		}
		w("\n")
	}

	// --- notes and commands -------------------------------------------------
	if len(p.notes) > 0 {
		w("Interpretation and notes:\n\n")
		for _, n := range p.notes {
			w("- %s\n", n)
		}
		w("\n")
	}
	if len(p.cmds) > 0 {
		w("Exact commands (`$REG` = the temporary registry, `$SRC` = `$REG/bench/bookworm-curl:oci`, `$R` = round, `$A` = attempt, `$CTR` = `ctr -a <containerd socket>`, `$CR` = `ctr-remote -a <containerd socket>`, `$W` = a fresh work dir):\n\n")
		for _, c := range p.cmds {
			w("- %s: `%s`\n", c[0], c[1])
		}
	}
	return b.String(), nil
}

const docHeader = `# Benchmarks

Performance figures measured on the project's machines. Each section is
written by the script named in its heading; rerun it to refresh the
figures. Other sections are left as they are.

`
