package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"
)

// Media types and annotations the report tells apart.
const (
	mtOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	mtOCIIndex       = "application/vnd.oci.image.index.v1+json"
	mtDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mtDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mtNydusBlob      = "application/vnd.oci.image.layer.nydus.blob.v1"
	annNydusBoot     = "containerd.io/snapshot/nydus-bootstrap"
	annNydusBlob     = "containerd.io/snapshot/nydus-blob"
	annStargzTOC     = "containerd.io/snapshot/stargz/toc.digest"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform,omitempty"`
}

type manifest struct {
	MediaType string       `json:"mediaType"`
	Config    descriptor   `json:"config"`
	Layers    []descriptor `json:"layers"`
	Manifests []descriptor `json:"manifests"`
}

// layer is one layer of a fetched image manifest.
type layer struct {
	descriptor
	role string // "nydus-blob", "nydus-bootstrap", "estargz" or "layer"
}

// image is a fetched single-platform image manifest.
type image struct {
	ref    string
	digest string
	layers []layer
}

func (im *image) size(roles ...string) int64 {
	var n int64
	for _, l := range im.layers {
		if len(roles) == 0 || contains(roles, l.role) {
			n += l.Size
		}
	}
	return n
}

func (im *image) count(role string) int {
	n := 0
	for _, l := range im.layers {
		if l.role == role {
			n++
		}
	}
	return n
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func roleOf(d descriptor) string {
	switch {
	case d.Annotations[annNydusBoot] == "true":
		return "nydus-bootstrap"
	case d.MediaType == mtNydusBlob || d.Annotations[annNydusBlob] == "true":
		return "nydus-blob"
	case d.Annotations[annStargzTOC] != "":
		return "estargz"
	default:
		return "layer"
	}
}

// splitRef splits HOST:PORT/REPO[:TAG|@DIGEST] into the registry host,
// the repository and the tag or digest.
func splitRef(ref string) (host, repo, ver string, err error) {
	host, rest, ok := strings.Cut(ref, "/")
	if !ok || rest == "" {
		return "", "", "", fmt.Errorf("reference %q: want HOST:PORT/REPO:TAG", ref)
	}
	if r, d, ok := strings.Cut(rest, "@"); ok {
		return host, r, d, nil
	}
	if i := strings.LastIndexByte(rest, ':'); i > strings.LastIndexByte(rest, '/') {
		return host, rest[:i], rest[i+1:], nil
	}
	return host, rest, "latest", nil
}

var httpClient = &http.Client{Timeout: 60 * time.Second}

func getManifest(host, repo, ver string) (*manifest, string, error) {
	url := fmt.Sprintf("http://%s/v2/%s/manifests/%s", host, repo, ver)
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Accept", strings.Join([]string{mtOCIManifest, mtOCIIndex, mtDockerManifest, mtDockerList}, ", "))
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	var m manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, "", fmt.Errorf("GET %s: %w", url, err)
	}
	if m.MediaType == "" {
		m.MediaType = resp.Header.Get("Content-Type")
	}
	return &m, resp.Header.Get("Docker-Content-Digest"), nil
}

// listTags lists the tags of a repository in a plain-HTTP registry.
func listTags(host, repo string) ([]string, error) {
	url := fmt.Sprintf("http://%s/v2/%s/tags/list?n=10000", host, repo)
	resp, err := httpClient.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	var l struct {
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(body, &l); err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	sort.Strings(l.Tags)
	return l.Tags, nil
}

// fetchImage reads the manifest of ref from a plain-HTTP registry; for an
// index it follows the linux/amd64 entry.
func fetchImage(ref string) (*image, error) {
	host, repo, ver, err := splitRef(ref)
	if err != nil {
		return nil, err
	}
	m, dgst, err := getManifest(host, repo, ver)
	if err != nil {
		return nil, err
	}
	if m.MediaType == mtOCIIndex || m.MediaType == mtDockerList || (len(m.Manifests) > 0 && len(m.Layers) == 0) {
		var pick *descriptor
		for i, d := range m.Manifests {
			if d.Platform != nil && d.Platform.OS == "linux" && d.Platform.Architecture == "amd64" {
				pick = &m.Manifests[i]
				break
			}
		}
		if pick == nil {
			return nil, fmt.Errorf("%s: index has no linux/amd64 manifest", ref)
		}
		if m, dgst, err = getManifest(host, repo, pick.Digest); err != nil {
			return nil, err
		}
	}
	if len(m.Layers) == 0 {
		return nil, fmt.Errorf("%s: manifest has no layers", ref)
	}
	im := &image{ref: ref, digest: dgst}
	for _, d := range m.Layers {
		if d.Digest == "" || d.Size <= 0 {
			return nil, fmt.Errorf("%s: layer without digest or size", ref)
		}
		im.layers = append(im.layers, layer{descriptor: d, role: roleOf(d)})
	}
	return im, nil
}
