package checker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nydus-go/nydus/pkg/errdefs"
	"github.com/nydus-go/nydus/pkg/imageref"
	"github.com/nydus-go/nydus/pkg/storage"
)

// MaxDifferences bounds Report.Differences; further differences are only
// counted in Report.MoreDifferences. ChunkErrors are bounded the same way.
const MaxDifferences = 100

// Options configure a check. The zero value checks the Nydus manifest for
// linux/GOARCH.
type Options struct {
	// Platforms selects the manifests of an index to check (default
	// linux/GOARCH). A platform without a variant matches any variant.
	// A single-manifest target is checked whatever its platform.
	Platforms []v1.Platform
	// AllPlatforms checks every Nydus manifest of an index.
	AllPlatforms bool
	// MultiPlatform requires the target to be an index holding, for every
	// checked platform, both an OCI manifest and a Nydus one (the layout
	// `nydusify convert --merge-platform` writes), as upstream's
	// `nydusify check --multi-platform` does.
	MultiPlatform bool
	// Source and Target configure registry access. With SkipTLSVerify
	// (upstream's --source-insecure/--target-insecure), a registry that
	// fails over HTTPS is retried over plain HTTP, as upstream does.
	Source, Target imageref.RegistryOptions
	// Nydusd is the path of a nydusd binary for a mount comparison. Our
	// nydusd does not exist yet: setting it makes Check fail with
	// ErrNotSupported.
	Nydusd string
	// Concurrency bounds the files whose chunks are read at once
	// (default 8).
	Concurrency int
	// Log receives progress and diagnostics (nil: discarded).
	Log *slog.Logger
}

func (o *Options) defaults() {
	if len(o.Platforms) == 0 {
		o.Platforms = []v1.Platform{{OS: "linux", Architecture: runtime.GOARCH}}
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 8
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
}

// Difference is one way in which the Nydus filesystem differs from the
// source's.
type Difference struct {
	// Path is the absolute path in the image ("/" for the root).
	Path string `json:"path"`
	// Field is what differs: "missing in target", "extra in target",
	// "type", "mode", "uid", "gid", "size", "content", "symlink",
	// "xattrs", "rdev" or "hardlinks".
	Field string `json:"field"`
	// Source and Target describe the value on each side.
	Source string `json:"source,omitempty"`
	Target string `json:"target,omitempty"`
}

// String renders the difference on one line.
func (d Difference) String() string {
	switch d.Field {
	case "missing in target":
		return fmt.Sprintf("%s: missing in target (source: %s)", d.Path, d.Source)
	case "extra in target":
		return fmt.Sprintf("%s: extra in target (target: %s)", d.Path, d.Target)
	}
	return fmt.Sprintf("%s: %s differs: source %s, target %s", d.Path, d.Field, d.Source, d.Target)
}

// Report is the result of checking one Nydus manifest.
type Report struct {
	// Target is the target reference as given; Digest and Platform
	// identify the checked manifest.
	Target   string `json:"target"`
	Digest   string `json:"digest"`
	Platform string `json:"platform"`
	// Source describes the image the tree was compared with ("" when no
	// comparison was made) and SourceDigest its manifest digest.
	Source       string `json:"source,omitempty"`
	SourceDigest string `json:"source_digest,omitempty"`

	// ManifestProblems break the manifest, config or blob table rules.
	ManifestProblems []string `json:"manifest_problems,omitempty"`
	// BootstrapErr is set when the bootstrap could not be read or is
	// invalid; no file was checked then.
	BootstrapErr string `json:"bootstrap_error,omitempty"`
	// ChunkErrors are chunks that could not be read or failed digest
	// verification, each naming the file it belongs to.
	ChunkErrors []string `json:"chunk_errors,omitempty"`
	// MoreChunkErrors counts chunk errors beyond MaxDifferences.
	MoreChunkErrors int `json:"more_chunk_errors,omitempty"`
	// Warnings do not fail the check.
	Warnings []string `json:"warnings,omitempty"`

	// Counts of the Nydus filesystem (hard links counted once).
	Files     int   `json:"files"`
	Dirs      int   `json:"dirs"`
	Symlinks  int   `json:"symlinks"`
	Others    int   `json:"others"`
	Hardlinks int   `json:"hardlinks"`
	Bytes     int64 `json:"bytes"`
	Chunks    int   `json:"chunks"`
	Blobs     int   `json:"blobs"`
	// ChunksRead is the number of chunks read and verified.
	ChunksRead int `json:"chunks_read"`

	// Compared reports whether the tree was compared with a source.
	Compared bool `json:"compared"`
	// Differences lists up to MaxDifferences differences, in path order
	// (hard-link differences last); MoreDifferences counts the rest.
	Differences     []Difference `json:"differences,omitempty"`
	MoreDifferences int          `json:"more_differences,omitempty"`
}

// OK reports whether the image passed every check.
func (r Report) OK() bool {
	return len(r.ManifestProblems) == 0 && r.BootstrapErr == "" && len(r.ChunkErrors) == 0 &&
		r.MoreChunkErrors == 0 && len(r.Differences) == 0 && r.MoreDifferences == 0
}

// Problems lists every failure of the report, one line each.
func (r Report) Problems() []string {
	var out []string
	for _, p := range r.ManifestProblems {
		out = append(out, "manifest: "+p)
	}
	if r.BootstrapErr != "" {
		out = append(out, "bootstrap: "+r.BootstrapErr)
	}
	for _, c := range r.ChunkErrors {
		out = append(out, "data: "+c)
	}
	if r.MoreChunkErrors > 0 {
		out = append(out, fmt.Sprintf("data: %d more chunk errors", r.MoreChunkErrors))
	}
	for _, d := range r.Differences {
		out = append(out, "filesystem: "+d.String())
	}
	if r.MoreDifferences > 0 {
		out = append(out, fmt.Sprintf("filesystem: %d more differences", r.MoreDifferences))
	}
	return out
}

func (r *Report) problem(format string, args ...any) {
	r.ManifestProblems = append(r.ManifestProblems, imageref.OneLine(fmt.Sprintf(format, args...)))
}

func (r *Report) warn(format string, args ...any) {
	r.Warnings = append(r.Warnings, imageref.OneLine(fmt.Sprintf(format, args...)))
}

// compareSource is the image a Nydus manifest is compared with.
type compareSource struct {
	img  v1.Image
	what string // e.g. `source "REF"`, for messages
	host string // registry host ("" for layouts)
}

// candidate is one Nydus manifest to check.
type candidate struct {
	img      v1.Image
	digest   v1.Hash
	platform *v1.Platform
	// oci is the OCI manifest of the same platform in a merged index.
	oci       v1.Image
	ociDigest v1.Hash
	// problems found while selecting it (MultiPlatform).
	problems []string
}

// Check verifies the Nydus image target and, when source is not nil,
// compares its filesystem with source's. It returns one report per
// checked manifest; an error means that the check could not be made
// (unreachable registry, unknown image, a target that is not a Nydus
// image, an index without the requested platform, an unreadable source).
func Check(ctx context.Context, source *imageref.Ref, target imageref.Ref, o Options) ([]Report, error) {
	o.defaults()
	if o.Nydusd != "" {
		return nil, imageref.Errorf(errdefs.ErrUnsupported, nil, "checking through a nydusd mount (--nydusd %s) is not supported yet: omit --nydusd; files are then read and verified through ranged reads of the blobs", o.Nydusd)
	}
	tgt, err := openRef(ctx, "target", target, o.Target, o.Log)
	if err != nil {
		return nil, err
	}
	defer tgt.close()
	cands, err := selectTargets(tgt, &o)
	if err != nil {
		return nil, err
	}
	var src *opened
	if source != nil {
		if src, err = openRef(ctx, "source", *source, o.Source, o.Log); err != nil {
			return nil, err
		}
		defer src.close()
	}
	var rr storage.RangeReader
	closeRR := func() {}
	defer func() { closeRR() }()
	var reports []Report
	for _, c := range cands {
		r := Report{Target: target.String(), Digest: c.digest.String(), Platform: imageref.PlatformString(c.platform)}
		r.ManifestProblems = append(r.ManifestProblems, c.problems...)
		var s *compareSource
		switch {
		case src != nil:
			img, d, err := selectSource(src, c.platform)
			if err != nil {
				return reports, err
			}
			s = &compareSource{img: img, what: src.what(), host: src.host()}
			r.Source, r.SourceDigest = source.String(), d.String()
			if p := platformOfImage(img); src.Image != nil && p != nil && c.platform != nil && !samePlatform(p, c.platform) {
				r.warn("the source image is for %s, the target manifest for %s", imageref.PlatformString(p), imageref.PlatformString(c.platform))
			}
		case c.oci != nil:
			r.Source = fmt.Sprintf("OCI manifest %s of the target index", c.ociDigest)
			r.SourceDigest = c.ociDigest.String()
			s = &compareSource{img: c.oci, what: "source (" + r.Source + ")", host: tgt.host()}
		}
		if rr == nil {
			if rr, closeRR, err = tgt.rangeReader(ctx); err != nil {
				return reports, err
			}
		}
		o.Log.Info("checking Nydus manifest", "target", target.String(), "platform", r.Platform, "digest", r.Digest)
		if err := checkImage(ctx, &r, tgt, c.img, s, rr, &o); err != nil {
			return reports, err
		}
		reports = append(reports, r)
	}
	return reports, nil
}

// selectTargets picks the Nydus manifests to check.
func selectTargets(t *opened, o *Options) ([]candidate, error) {
	if t.Image != nil {
		mf, err := t.Image.Manifest()
		if err != nil {
			return nil, imageref.Describe(t.what(), t.host(), err)
		}
		if !imageref.IsNydusManifest(mf) {
			return nil, imageref.Errorf(ErrNotNydus, nil, "%s is not a Nydus image: its manifest has no Nydus blob or bootstrap layer (annotation %s)", t.what(), imageref.AnnotationNydusBootstrap)
		}
		c := candidate{img: t.Image, digest: t.Digest, platform: platformOfImage(t.Image)}
		if o.MultiPlatform {
			c.problems = append(c.problems, "multi-platform check: the target is a single manifest, not an index holding both the OCI and the Nydus manifests")
		}
		return []candidate{c}, nil
	}
	im, err := t.Index.IndexManifest()
	if err != nil {
		return nil, imageref.Describe(t.what(), t.host(), err)
	}
	marked := false
	for _, d := range im.Manifests {
		marked = marked || imageref.IsNydusDesc(d)
	}
	wanted := func(p *v1.Platform) bool {
		switch {
		case p == nil:
			return o.AllPlatforms
		case p.OS == "unknown": // attestations and other artifacts
			return false
		case o.AllPlatforms:
			return true
		}
		for _, w := range o.Platforms {
			if imageref.PlatformMatches(w, p) {
				return true
			}
		}
		return false
	}
	var cands []candidate
	var avail []string
	var ociEntries []v1.Descriptor
	wantedOCI := 0
	for _, d := range im.Manifests {
		if !d.MediaType.IsImage() {
			continue
		}
		want := wanted(d.Platform)
		kind := ""
		switch {
		case marked && imageref.IsNydusDesc(d):
			kind = "Nydus"
		case marked:
			kind = "OCI"
			ociEntries = append(ociEntries, d)
		case want:
			// An index without markers: tell Nydus manifests by content.
			img, err := t.Index.Image(d.Digest)
			if err != nil {
				return nil, imageref.Describe(t.what(), t.host(), err)
			}
			mf, err := img.Manifest()
			if err != nil {
				return nil, imageref.Describe(t.what(), t.host(), err)
			}
			kind = "OCI"
			if imageref.IsNydusManifest(mf) {
				kind = "Nydus"
			} else {
				ociEntries = append(ociEntries, d)
				wantedOCI++
			}
		}
		label := imageref.PlatformString(d.Platform)
		if kind != "" {
			label += " (" + kind + ")"
		}
		avail = append(avail, label)
		if kind != "Nydus" || !want {
			continue
		}
		img, err := t.Index.Image(d.Digest)
		if err != nil {
			return nil, imageref.Describe(t.what(), t.host(), err)
		}
		cands = append(cands, candidate{img: img, digest: d.Digest, platform: d.Platform})
	}
	if len(cands) == 0 {
		want := "any platform"
		if !o.AllPlatforms {
			var ws []string
			for i := range o.Platforms {
				ws = append(ws, imageref.PlatformString(&o.Platforms[i]))
			}
			want = strings.Join(ws, ",")
		}
		if len(avail) == 0 {
			avail = []string{"no image manifests"}
		}
		if !marked && wantedOCI > 0 {
			return nil, imageref.Errorf(ErrNotNydus, nil, "%s is not a Nydus image: its manifests for %s have no Nydus blob or bootstrap layer (the index has %s)", t.what(), want, strings.Join(avail, ", "))
		}
		return nil, imageref.Errorf(ErrNoPlatform, nil, "%s: index has no Nydus manifest for %s (it has %s)", t.what(), want, strings.Join(avail, ", "))
	}
	// Pair each Nydus manifest with the OCI manifest of its platform.
	for i := range cands {
		c := &cands[i]
		for _, d := range ociEntries {
			if samePlatform(d.Platform, c.platform) {
				img, err := t.Index.Image(d.Digest)
				if err != nil {
					return nil, imageref.Describe(t.what(), t.host(), err)
				}
				c.oci, c.ociDigest = img, d.Digest
				break
			}
		}
		if o.MultiPlatform && c.oci == nil {
			c.problems = append(c.problems, fmt.Sprintf("multi-platform check: the index has no OCI manifest for %s next to the Nydus one", imageref.PlatformString(c.platform)))
		}
	}
	return cands, nil
}

// selectSource picks the source manifest for platform p.
func selectSource(s *opened, p *v1.Platform) (v1.Image, v1.Hash, error) {
	if s.Image != nil {
		mf, err := s.Image.Manifest()
		if err != nil {
			return nil, v1.Hash{}, imageref.Describe(s.what(), s.host(), err)
		}
		if imageref.IsNydusManifest(mf) {
			return nil, v1.Hash{}, imageref.Errorf(ErrSourceIsNydus, nil, "%s is a Nydus image: the source must be the OCI image the target was converted from", s.what())
		}
		return s.Image, s.Digest, nil
	}
	im, err := s.Index.IndexManifest()
	if err != nil {
		return nil, v1.Hash{}, imageref.Describe(s.what(), s.host(), err)
	}
	var avail []string
	var exact, loose []v1.Descriptor
	for _, d := range im.Manifests {
		if !d.MediaType.IsImage() || imageref.IsNydusDesc(d) {
			continue
		}
		avail = append(avail, imageref.PlatformString(d.Platform))
		switch {
		case p == nil || d.Platform == nil:
		case samePlatform(p, d.Platform):
			exact = append(exact, d)
		case p.OS == d.Platform.OS && p.Architecture == d.Platform.Architecture:
			loose = append(loose, d)
		}
	}
	for _, d := range append(exact, loose...) {
		img, err := s.Index.Image(d.Digest)
		if err != nil {
			return nil, v1.Hash{}, imageref.Describe(s.what(), s.host(), err)
		}
		mf, err := img.Manifest()
		if err != nil {
			return nil, v1.Hash{}, imageref.Describe(s.what(), s.host(), err)
		}
		if !imageref.IsNydusManifest(mf) {
			return img, d.Digest, nil
		}
	}
	return nil, v1.Hash{}, imageref.Errorf(ErrNoPlatform, nil, "%s: index has no OCI manifest for %s (it has %s)", s.what(), imageref.PlatformString(p), strings.Join(avail, ", "))
}
