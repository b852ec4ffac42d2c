package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nydus-go/nydus/bench/internal/benchkit"
	"github.com/nydus-go/nydus/internal/sysproc"
)

// heading is the heading of the section of docs/benchmarks.md the
// benchmark writes.
const heading = "## Conversion (`make bench-convert`)"

// bench is the state of one run of the benchmark.
type bench struct {
	cfg        *config
	start      time.Time
	cache      string // cfg.dir/convert
	layout     string // the cached OCI layout
	tmp        string // temporary directory, removed at the end
	nydusify   string
	nydusImage string

	debootstraps map[string]*debootstrap // running, by tree name
	built        []string                // what the cache lacked, for the report
	trixie       bool                    // the family has the trixie images
	trixieHow    string
	family       []string // image names, in conversion order

	registry, containerd *sysproc.Proc
	reg                  string // 127.0.0.1:PORT
	csock                string // containerd's socket
	layer2               int64  // compressed size of the curl layer

	contention *contention
	results    map[string][]record
	plan       *plan
	notes      []string
}

// runBench runs the whole benchmark from the repository root and writes
// its section of cfg.doc; whatever it started, mounted or created outside
// the cache is gone when it returns.
func runBench(ctx context.Context, cfg *config) (err error) {
	b := &bench{
		cfg:          cfg,
		start:        time.Now(),
		cache:        filepath.Join(cfg.dir, "convert"),
		nydusify:     "bin/nydusify",
		nydusImage:   "bin/nydus-image",
		debootstraps: map[string]*debootstrap{},
		results:      map[string][]record{},
		plan:         &plan{images: map[string]string{}, jsons: map[string]string{}},
		contention: &contention{idleWait: cfg.idleWait, waitBudget: cfg.waitBudget, reject: cfg.rejectOthers,
			deadline: time.Now().Add(cfg.deadline)},
	}
	b.layout = filepath.Join(b.cache, "layout")
	if os.Geteuid() != 0 {
		return errors.New("run as root: it installs packages, runs debootstrap, chroot and containerd")
	}
	for _, p := range []*string{&b.nydusify, &b.nydusImage} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		if st, err := os.Stat(abs); err != nil || st.Mode()&0o111 == 0 {
			return errors.New("bin/nydusify or bin/nydus-image is missing: run 'make bench-convert' (it runs 'make build' first)")
		}
		*p = abs
	}
	if err := ensureTools(ctx); err != nil {
		return err
	}
	host := readHostState()
	defer func() {
		b.cleanup()
		host.restore()
	}()
	if err := os.MkdirAll(b.cache, 0o755); err != nil {
		return err
	}
	if b.tmp, err = makeTmp(cfg.tmp, cfg.dir); err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	for _, d := range []string{"logs", "json", "wd"} {
		if err := os.MkdirAll(filepath.Join(b.tmp, d), 0o755); err != nil {
			return err
		}
	}
	m := benchkit.ReadMachine()
	say("machine: nproc %d, %s, kernel %s, %s RAM; cache %s, temporary files in %s", m.NumCPU, m.CPU, m.Kernel, m.Memory, cfg.dir, b.tmp)

	if err := b.ensureRootfs(ctx); err != nil {
		return err
	}
	if err := b.ensureImages(ctx); err != nil {
		return err
	}
	if err := b.startRegistry(); err != nil {
		return err
	}
	if err := b.startContainerd(ctx); err != nil {
		return err
	}
	if err := b.push(ctx); err != nil {
		return err
	}
	if err := b.speed(ctx); err != nil {
		return err
	}
	if err := b.convertFamily(ctx); err != nil {
		return err
	}
	say("report")
	if err := b.report(ctx, m); err != nil {
		return fmt.Errorf("report: %w", err)
	}
	say("done in %ds; wrote the section '%s' of %s", b.elapsed(), heading, cfg.doc)
	return nil
}

// elapsed is the whole seconds since the start.
func (b *bench) elapsed() int { return int(time.Since(b.start).Seconds()) }

// cleanup stops containerd, the registry and any debootstrap by PID and
// removes the temporary directory, unmounting what is mounted in it.
func (b *bench) cleanup() {
	b.containerd.Stop(syscall.SIGTERM)
	b.registry.Stop(syscall.SIGTERM)
	b.stopDebootstraps()
	if b.tmp != "" {
		if err := removeTree(b.tmp); err != nil {
			warnf("%v", err)
		}
	}
}

// report fills in the plan's commands and notes and the facts about the
// run, renders the section, prints it and splices it into the document.
func (b *bench) report(ctx context.Context, m benchkit.Machine) error {
	p := b.plan
	p.cmds = [][2]string{
		{"Build an image: layer 1", "tar --numeric-owner --xattrs --acls -C ROOTFS --exclude='dev/*' --exclude='proc/*' --exclude='sys/*' -cf layer.tar $(ls -A ROOTFS) && umoci new --image LAYOUT:NAME && umoci raw add-layer --image LAYOUT:NAME layer.tar && umoci config --image LAYOUT:NAME --config.cmd /bin/bash --config.env " + imagePathEnv},
		{"Build an image: curl layer", "umoci unpack --image LAYOUT:BASE B; (resolv.conf, /proc, /dev bound) chroot B/rootfs sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends curl ca-certificates && apt-get clean && rm -rf /var/lib/apt/lists/*'; (resolv.conf restored) umoci repack --image LAYOUT:NAME B"},
		{"Push", "skopeo copy --dest-tls-verify=false oci:LAYOUT:NAME docker://$REG/bench/NAME:oci"},
		{"Nydus", cNydus.shown()},
		{"Nydus --independent", cNydusI.shown()},
		{"eStargz fetch", cFetch.shown()},
		{"eStargz convert", cConvert.shown()},
		{"eStargz push", cPush.shown()},
	}
	if b.cfg.zstdChunked {
		p.cmds = append(p.cmds, [2]string{"zstd:chunked convert", cZstd.shown()})
	}
	p.cmds = append(p.cmds,
		[2]string{"Between eStargz rounds", "$CTR image rm --sync <all images> (containerd garbage-collects their content)"},
		[2]string{"Family", cFamily.shown()})
	p.notes = append(b.notes, notes...)
	c := b.contention
	if c.discarded > 0 {
		p.notes = append(p.notes, fmt.Sprintf("%d timed run(s) were redone because other processes kept more than %s cores busy during them.", c.discarded, fmtFloat(c.reject)))
	}
	cache := "warm: rootfs trees and OCI layout reused from " + b.cache + "; on a cold cache add ~3 min: 3–4 debootstraps run in parallel (~90 s) and the two curl layers (~12 s each), and the waits for idle CPUs grow"
	if len(b.built) > 0 {
		cache = "cold for: " + strings.Join(b.built, ", ") + "; the rest reused from the cache"
	}
	nv, _ := output(ctx, b.nydusify, "--version")
	tools := fmt.Sprintf("bin/nydusify %s (this tree); ctr-remote from stargz-snapshotter %s; containerd %s; docker-registry %s; skopeo %s; umoci %s; debootstrap %s",
		versionLine(nv), pkgVersion(ctx, "stargz-snapshotter"), pkgVersion(ctx, "containerd"), pkgVersion(ctx, "docker-registry"),
		pkgVersion(ctx, "skopeo"), pkgVersion(ctx, "umoci"), pkgVersion(ctx, "debootstrap"))
	kv := map[string]string{
		"command":  "make bench-convert",
		"workdir":  b.cfg.dir,
		"tmpfs":    tmpFSText(b.tmp),
		"date":     time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		"commit":   benchkit.GitCommit(ctx, "."),
		"go":       runtime.Version(),
		"nproc":    strconv.Itoa(m.NumCPU),
		"cpu":      m.CPU,
		"kernel":   m.Kernel,
		"mem":      m.Memory,
		"tools":    tools,
		"registry": "127.0.0.1 (a free port)",
		"runs":     strconv.Itoa(b.cfg.runs),
		"elapsed":  strconv.Itoa(b.elapsed()),
		"cache":    cache,
		"contention": fmt.Sprintf("before each timed run the benchmark waited (bounded) for other processes to leave the CPUs idle, %s s in total, and redid %d run(s) during which they (not counting the benchmark's registry and containerd) kept more than %s cores busy",
			c.waitedText(), c.discarded, fmtFloat(c.reject)),
		"layer1_desc": "`debootstrap --variant=minbase bookworm`, cleaned (no .debs, apt lists), tarred without `./` prefix",
		"layer2_desc": fmt.Sprintf("`apt-get install -y --no-install-recommends curl ca-certificates` in a chroot, diffed by `umoci repack` (%d kB gzip)", b.layer2/1000),
		"oci_desc":    "`umoci raw add-layer` / `umoci repack`, pushed with `skopeo copy`",
	}
	return writeReport(ctx, b.cfg.doc, b.results, p, kv)
}

// fmtFloat prints a knob as it was given: 0.3, 1.
func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// notes are the report's fixed interpretation notes.
var notes = []string{
	"eStargz with Debian's `ctr-remote` 0.12 recompresses each layer with gzip at its default `--estargz-compression-level` 9 and writes a TOC per layer; nydusify compresses 1 MiB chunks (small files in batches) with zstd level 3 on all cores and hashes every chunk.",
	"nydusify's time covers the whole job registry → registry (pull of the gzip source, decompression, chunking, compression, push of blobs and bootstrap); the eStargz steps are timed apart, and the headline ratio uses the conversion step alone, the least favourable comparison for Nydus.",
	"The Nydus size counts the bootstrap layer (RAFS v6 metadata in a gzip tar) on top of the data blobs; OCI and eStargz carry their metadata in the tar headers (and the TOC) inside the layers.",
	"Family: the three bookworm minbase trees come from separate debootstrap runs of the same packages: their contents differ only in a few logs and caches, but the timestamps of everything created at install time differ, so their OCI layers have different digests and the registry stores each in full. Nydus deduplicates by chunk content (BLAKE3 digest of each 1 MiB chunk or small file), so with a chunk dict only the data that really differs is stored again. With nydusify's defaults the dict is the target repository's own (the dedup scope), kept by nydusify: no dict is named. With `--dedup-scope none`, nydusify still deduplicates within one image (layer 2 against layer 1) but not across images; upstream-style `--independent` deduplicates only within a layer.",
	"Identical blobs are counted once per column: the first layer of bookworm-curl is bookworm-min's layer, and nydusify converts it to the same blob digest, so it costs nothing in any column.",
	"nydusify's defaults (since 2026-12-07): 1 MiB batches split at 64 KiB compressed (`--batch-size 0x100000 --batch-limit 0x10000`). With the earlier defaults (64 KiB batches, unsplit) the defaults column was 0.360 of the OCI sum on 2026-12-07 (0.354 without the dictionary artifacts); see the README for what each costs a lazy read.",
}

// say, warnf and logf write progress, warnings and raw lines to stderr.
func say(format string, a ...any) { fmt.Fprintf(os.Stderr, "==> "+format+"\n", a...) }
func warnf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench-convert: warning: "+format+"\n", a...)
}
func logf(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }
