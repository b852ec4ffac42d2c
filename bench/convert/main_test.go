package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

func TestMedianAndSums(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Fatalf("median = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Fatalf("median = %v", m)
	}
	res := map[string][]record{
		"a": {{label: "a", round: 1, wall: 1, cpu: 1}, {label: "a", round: 2, wall: 2, cpu: 1}, {label: "a", round: 3, wall: 3, cpu: 1}},
		"b": {{label: "b", round: 1, wall: 10, cpu: 1}, {label: "b", round: 3, wall: 30, cpu: 1}},
	}
	s := sumTiming(res, "a", "b")
	if got := fmt.Sprint(s.walls); got != "[11 33]" {
		t.Fatalf("sum walls = %s", got)
	}
}

func TestSplitRef(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:5000/a/b:tag":       "127.0.0.1:5000|a/b|tag",
		"127.0.0.1:5000/a/b":           "127.0.0.1:5000|a/b|latest",
		"127.0.0.1:5000/a@sha256:0123": "127.0.0.1:5000|a|sha256:0123",
	} {
		h, r, v, err := splitRef(in)
		if err != nil || h+"|"+r+"|"+v != want {
			t.Errorf("splitRef(%q) = %q %q %q %v, want %s", in, h, r, v, err, want)
		}
	}
}

// A fake registry: an index pointing at a Nydus manifest, and a plain
// OCI manifest sharing a blob with it.
func TestFetchImageAndUniq(t *testing.T) {
	manifests := map[string]string{
		"/v2/x/nydus/manifests/t": `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
			{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:arm","size":1,"platform":{"os":"linux","architecture":"arm64"}},
			{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:amd","size":1,"platform":{"os":"linux","architecture":"amd64"}}]}`,
		"/v2/x/nydus/manifests/sha256:amd": `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[
			{"mediaType":"application/vnd.oci.image.layer.nydus.blob.v1","digest":"sha256:b1","size":100,"annotations":{"containerd.io/snapshot/nydus-blob":"true"}},
			{"mediaType":"application/vnd.oci.image.layer.nydus.blob.v1","digest":"sha256:b2","size":20,"annotations":{"containerd.io/snapshot/nydus-blob":"true"}},
			{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:boot","size":5,"annotations":{"containerd.io/snapshot/nydus-bootstrap":"true"}}]}`,
		"/v2/y/manifests/t": `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[
			{"mediaType":"application/vnd.oci.image.layer.nydus.blob.v1","digest":"sha256:b1","size":100},
			{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:esgz","size":7,"annotations":{"containerd.io/snapshot/stargz/toc.digest":"sha256:toc"}}]}`,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := manifests[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Docker-Content-Digest", "sha256:"+strings.ReplaceAll(r.URL.Path, "/", "_"))
		fmt.Fprint(w, body)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	n, err := fetchImage(host + "/x/nydus:t")
	if err != nil {
		t.Fatal(err)
	}
	if n.size() != 125 || n.size("nydus-blob") != 120 || n.size("nydus-bootstrap") != 5 || n.count("nydus-blob") != 2 {
		t.Fatalf("nydus image: %+v", n.layers)
	}
	y, err := fetchImage(host + "/y:t")
	if err != nil {
		t.Fatal(err)
	}
	if y.count("estargz") != 1 || y.count("nydus-blob") != 1 {
		t.Fatalf("y: %+v", y.layers)
	}
	u := newUniq()
	if got := u.add(n); got != 125 {
		t.Fatalf("first add = %d", got)
	}
	if got := u.add(y); got != 7 {
		t.Fatalf("second add = %d (b1 is shared)", got)
	}
	if u.all != 132 || u.boots != 5 || u.blobs != 127 {
		t.Fatalf("uniq = %+v", u)
	}
	if _, err := fetchImage(host + "/missing:t"); err == nil {
		t.Fatal("missing image: no error")
	}
}

func TestProcsCPU(t *testing.T) {
	// This process has used some CPU; a PID that cannot exist counts 0.
	for i := 0; i < 1e6; i++ {
		_ = fmt.Sprint(i)
	}
	if v := procsCPU([]int{os.Getpid()}); v <= 0 {
		t.Fatalf("procsCPU(self) = %v", v)
	}
	if v := procsCPU([]int{1 << 30}); v != 0 {
		t.Fatalf("procsCPU(missing) = %v", v)
	}
}
