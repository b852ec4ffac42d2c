package checker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/nydus-go/nydus/pkg/imageref"
)

// checkManifest applies the manifest and config rules to a Nydus
// manifest and returns the index of the layer to read the bootstrap from
// (-1 if none qualifies).
func checkManifest(r *Report, mf *v1.Manifest, cf *v1.ConfigFile) int {
	layers := mf.Layers
	if len(layers) == 0 {
		r.problem("the manifest has no layers")
		return -1
	}
	last := len(layers) - 1
	boot := -1
	for i, l := range layers {
		if l.Annotations[imageref.AnnotationNydusBootstrap] == "true" {
			if i != last {
				r.problem("layer %d (%s) is annotated %s=\"true\" but the bootstrap layer must be the last of the %d layers", i, l.Digest, imageref.AnnotationNydusBootstrap, len(layers))
			}
			boot = i
		}
	}
	if layers[last].Annotations[imageref.AnnotationNydusBootstrap] != "true" {
		r.problem("the last layer (%s) is not the bootstrap layer: annotation %s=\"true\" is missing", layers[last].Digest, imageref.AnnotationNydusBootstrap)
		if boot < 0 && layers[last].MediaType != imageref.MediaTypeNydusBlob {
			// Try it anyway, to report on the rest of the image.
			boot = last
		}
	}
	if boot >= 0 {
		l := layers[boot]
		switch string(l.MediaType) {
		case imageref.MediaTypeOCILayerGzip, imageref.MediaTypeDockerLayerGzip:
		default:
			r.problem("bootstrap layer %s has media type %q, want %q or %q", l.Digest, l.MediaType, imageref.MediaTypeOCILayerGzip, imageref.MediaTypeDockerLayerGzip)
		}
		switch v, ok := l.Annotations[imageref.AnnotationFSVersion]; {
		case !ok:
			r.problem("bootstrap layer %s lacks annotation %s=\"6\"", l.Digest, imageref.AnnotationFSVersion)
		case v == "5":
			r.problem("bootstrap layer %s is annotated %s=\"5\": RAFS v5 images are not supported, only \"6\"", l.Digest, imageref.AnnotationFSVersion)
		case v != "6":
			r.problem("bootstrap layer %s has annotation %s=%q, want \"6\"", l.Digest, imageref.AnnotationFSVersion, v)
		}
	}
	for i, l := range layers {
		if i == boot || (i == last && boot < 0) {
			continue
		}
		if l.MediaType != imageref.MediaTypeNydusBlob {
			r.problem("blob layer %d (%s) has media type %q, want %q", i, l.Digest, l.MediaType, imageref.MediaTypeNydusBlob)
		}
		if l.Annotations[imageref.AnnotationNydusBlob] != "true" {
			r.problem("blob layer %d (%s) lacks annotation %s=\"true\"", i, l.Digest, imageref.AnnotationNydusBlob)
		}
	}
	if cf == nil {
		return boot
	}
	diffIDs := cf.RootFS.DiffIDs
	if len(diffIDs) != len(layers) {
		r.problem("the config lists %d rootfs.diff_ids for %d layers", len(diffIDs), len(layers))
		return boot
	}
	for i, l := range layers {
		if i == boot {
			continue
		}
		if diffIDs[i] != l.Digest {
			r.problem("blob layer %d: rootfs.diff_ids[%d] is %s, want the layer digest %s (a Nydus blob is not compressed as a whole)", i, i, diffIDs[i], l.Digest)
		}
	}
	return boot
}

// blobLayerIDs returns the hex digests of the blob layers (all layers
// but the bootstrap one).
func blobLayerIDs(mf *v1.Manifest, boot int) map[string]int64 {
	ids := map[string]int64{}
	for i, l := range mf.Layers {
		if i == boot || (boot < 0 && i == len(mf.Layers)-1) {
			continue
		}
		ids[l.Digest.Hex] = l.Size
	}
	return ids
}

// compareConfigs reports differences between the runtime configs
// (config.config: Env, Cmd, Entrypoint, …) of the source and the target,
// ignoring the legacy ArgsEscaped, as upstream's manifest rule does.
func compareConfigs(r *Report, src, tgt *v1.ConfigFile) {
	s, t := src.Config, tgt.Config
	s.ArgsEscaped, t.ArgsEscaped = false, false
	sb, err1 := json.Marshal(s)
	tb, err2 := json.Marshal(t)
	if err1 == nil && err2 == nil && bytes.Equal(sb, tb) {
		return
	}
	var sm, tm map[string]json.RawMessage
	_ = json.Unmarshal(sb, &sm)
	_ = json.Unmarshal(tb, &tm)
	var keys []string
	for k, v := range sm {
		if string(tm[k]) != string(v) {
			keys = append(keys, k)
		}
	}
	for k := range tm {
		if _, ok := sm[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s: source %s, target %s", k, orNone(sm[k]), orNone(tm[k])))
	}
	if len(parts) == 0 {
		parts = []string{"they differ"}
	}
	r.problem("image config differs from the source's: %s", strings.Join(parts, "; "))
}

func orNone(b json.RawMessage) string {
	if len(b) == 0 {
		return "(none)"
	}
	s := string(b)
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
