package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
)

// object is a manifest, index or blob a tag reaches in the registry.
type object struct {
	Size     int64
	Manifest bool // a manifest or an index (else a config or layer blob)
}

// manifestTypes are the media types a registry GET of a manifest accepts.
var manifestTypes = strings.Join([]string{
	"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
}, ", ")

// graph walks what ref (host/repository:tag) reaches in the registry:
// the manifest or index it names, the manifests of an index, and the
// config, layers and subject of each manifest. It returns every object
// by digest, and the layer bytes of the image a linux/amd64 pull runs
// (the index's first image manifest for that platform; artifacts such as
// a SOCI index are not images).
func graph(ref string) (map[string]object, int64, error) {
	i := strings.Index(ref, "/")
	j := strings.LastIndex(ref, ":")
	host, repo, tag := ref[:i], ref[i+1:j], ref[j+1:]
	objs := map[string]object{}
	var layers int64
	var walk func(reference string, runnable bool) error
	walk = func(reference string, runnable bool) error {
		req, _ := http.NewRequest(http.MethodGet, "http://"+host+"/v2/"+repo+"/manifests/"+reference, nil)
		req.Header.Set("Accept", manifestTypes)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("manifest %s of %s: %s: %s", reference, ref, resp.Status, bytes.TrimSpace(body))
		}
		sum := sha256.Sum256(body)
		objs["sha256:"+hex.EncodeToString(sum[:])] = object{Size: int64(len(body)), Manifest: true}
		var m struct {
			Manifests []struct {
				Digest       string `json:"digest"`
				ArtifactType string `json:"artifactType"`
				Platform     *struct {
					OS           string `json:"os"`
					Architecture string `json:"architecture"`
				} `json:"platform"`
			} `json:"manifests"`
			Config  *descriptor  `json:"config"`
			Layers  []descriptor `json:"layers"`
			Subject *descriptor  `json:"subject"`
		}
		if err := json.Unmarshal(body, &m); err != nil {
			return fmt.Errorf("manifest %s of %s: %w", reference, ref, err)
		}
		picked := !runnable
		for _, d := range m.Manifests {
			run := !picked && d.ArtifactType == "" && (d.Platform == nil || d.Platform.OS == "linux" && d.Platform.Architecture == "amd64")
			picked = picked || run
			if err := walk(d.Digest, run); err != nil {
				return err
			}
		}
		refs := []*descriptor{m.Config, m.Subject}
		for i := range m.Layers {
			refs = append(refs, &m.Layers[i])
		}
		for _, d := range refs {
			if d == nil || d.Digest == "" {
				continue
			}
			if _, ok := objs[d.Digest]; !ok {
				objs[d.Digest] = object{Size: d.Size, Manifest: d == m.Subject}
			}
		}
		if runnable && m.Manifests == nil {
			for _, l := range m.Layers {
				layers += l.Size
			}
		}
		return nil
	}
	if err := walk(tag, true); err != nil {
		return nil, 0, err
	}
	return objs, layers, nil
}

type descriptor struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

// added sums the objects of form that base lacks, and the blobs among them.
func added(base, form map[string]object) (all, blobs int64) {
	for d, o := range form {
		if _, ok := base[d]; ok {
			continue
		}
		all += o.Size
		if !o.Manifest {
			blobs += o.Size
		}
	}
	return all, blobs
}

// measureImage fills in the size of a form's image in the registry and,
// for a by-reference form, the bytes it adds to the OCI image's.
func (s *stack) measureImage(w workload, f form, p *prepared) error {
	objs, layers, err := graph(s.ref(w, f, false))
	if err != nil {
		return err
	}
	p.Size = layers
	if !f.ByRef {
		return nil
	}
	base, ociLayers, err := graph(s.ref(w, formOCI, false))
	if err != nil {
		return err
	}
	p.Added, p.AddedBlobs = added(base, objs)
	p.Size = ociLayers + p.Added
	return nil
}

// sociPrepared counts, in the SOCI snapshotter's log from offset on, the
// layers it mounted lazily and those it failed to (which containerd then
// pulls whole).
func sociPrepared(log string, offset int64) (remote, local int) {
	f, err := os.Open(log)
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	b, _ := io.ReadAll(io.NewSectionReader(f, offset, 1<<40))
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.Contains(l, `"remote-snapshot-prepared":"true"`):
			remote++
		case strings.Contains(l, `"msg":"failed to prepare remote snapshot"`):
			local++
		}
	}
	return remote, local
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
