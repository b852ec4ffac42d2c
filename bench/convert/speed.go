package main

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nydus-go/nydus/bench/internal/benchkit"
)

// cmdline is a command as words with $VARIABLES: expanded to run it,
// rewritten to document it. "$CTR" and "$CR" stand for ctr and
// ctr-remote on the temporary containerd's socket, "$EXTRA" for the
// words of vars["EXTRA"].
type cmdline []string

// The timed commands.
var (
	cNydus   = cmdline{"$NYDUSIFY", "convert", "--source", "$SRC", "--target", "$REG/speed-nydus/r$R-a$A:nydus", "--plain-http", "--work-dir", "$TMP/wd/n$R-$A", "--output-json", "$TMP/json/speed-nydus-r$R.json"}
	cNydusI  = cmdline{"$NYDUSIFY", "convert", "--source", "$SRC", "--target", "$REG/speed-nydus-independent/r$R-a$A:nydus", "--plain-http", "--independent", "--work-dir", "$TMP/wd/i$R-$A", "--output-json", "$TMP/json/speed-nydus-independent-r$R.json"}
	cFetch   = cmdline{"$CTR", "content", "fetch", "--plain-http", "$SRC"}
	cConvert = cmdline{"$CR", "image", "convert", "--estargz", "--oci", "$SRC", "$REG/speed-estargz/r$R:esgz"}
	cPush    = cmdline{"$CTR", "image", "push", "--plain-http", "$REG/speed-estargz/r$R-a$A:esgz", "$REG/speed-estargz/r$R:esgz"}
	cZstd    = cmdline{"$CR", "image", "convert", "--zstdchunked", "--oci", "$SRC", "$REG/speed-zstdchunked/r$R:zstd"}
	cFamily  = cmdline{"$NYDUSIFY", "convert", "--source", "$REG/bench/$NAME:oci", "--target", "$REG/family-$MODE:$NAME", "--plain-http", "$EXTRA", "--work-dir", "$TMP/wd/f-$MODE-$NAME", "--output-json", "$TMP/json/family-$MODE-$NAME.json"}
)

// argv expands the command's variables.
func (c cmdline) argv(vars map[string]string) []string {
	var out []string
	for _, w := range c {
		switch w {
		case "$CTR":
			out = append(out, "ctr", "-a", vars["CSOCK"])
		case "$CR":
			out = append(out, "ctr-remote", "-a", vars["CSOCK"])
		case "$EXTRA":
			out = append(out, strings.Fields(vars["EXTRA"])...)
		default:
			out = append(out, os.Expand(w, func(k string) string { return vars[k] }))
		}
	}
	return out
}

// shown is the command as documented: bin/nydusify, $W for a work dir,
// the JSON report by its name, the family's NAME, MODE and options.
func (c cmdline) shown() string {
	words := make([]string, len(c))
	for i, w := range c {
		switch {
		case w == "$NYDUSIFY":
			w = "bin/nydusify"
		case w == "$EXTRA":
			w = "[--chunk-dict bootstrap:registry:$REG/family-dict:DICT | --dedup-scope none | --independent --dedup-scope none]"
		case strings.HasPrefix(w, "$TMP/wd/"):
			w = "$W"
		default:
			w = strings.TrimPrefix(w, "$TMP/json/")
		}
		words[i] = strings.NewReplacer("$NAME", "NAME", "$MODE", "MODE").Replace(w)
	}
	return strings.Join(words, " ")
}

// vars are the values of the commands' variables for round r, attempt a.
func (b *bench) vars(r, a int) map[string]string {
	return map[string]string{
		"NYDUSIFY": b.nydusify, "SRC": b.src(), "REG": b.reg, "TMP": b.tmp, "CSOCK": b.csock,
		"R": strconv.Itoa(r), "A": strconv.Itoa(a),
	}
}

// src is the image of the speed test.
func (b *bench) src() string { return b.reg + "/bench/bookworm-curl:oci" }

func (b *bench) lastLog() string { return filepath.Join(b.tmp, "logs", "last.log") }

// ctr runs ctr on the temporary containerd, its output appended to the
// preparation log.
func (b *bench) ctr(ctx context.Context, args ...string) error {
	f, err := os.OpenFile(filepath.Join(b.tmp, "logs", "prep.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"-a", b.csock}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	_, err = benchkit.Run(cmd)
	return err
}

// removeImages removes all of containerd's images; it garbage-collects
// their content.
func (b *bench) removeImages(ctx context.Context) error {
	out, err := output(ctx, "ctr", "-a", b.csock, "image", "ls", "-q")
	if err != nil {
		return err
	}
	if refs := strings.Fields(out); len(refs) > 0 {
		return b.ctr(ctx, append([]string{"image", "rm", "--sync"}, refs...)...)
	}
	return nil
}

// removeImage removes one of containerd's images, if it is there.
func (b *bench) removeImage(ref string) func(context.Context) error {
	return func(ctx context.Context) error {
		b.ctr(ctx, "image", "rm", "--sync", ref)
		return nil
	}
}

// speedStep is a timed step of a speed round, prep run untimed before
// each attempt.
type speedStep struct {
	label string
	prep  func(context.Context) error
	cmd   cmdline
}

// speed times, in runs interleaved rounds, nydusify convert (defaults
// and --independent) against the eStargz steps (fetch, convert, push)
// and, once, zstd:chunked, and records the images the report reads.
func (b *bench) speed(ctx context.Context) error {
	for r := 1; r <= b.cfg.runs; r++ {
		say("speed round %d/%d", r, b.cfg.runs)
		with := func(c cmdline) func(int) []string {
			return func(a int) []string { return c.argv(b.vars(r, a)) }
		}
		steps := []speedStep{
			{lNydus, nil, cNydus},
			{lNydusIndep, nil, cNydusI},
			{lFetch, b.removeImages, cFetch},
			{lConvert, b.removeImage(fmt.Sprintf("%s/speed-estargz/r%d:esgz", b.reg, r)), cConvert},
			{lPush, nil, cPush},
		}
		// One run only: it is a reference point, and as slow as the
		// eStargz one.
		if b.cfg.zstdChunked && r == 1 {
			steps = append(steps, speedStep{lZstdConv, b.removeImage(b.reg + "/speed-zstdchunked/r1:zstd"), cZstd})
		}
		for _, s := range steps {
			if err := b.measure(ctx, s.label, r, s.prep, with(s.cmd)); err != nil {
				return err
			}
		}
		if b.cfg.zstdChunked && r == 1 {
			if err := b.step(ctx, "zstd-push", "ctr", "-a", b.csock, "image", "push", "--plain-http", b.reg+"/speed-zstdchunked/r1:zstd"); err != nil {
				return fmt.Errorf("pushing the zstd:chunked image: %w", err)
			}
		}
		if err := b.removeImages(ctx); err != nil {
			return fmt.Errorf("ctr image rm: %w", err)
		}
		if out, err := output(ctx, "ctr", "-a", b.csock, "content", "ls", "-q"); err == nil {
			if left := len(strings.Fields(out)); left > 0 {
				warnf("containerd still holds %d blobs after removing its images", left)
			}
		}
	}

	p := b.plan
	p.images["speed/oci"] = b.src()
	for _, x := range []struct{ key, repo, tag string }{
		{"speed/nydus", "speed-nydus", "nydus"},
		{"speed/nydus-independent", "speed-nydus-independent", "nydus"},
		{"speed/estargz", "speed-estargz", "esgz"},
	} {
		ref, err := b.lastAttempt(x.repo, x.tag)
		if err != nil {
			return err
		}
		p.images[x.key] = ref
	}
	if b.cfg.zstdChunked {
		p.images["speed/zstdchunked"] = b.reg + "/speed-zstdchunked/r1:zstd"
	}
	p.jsons["speed/nydus"] = filepath.Join(b.tmp, "json", "speed-nydus-r1.json")
	p.jsons["speed/nydus-independent"] = filepath.Join(b.tmp, "json", "speed-nydus-independent-r1.json")

	say("checking the converted images")
	for _, k := range []string{"speed/nydus", "speed/nydus-independent"} {
		if err := b.checkBootstrap(ctx, p.images[k]); err != nil {
			return err
		}
	}
	esgz, err := fetchImage(p.images["speed/estargz"])
	if err != nil {
		return err
	}
	if n := esgz.count("estargz"); n != 2 {
		return fmt.Errorf("%d of the eStargz image's %d layers carry the TOC digest annotation, want 2", n, len(esgz.layers))
	}
	return nil
}

// lastAttempt is the tag of round 1's last recorded attempt, which the
// report reads sizes from.
func (b *bench) lastAttempt(repo, tag string) (string, error) {
	for a := 3; a >= 1; a-- {
		ref := fmt.Sprintf("%s/%s/r1-a%d:%s", b.reg, repo, a, tag)
		if _, err := fetchImage(ref); err == nil {
			return ref, nil
		}
	}
	return "", fmt.Errorf("no %s image for round 1 in the registry", repo)
}

// checkBootstrap checks the bootstrap layer of ref with nydus-image check.
func (b *bench) checkBootstrap(ctx context.Context, ref string) error {
	im, err := fetchImage(ref)
	if err != nil {
		return err
	}
	dgst := ""
	for _, l := range im.layers {
		if l.role == "nydus-bootstrap" {
			dgst = l.Digest
		}
	}
	if dgst == "" {
		return fmt.Errorf("%s has no bootstrap layer", ref)
	}
	host, repo, _, err := splitRef(ref)
	if err != nil {
		return err
	}
	boot := filepath.Join(b.tmp, "check.boot")
	if err := fetchBootstrap(ctx, fmt.Sprintf("http://%s/v2/%s/blobs/%s", host, repo, dgst), boot); err != nil {
		return fmt.Errorf("bootstrap layer of %s: %w", ref, err)
	}
	log := filepath.Join(b.tmp, "logs", "check.log")
	if err := run(ctx, log, b.nydusImage, "check", boot); err != nil {
		showTail(log, 5)
		return fmt.Errorf("nydus-image check rejected the bootstrap of %s: %w", ref, err)
	}
	return nil
}

// fetchBootstrap extracts image/image.boot of the gzip tar at url to path.
func fetchBootstrap(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return extractBoot(resp.Body, path)
}

// extractBoot writes the image/image.boot member of a gzip tar to path.
func extractBoot(r io.Reader, path string) error {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return errors.New("no image/image.boot in the layer")
		}
		if err != nil {
			return err
		}
		if strings.TrimPrefix(h.Name, "./") != "image/image.boot" {
			continue
		}
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, tr); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
}
