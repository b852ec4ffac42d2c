// Command startup is the container startup benchmark (`make bench`): cold
// pull + run of HelloBench-style workloads on Debian images, as plain OCI
// on overlayfs, as eStargz (and its optimized variant) on
// stargz-snapshotter, as Nydus-Go images (with and without a prefetch
// list) on upstream nydus-snapshotter driving our nydusd, and by
// reference to the OCI image's own gzip layers: with a SOCI index on the
// SOCI snapshotter, and as a Nydus-Go zran image (`nydusify convert
// --oci-ref`) on nydus-snapshotter; over an unlimited and a constrained
// network profile, all in one invocation on one machine. It writes a JSON
// file of every run, a Markdown report section and a PNG chart.
//
// It needs root, Debian's containerd, runc, docker-registry and ctr-remote,
// the images of scripts/debian-image.sh, and the binaries `make bench`
// builds (bin/nydusd, nydusify, nydus-image, containerd-nydus-grpc,
// containerd-stargz-grpc, soci-snapshotter-grpc, soci).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nydus-go/nydus/bench/internal/benchkit"
)

// workload is a HelloBench-style command; its first line of output counts
// as ready.
type workload struct {
	Name     string   `json:"name"`
	Image    string   `json:"-"`                  // tag in the Debian layout
	Packages []string `json:"packages,omitempty"` // Debian packages of the image's second layer (-workloads)
	Argv     []string `json:"argv"`
	Want     string   `json:"want"` // in the output
}

// readWorkloads reads a -workloads file: a JSON list of {"name",
// "packages", "argv", "want"}. A workload with packages runs on
// minbase plus a layer with them (tag "w-<name>", built by
// scripts/debian-image.sh); one without runs on minbase.
func readWorkloads(path string) ([]workload, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var wls []workload
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&wls); err != nil {
		return nil, fmt.Errorf("%s: %w (want a JSON list of {\"name\", \"packages\", \"argv\", \"want\"})", path, err)
	}
	if len(wls) == 0 {
		return nil, fmt.Errorf("%s: no workloads", path)
	}
	seen := map[string]bool{}
	for i := range wls {
		w := &wls[i]
		switch {
		case !workloadName.MatchString(w.Name):
			return nil, fmt.Errorf("%s: workload %d: name %q: want lower-case letters, digits and '-', at most 32", path, i, w.Name)
		case seen[w.Name]:
			return nil, fmt.Errorf("%s: workload %q appears twice", path, w.Name)
		case len(w.Argv) == 0:
			return nil, fmt.Errorf("%s: workload %q: empty argv", path, w.Name)
		case w.Want == "":
			return nil, fmt.Errorf("%s: workload %q: empty want (the text its output must contain)", path, w.Name)
		}
		seen[w.Name] = true
		for _, p := range w.Packages {
			if !debianPackage.MatchString(p) {
				return nil, fmt.Errorf("%s: workload %q: %q is not a Debian package name", path, w.Name, p)
			}
		}
		w.Image = "minbase"
		if len(w.Packages) > 0 {
			w.Image = "w-" + w.Name
		}
	}
	return wls, nil
}

var (
	workloadName  = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
	debianPackage = regexp.MustCompile(`^[a-z0-9][a-z0-9.+-]+$`)
)

// buildImages builds the -workloads images missing from the layout with
// scripts/debian-image.sh (it keeps those already built).
func buildImages(script, layout string, wls []workload) error {
	args := []string{script, filepath.Dir(layout)}
	for _, w := range wls {
		if len(w.Packages) > 0 {
			args = append(args, w.Image+"="+strings.Join(w.Packages, ","))
		}
	}
	if len(args) == 2 {
		return nil
	}
	cmd := exec.Command("bash", args...)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building the workloads' images (%s): %w", strings.Join(args, " "), err)
	}
	return nil
}

var workloads = []workload{
	{Name: "echo", Image: "minbase", Argv: []string{"/bin/sh", "-c", "echo hello"}, Want: "hello"},
	{Name: "curl", Image: "curl", Argv: []string{"/bin/sh", "-c", "curl --version"}, Want: "curl 7.88"},
	{Name: "python", Image: "python", Argv: []string{"python3", "-c", "import json, sqlite3, asyncio; print(1)"}, Want: "1"},
	{Name: "gcc", Image: "gcc", Argv: []string{"/bin/sh", "-c", `printf '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n' > /tmp/h.c && gcc /tmp/h.c -o /tmp/a.out && /tmp/a.out`}, Want: "hello"},
}

// selected, when set (-run), picks the "profile/workload/form" runs to
// measure.
var selected *regexp.Regexp

// profileNames are the network profiles every run goes through.
var profileNames = []string{"unlimited", "constrained"}

// selectedAny reports whether -run selects any run of w.
func selectedAny(w workload) bool {
	for _, f := range forms {
		if wanted(w, f) {
			return true
		}
	}
	return false
}

// wanted reports whether -run selects a run of w in a form that runs f's
// image (all do without -run).
func wanted(w workload, f form) bool {
	if selected == nil {
		return true
	}
	for _, p := range profileNames {
		for _, g := range forms {
			if imageForm(g).Tag == f.Tag && selected.MatchString(p+"/"+w.Name+"/"+g.Name) {
				return true
			}
		}
	}
	return false
}

// form is how an image is stored and run.
type form struct {
	Name        string // report name
	System      string // report name of the system
	Tag         string // registry tag suffix
	Snapshotter string // containerd snapshotter
	Lazy        bool   // pulled with remote snapshots (ctr-remote rpull; soci rpull for SOCI)
	// ByRef forms index the OCI image's gzip layers instead of converting
	// them: their images share those layers, and add only what the
	// report's "bytes added" table counts.
	ByRef bool
}

var forms = []form{
	{"OCI", "overlayfs", "oci", "overlayfs", false, false},
	{"eStargz", "stargz", "esgz", "stargz", true, false},
	{"eStargz optimized", "stargz", "esgz-opt", "stargz", true, false},
	{"Nydus-Go", "nydus", "nydus", "nydus", true, false},
	{"Nydus-Go + prefetch", "nydus", "nydus-pf", "nydus", true, false},
	// The same images under nydus-snapshotter's shared mode: one nydusd,
	// started with the snapshotter, mounts every image through its API.
	{"Nydus-Go shared", "nydus shared", "nydus", "nydus-shared", true, false},
	{"Nydus-Go + prefetch shared", "nydus shared", "nydus-pf", "nydus-shared", true, false},
	// By reference: the OCI image plus a SOCI index (zTOCs) on the SOCI
	// snapshotter, and a Nydus-Go zran image (`nydusify convert
	// --oci-ref`: a bootstrap and zran checkpoints pointing into the OCI
	// layers) run exactly as the Nydus-Go form.
	{"OCI + SOCI index", "soci", "soci", "soci", true, true},
	{"OCI + Nydus-Go zran", "nydus", "zran", "nydus", true, true},
}

// The forms prepare and the report refer to by position.
var (
	formOCI, formEsgz, formEsgzOpt, formNydus, formNydusPf = forms[0], forms[1], forms[2], forms[3], forms[4]
	formSOCI, formZran                                     = forms[7], forms[8]
)

// sociMinLayerSize is the SOCI index's min layer size (soci convert
// -min-layer-size): layers smaller than this get no zTOC and the SOCI
// snapshotter pulls them whole. Upstream's default, 10 MiB, would leave the
// curl image's 7.8 MB package layer out; at 1 MiB every layer of the
// built-in workloads is indexed (the smallest is 7.4 MiB), while a layer
// under 1 MiB, which costs about as long to fetch at 100 Mbit/s as a few
// lazy round trips, is still pulled whole, as SOCI intends.
const sociMinLayerSize = 1 << 20

// imageForm returns the form whose image f runs: the first form with its
// tag (the shared-mode forms run the dedicated forms' images).
func imageForm(f form) form {
	for _, g := range forms {
		if g.Tag == f.Tag {
			return g
		}
	}
	return f
}

// run is one cold pull + run.
type result struct {
	Workload, Form, Profile string
	Rep                     int
	Pull, Ready, Exit       time.Duration // ready and exit from the start of ctr run
	Total                   time.Duration // pull + ready
	Bytes, Requests         int64         // from the registry, pull start to ready
	BytesExit               int64         // pull start to exit
	ReadBytes               int64         // Nydus-Go: bytes the workload read (file metrics)
	// Kinds counts nydusd's backend fetches by kind up to the workload's
	// exit (Nydus-Go dedicated; from GET /api/v1/metrics/fetches).
	Kinds map[string]kindStat `json:",omitempty"`
	// RemoteLayers and LocalLayers count the layers the SOCI snapshotter
	// mounted lazily and those it let containerd pull whole (its log).
	RemoteLayers, LocalLayers int    `json:",omitempty"`
	Err                       string `json:",omitempty"`
}

// kindStat is what nydusd fetched for one reason: requests, bytes, and
// the chunks that came amplified in them.
type kindStat struct {
	Requests, Bytes, Amplified int64
}

// prepared is what setup measured about an image form.
type prepared struct {
	Workload, Form string
	Size           int64         // layers in the registry (by reference: the OCI layers plus Added)
	Convert        time.Duration // conversion time (0 for the source)
	// Added is what a by-reference form adds to the registry: every
	// manifest, index, config and blob its tag reaches that the OCI
	// image's does not; AddedBlobs the blobs among them (zTOCs; zran's
	// ref blobs and bootstrap layer).
	Added, AddedBlobs int64  `json:",omitempty"`
	Err               string `json:",omitempty"`
}

func main() {
	quick := flag.Bool("quick", false, "quick profile: the echo and curl workloads only")
	runs := flag.Int("runs", 3, "cold runs of each (workload, form, profile); the median is reported")
	bin := flag.String("bin", "bin", "directory of the binaries")
	layout := flag.String("layout", "/var/tmp/nydus-images/debian", "OCI layout of the Debian images (scripts/debian-image.sh)")
	out := flag.String("out", "", "directory for results.json, report.md and startup.png (default: a new directory under /tmp)")
	doc := flag.String("doc", "", "Markdown file whose startup section is replaced by the report (e.g. docs/benchmarks.md)")
	chart := flag.String("chart", "", "where to copy the chart PNG too (e.g. docs/bench-startup.png); the startup I/O picture goes next to it (-trace.png)")
	fsResults := flag.String("fs", "", "output of `go test -bench BenchmarkFS` (make bench-fs) to include")
	from := flag.String("from", "", "only redraw the report and chart from a results.json of an earlier run")
	wlFile := flag.String("workloads", "", `JSON list of workloads to run instead of the built-in ones: [{"name": "web", "packages": ["nginx-light"], "argv": ["nginx", "-v"], "want": "nginx version"}]; each runs on minbase plus a layer with its packages`)
	script := flag.String("images", "../../scripts/debian-image.sh", "scripts/debian-image.sh, which builds the -workloads images into the layout's directory")
	runRE := flag.String("run", "", `only the runs whose "profile/workload/form" matches this regular expression, e.g. "constrained/curl/Nydus-Go$" (not with -doc: a partial report must not replace the full one)`)
	flag.Parse()
	if *runRE != "" {
		re, err := regexp.Compile(*runRE)
		if err != nil {
			fmt.Fprintf(os.Stderr, "startup: -run: %v\n", err)
			os.Exit(2)
		}
		if *doc != "" || *chart != "" {
			fmt.Fprintln(os.Stderr, "startup: -run measures a subset; it cannot write -doc or -chart")
			os.Exit(2)
		}
		selected = re
	}
	if *from != "" {
		if err := redraw(*from, *out, *doc, *chart); err != nil {
			fmt.Fprintf(os.Stderr, "startup: %v\n", err)
			os.Exit(1)
		}
		return
	}
	wls := workloads
	if *wlFile != "" {
		var err error
		if wls, err = readWorkloads(*wlFile); err != nil {
			fmt.Fprintf(os.Stderr, "startup: %v\n", err)
			os.Exit(2)
		}
		if err := buildImages(*script, *layout, wls); err != nil {
			fmt.Fprintf(os.Stderr, "startup: %v\n", err)
			os.Exit(1)
		}
	}
	if err := mainErr(wls, *quick, *runs, *bin, *layout, *out, *doc, *chart, *fsResults); err != nil {
		fmt.Fprintf(os.Stderr, "startup: %v\n", err)
		os.Exit(1)
	}
}

func mainErr(wls []workload, quick bool, runs int, bin, layout, out, doc, chart, fsResults string) error {
	if os.Getuid() != 0 {
		return fmt.Errorf("needs root (containerd, FUSE, overlayfs)")
	}
	if runs < 1 {
		return fmt.Errorf("-runs must be at least 1")
	}
	if quick && len(wls) > 2 {
		wls = wls[:2]
	}
	if selected != nil {
		var keep []workload
		for _, w := range wls {
			if selectedAny(w) {
				keep = append(keep, w)
			}
		}
		if len(keep) == 0 {
			return fmt.Errorf("-run %q matches no profile/workload/form", selected)
		}
		wls = keep
	}
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	b := bins{nydusd: abs(bin + "/nydusd"), nydusImage: abs(bin + "/nydus-image"), nydusify: abs(bin + "/nydusify"),
		nydusSnapshotter: abs(bin + "/containerd-nydus-grpc"), stargzSnapshotter: abs(bin + "/containerd-stargz-grpc"),
		sociSnapshotter: abs(bin + "/soci-snapshotter-grpc"), soci: abs(bin + "/soci")}
	for _, p := range []string{b.nydusd, b.nydusImage, b.nydusify, b.nydusSnapshotter, b.stargzSnapshotter, b.sociSnapshotter, b.soci, layout + "/index.json"} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%w (run `make bench`, which builds and prepares everything)", err)
		}
	}
	if out == "" {
		var err error
		if out, err = os.MkdirTemp("", "nydus-bench-startup-"); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	// Short: nydus-snapshotter's root must be at most 70 bytes.
	dir, err := os.MkdirTemp("/tmp", "nb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	start := time.Now()
	s, err := newStack(dir, b)
	if s != nil {
		s.out = out
	}
	if s != nil {
		defer s.close()
	}
	if err != nil {
		return err
	}
	logf("stack up: registry %s behind proxy %s, containerd, nydus-snapshotter, stargz-snapshotter, soci-snapshotter", s.regAddr, s.proxy.Addr)

	profiles := []profile{{Name: profileNames[0]}, {Name: profileNames[1], Mbit: 100, RTT: 20 * time.Millisecond}}
	// The quick profile prepares its images at the same time (conversion
	// times are then measured under contention, as the report says).
	preps := make([][]prepared, len(wls))
	var wg sync.WaitGroup
	for i, w := range wls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			preps[i] = s.prepare(layout, w)
		}()
		if !quick {
			wg.Wait()
		}
	}
	wg.Wait()
	var prepped []prepared
	for i, w := range wls {
		prepped = append(prepped, preps[i]...)
		if wanted(w, formNydusPf) {
			prepped = append(prepped, s.preparePrefetch(layout, w, !failed(preps[i], w, formNydus)))
		}
	}
	if err := s.cold("nydus", "nydus-shared", "stargz", "soci"); err != nil {
		return err
	}
	var results []result
	for _, p := range profiles {
		s.proxy.setProfile(p)
		for rep := 1; rep <= runs; rep++ {
			for _, w := range wls {
				for _, f := range forms {
					if failed(prepped, w, f) || (selected != nil && !selected.MatchString(p.Name+"/"+w.Name+"/"+f.Name)) {
						continue
					}
					r := s.measure(w, f, p, rep)
					logf("%-11s %-7s %-20s run %d: pull %6.2fs ready %6.2fs total %6.2fs, %6.1f MB in %3d requests %s",
						p.Name, w.Name, f.Name, rep, r.Pull.Seconds(), r.Ready.Seconds(), r.Total.Seconds(), float64(r.Bytes)/1e6, r.Requests, r.Err)
					results = append(results, r)
				}
			}
		}
	}
	s.proxy.setProfile(profile{Name: "unlimited"})

	rep := report{Quick: quick, Runs: runs, Profiles: profiles, Workloads: wls, Prepared: prepped, Results: results,
		Started: start, Took: time.Since(start), Trace: s.traceSummary}
	if selected != nil {
		rep.Run = selected.String()
	}
	if fsResults != "" {
		b, err := os.ReadFile(fsResults)
		if err != nil {
			return err
		}
		rep.FS = parseBenchFS(string(b))
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(out, "results.json"), rep); err != nil {
		return err
	}
	if err := rep.write(out, doc, chart); err != nil {
		return err
	}
	logf("results in %s (took %s)", out, time.Since(start).Round(time.Second))
	for _, r := range results {
		if r.Err == "" {
			return nil
		}
	}
	return fmt.Errorf("no run succeeded; see %s", filepath.Join(out, "report.md"))
}

// redraw rewrites the report and chart of a results.json.
func redraw(from, out, doc, chart string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", from, err)
	}
	if out == "" {
		out = filepath.Dir(from)
	}
	return rep.write(out, doc, chart)
}

// write writes report.md and startup.png to out, and optionally the
// section of doc and the chart (and trace picture) next to chart.
func (rep *report) write(out, doc, chart string) error {
	md := rep.markdown()
	if err := os.WriteFile(filepath.Join(out, "report.md"), []byte(md), 0o644); err != nil {
		return err
	}
	png := filepath.Join(out, "startup.png")
	if err := rep.chart(png); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if chart != "" {
		data, _ := os.ReadFile(png)
		if err := os.WriteFile(chart, data, 0o644); err != nil {
			return err
		}
		if data, err := os.ReadFile(filepath.Join(out, "trace.png")); err == nil {
			if err := os.WriteFile(strings.TrimSuffix(chart, ".png")+"-trace.png", data, 0o644); err != nil {
				return err
			}
		}
	}
	if doc != "" {
		if err := benchkit.SpliceSection(doc, sectionHeading, md, "# Benchmarks\n"); err != nil {
			return err
		}
	}
	fmt.Print(md)
	return nil
}

func failed(preps []prepared, w workload, f form) bool {
	f = imageForm(f)
	for _, p := range preps {
		if p.Workload == w.Name && p.Form == f.Name {
			return p.Err != ""
		}
	}
	return true
}

var began = time.Now()

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> [%4.0fs] "+format+"\n", append([]any{time.Since(began).Seconds()}, args...)...)
}

// ref is the reference of an image form in the registry, as pushed
// (direct) or as pulled (through the proxy).
func (s *stack) ref(w workload, f form, pull bool) string {
	host := s.regAddr
	if pull {
		host = s.proxy.Addr
	}
	return fmt.Sprintf("%s/bench/debian-%s:%s", host, w.Image, f.Tag)
}

// prepare pushes the OCI, eStargz, optimized eStargz and Nydus-Go forms
// of a workload's image, and the by-reference forms (a SOCI index, a zran
// image) of its OCI form, and measures their size, conversion time and,
// by reference, the bytes they add. Forms -run does not select are left
// out. A form that fails is reported, not fatal. It leaves the
// snapshotters alone, so workloads can be prepared at the same time.
func (s *stack) prepare(layout string, w workload) []prepared {
	var out []prepared
	add := func(f form, conv time.Duration, err error) {
		p := prepared{Workload: w.Name, Form: f.Name, Convert: conv}
		if err != nil {
			p.Err = err.Error()
			logf("%s %s: %v", w.Name, f.Name, err)
		} else if err = s.measureImage(w, f, &p); err != nil {
			p.Err = err.Error()
		}
		out = append(out, p)
	}
	timed := func(fn func() error) (time.Duration, error) {
		t := time.Now()
		err := fn()
		return time.Since(t), err
	}
	oci, esgz, opt, nydus := formOCI, formEsgz, formEsgzOpt, formNydus
	logf("preparing debian-%s for %s", w.Image, w.Name)
	_, err := run(5*time.Minute, "skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:"+layout+":"+w.Image, "docker://"+s.ref(w, oci, false))
	add(oci, 0, err)
	if err != nil {
		return out
	}
	// eStargz: ctr-remote converts images in containerd's store.
	if !wanted(w, esgz) && !wanted(w, opt) {
		logf("%s: eStargz forms not selected by -run; not converted", w.Name)
	} else if _, err := s.ctr("images", "pull", "--plain-http", s.ref(w, oci, false)); err != nil {
		add(esgz, 0, err)
		add(opt, 0, err)
	} else {
		d, err := timed(func() error {
			_, err := s.ctrRemote("image", "convert", "--estargz", "--oci", s.ref(w, oci, false), s.ref(w, esgz, false))
			return err
		})
		if err == nil {
			_, err = s.ctrRemote("image", "push", "--plain-http", s.ref(w, esgz, false))
		}
		add(esgz, d, err)
		args, _ := json.Marshal(w.Argv[1:])
		d, err = timed(func() error {
			_, err := s.ctrRemote("image", "optimize", "--oci", "--period", "5",
				"--entrypoint", fmt.Sprintf("[%q]", w.Argv[0]), "--args", string(args), s.ref(w, oci, false), s.ref(w, opt, false))
			return err
		})
		if err == nil {
			_, err = s.ctrRemote("image", "push", "--plain-http", s.ref(w, opt, false))
		}
		add(opt, d, err)
	}
	// The zran form's conversion time is reported against this one's.
	if wanted(w, nydus) || wanted(w, formNydusPf) || wanted(w, formZran) {
		d, err := timed(func() error {
			_, err := run(5*time.Minute, s.bins.nydusify, "convert", "--log-level", "warn", "--source", "oci:"+layout+":"+w.Image,
				"--target", s.ref(w, nydus, false), "--plain-http")
			return err
		})
		add(nydus, d, err)
	}
	// By reference: both read the OCI image from the registry and push
	// only what they add, to a tag of the same repository.
	if wanted(w, formSOCI) {
		summary := filepath.Join(s.dir, "soci-"+w.Name+".json")
		d, err := timed(func() error {
			_, err := run(5*time.Minute, s.bins.soci, "convert", "-plain-http", "-min-layer-size", fmt.Sprint(sociMinLayerSize),
				"-json", summary, s.ref(w, oci, false), s.ref(w, formSOCI, false))
			return err
		})
		if err == nil {
			err = logSOCIIndex(w, summary)
		}
		add(formSOCI, d, err)
	}
	if wanted(w, formZran) {
		d, err := timed(func() error {
			_, err := run(5*time.Minute, s.bins.nydusify, "convert", "--log-level", "warn", "--oci-ref", "--source", s.ref(w, oci, false),
				"--target", s.ref(w, formZran, false), "--plain-http")
			return err
		})
		add(formZran, d, err)
	}
	return out
}

// logSOCIIndex logs what soci convert indexed (its -json summary): the
// SOCI snapshotter pulls a layer it left out whole.
func logSOCIIndex(w workload, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var sum struct {
		Ztocs []struct {
			LayerSize int64 `json:"layer_size"`
			Size      int64 `json:"size"`
		} `json:"ztocs"`
		Skipped []string `json:"skipped"`
	}
	if err := json.Unmarshal(b, &sum); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var zs []string
	for _, z := range sum.Ztocs {
		zs = append(zs, fmt.Sprintf("%.1f MB layer: %.0f KB", float64(z.LayerSize)/1e6, float64(z.Size)/1e3))
	}
	logf("%s: SOCI index with %d zTOCs (%s)", w.Name, len(sum.Ztocs), strings.Join(zs, ", "))
	if len(sum.Skipped) > 0 {
		logf("%s: %d layers under the min layer size (%d bytes) have no zTOC; SOCI pulls them whole: %s", w.Name, len(sum.Skipped), sociMinLayerSize, strings.Join(sum.Skipped, ", "))
	}
	return nil
}

// preparePrefetch builds the Nydus-Go image with a prefetch list: the
// files one cold run of the workload on the Nydus-Go image read, in the
// order it first read them (nydusd's access pattern). It needs the
// snapshotters to itself.
func (s *stack) preparePrefetch(layout string, w workload, nydusOK bool) prepared {
	f := formNydusPf
	p := prepared{Workload: w.Name, Form: f.Name}
	err := errors.New("the Nydus-Go image failed")
	if nydusOK {
		var list []string
		if list, err = s.accessPattern(w); err == nil {
			logf("%s: prefetch list of %d files", w.Name, len(list))
			t := time.Now()
			_, err = runStdin(strings.Join(list, "\n")+"\n", 5*time.Minute, s.bins.nydusify, "convert", "--log-level", "warn",
				"--source", "oci:"+layout+":"+w.Image, "--target", s.ref(w, f, false), "--plain-http", "--prefetch-patterns")
			p.Convert = time.Since(t)
		}
	}
	if err == nil {
		err = s.measureImage(w, f, &p)
	}
	if err != nil {
		p.Err = err.Error()
		logf("%s %s: %v", w.Name, f.Name, err)
	}
	return p
}

// accessPattern runs the workload once on the Nydus-Go form and returns
// the paths it read in first-access order.
func (s *stack) accessPattern(w workload) ([]string, error) {
	if err := s.cold("nydus"); err != nil {
		return nil, err
	}
	ref := s.ref(w, formNydus, true)
	if _, err := s.ctrRemote("image", "rpull", "--snapshotter", "nydus", "--plain-http", ref); err != nil {
		return nil, err
	}
	if _, _, _, err := s.runReady("nydus", ref, "trace-"+w.Name, w.Argv, nil); err != nil {
		return nil, err
	}
	socks, _ := filepath.Glob(filepath.Join(s.dir, "nr", "socket", "*", "api.sock"))
	if len(socks) != 1 {
		return nil, fmt.Errorf("want one nydusd API socket, have %d", len(socks))
	}
	c := nydusdAPI(socks[0])
	defer c.Close()
	pat, err := c.AccessPattern(context.Background(), "")
	if err != nil {
		return nil, err
	}
	// The startup I/O picture of this cold run (the last workload's is
	// kept), drawn by the command users have: nydusify trace.
	if out, err := run(time.Minute, s.bins.nydusify, "trace", "--apisock", socks[0], "--top", "10",
		"--output", filepath.Join(s.out, "trace.png"), "--json", filepath.Join(s.out, "trace-"+w.Name+".json")); err != nil {
		logf("nydusify trace: %v", err)
	} else {
		s.traceSummary = fmt.Sprintf("`nydusify trace` of a cold `%s` run on Nydus-Go (no prefetch list, unlimited network):\n\n```\n%s```\n", w.Name, out)
	}
	var list []string
	for _, p := range pat {
		if p.Path != "" {
			list = append(list, p.Path)
		}
	}
	return list, nil
}

// measure does one cold pull + run.
func (s *stack) measure(w workload, f form, p profile, rep int) result {
	r := result{Workload: w.Name, Form: f.Name, Profile: p.Name, Rep: rep}
	if err := s.coldFor(f.Snapshotter); err != nil {
		r.Err = "reset: " + err.Error()
		return r
	}
	if f.Snapshotter == "stargz" || f.Snapshotter == "soci" {
		// stargz and SOCI keep fetching whole layers in the background
		// after a run (SOCI after 30 s of silence), which would load the
		// network of the next run, and keep their caches after the
		// images are removed: stop them at once.
		defer s.cold(f.Snapshotter)
	}
	var sociLog int64
	if f.Snapshotter == "soci" {
		sociLog = fileSize(s.soci.Log)
	}
	ref := s.ref(w, f, true)
	s.proxy.reset()
	t := time.Now()
	var err error
	switch {
	case f.Snapshotter == "soci":
		// ctr-remote's rpull sets stargz's labels, without which SOCI
		// lets containerd pull every layer whole.
		_, err = run(5*time.Minute, s.bins.soci, "rpull", "-address", s.ctdSock, "-plain-http", ref)
	case f.Lazy:
		_, err = s.ctrRemote("image", "rpull", "--snapshotter", f.Snapshotter, "--plain-http", ref)
	default:
		_, err = s.ctr("images", "pull", "--plain-http", ref)
	}
	r.Pull = time.Since(t)
	if err != nil {
		r.Err = "pull: " + err.Error()
		return r
	}
	var atReady traffic
	ready, exit, out, err := s.runReady(f.Snapshotter, ref, fmt.Sprintf("b-%d", time.Now().UnixNano()), w.Argv, func() { atReady = s.proxy.traffic() })
	r.Ready, r.Exit, r.Total = ready, exit, r.Pull+ready
	r.Bytes, r.Requests = atReady.BlobBytes, atReady.Requests
	r.BytesExit = s.proxy.traffic().BlobBytes
	if err == nil && !strings.Contains(out, w.Want) {
		err = fmt.Errorf("output lacks %q: %s", w.Want, lastLines(out, 2))
	}
	if f.Snapshotter == "soci" {
		r.RemoteLayers, r.LocalLayers = sociPrepared(s.soci.Log, sociLog)
		if r.LocalLayers > 0 || r.RemoteLayers == 0 {
			logf("SOCI mounted %d layers lazily and let containerd pull %d whole (%s)", r.RemoteLayers, r.LocalLayers, s.soci.Log)
		}
	}
	if err != nil {
		r.Err = "run: " + err.Error()
		return r
	}
	if f.Snapshotter == "nydus" {
		if socks, _ := filepath.Glob(filepath.Join(s.dir, "nr", "socket", "*", "api.sock")); len(socks) == 1 {
			c := nydusdAPI(socks[0])
			defer c.Close()
			if files, err := c.FileMetrics(context.Background(), ""); err == nil {
				for _, f := range files {
					r.ReadBytes += int64(f.DataRead)
				}
			}
			var log struct {
				Fetches []struct {
					Kind      string `json:"kind"`
					Bytes     int64  `json:"bytes"`
					Amplified int64  `json:"amplified"`
				} `json:"fetches"`
			}
			if raw, err := c.Get(context.Background(), "/api/v1/metrics/fetches"); err == nil && json.Unmarshal(raw, &log) == nil {
				// Kept for a closer look (nydusify trace draws the same).
				os.WriteFile(filepath.Join(s.out, fmt.Sprintf("fetches-%s-%s-%s-%d.json", p.Name, w.Name, strings.ReplaceAll(f.Name, " ", ""), rep)), raw, 0o644)
				r.Kinds = map[string]kindStat{}
				for _, fe := range log.Fetches {
					k := r.Kinds[fe.Kind]
					k.Requests++
					k.Bytes += fe.Bytes
					k.Amplified += fe.Amplified
					r.Kinds[fe.Kind] = k
				}
			}
		}
	}
	return r
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// median of durations or sizes.
func median[T ~int64](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := append([]T(nil), xs...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
