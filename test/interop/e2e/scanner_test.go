//go:build e2e

package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// eicar is the EICAR anti-virus test file: harmless, and detected by
// every scanner.
const eicar = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

// eicarSignature is a ClamAV signature database holding only EICAR's
// (ClamAV has no database offline).
const eicarSignature = "Eicar-Test-Signature:0:0:58354f2150254041505b345c505a58353428505e2937434329377d2445494341522d5354414e444152442d414e544956495255532d544553542d46494c452124482b482a\n"

// TestAsyncScanner: the reference subscriber (examples/scanner) follows
// nydusd's event log and scans each mounted image with ClamAV. A
// container of an image holding the EICAR test file runs without waiting
// for the scan, and the scanner reports the file afterwards.
func TestAsyncScanner(t *testing.T) {
	clamscan, err := exec.LookPath("clamscan")
	if err != nil {
		t.Fatalf("clamscan: %v (make deps installs Debian's clamav)", err)
	}
	e := newEnv(t, &snOptions{})
	dir := t.TempDir()

	// debian:minbase plus a layer with /eicar.com, pushed, then converted.
	idx, err := layout.ImageIndexFromPath(e.b.layout)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var base v1.Image
	for _, d := range m.Manifests {
		if d.Annotations["org.opencontainers.image.ref.name"] == "minbase" {
			if base, err = idx.Image(d.Digest); err != nil {
				t.Fatal(err)
			}
		}
	}
	if base == nil {
		t.Fatal("no minbase image in the layout")
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	tw.WriteHeader(&tar.Header{Name: "eicar.com", Mode: 0o644, Size: int64(len(eicar)), Typeflag: tar.TypeReg})
	tw.Write([]byte(eicar))
	tw.Close()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(base, l)
	if err != nil {
		t.Fatal(err)
	}
	src, err := name.ParseReference(e.reg.Host+"/eicar:oci", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(src, img); err != nil {
		t.Fatal(err)
	}
	ref := e.reg.Host + "/eicar:nydus"
	if out, err := run(e.b.nydusify, "convert", "--source", src.String(), "--target", ref, "--plain-http"); err != nil {
		t.Fatalf("convert: %v\n%s", err, out)
	}

	// The scanner, built from examples/, follows every daemon's socket.
	scanner := filepath.Join(dir, "scanner")
	if out, err := exec.Command("go", "build", "-o", scanner, "github.com/nydus-go/nydus/examples/scanner").CombinedOutput(); err != nil {
		t.Fatalf("build the scanner: %v\n%s", err, out)
	}
	sigs := filepath.Join(dir, "eicar.ndb")
	os.WriteFile(sigs, []byte(eicarSignature), 0o644)
	cmd := exec.Command(scanner, "--sockets", filepath.Join(e.snRoot, "socket", "*", "api.sock"), "--signatures", sigs, "--clamscan", clamscan)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	type verdict struct {
		Mountpoint string   `json:"mountpoint"`
		Verdict    string   `json:"verdict"`
		Findings   []string `json:"findings"`
		Error      string   `json:"error"`
		Started    time.Time
		Took       string `json:"took"`
	}
	verdicts := make(chan verdict, 4)
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var v verdict
			if json.Unmarshal(sc.Bytes(), &v) == nil {
				verdicts <- v
			}
		}
		io.Copy(io.Discard, stdout)
	}()

	e.rpull(ref)
	start := time.Now()
	out, took, err := e.runContainer("scanned", ref, "/bin/sh", "-c", "cat /etc/os-release")
	if err != nil || !strings.Contains(out, osRelease) {
		t.Fatalf("the container: %v\n%s", err, out)
	}
	t.Logf("the container ran in %s", took.Round(time.Millisecond))
	select {
	case v := <-verdicts:
		if v.Verdict != "infected" || len(v.Findings) != 1 || !strings.Contains(v.Findings[0], "/eicar.com: Eicar-Test-Signature") {
			t.Fatalf("verdict %+v, want EICAR found", v)
		}
		t.Logf("scan of %s: %s, %s (started %s after the container did)", v.Mountpoint, v.Verdict, v.Took, v.Started.Sub(start).Round(time.Millisecond))
		// The scan runs beside the container, never in its way: the
		// container was done long before the scan (which reads the whole
		// image) ended.
		scanTook, err := time.ParseDuration(v.Took)
		if err != nil {
			t.Fatal(err)
		}
		if end := v.Started.Add(scanTook); !start.Add(took).Before(end) {
			t.Errorf("the container ended at +%s, after the scan did (+%s): it waited for the scan", took, end.Sub(start))
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("no verdict from the scanner\n%s", stderr.String())
	}
}
