//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nydus-go/nydus/pkg/daemon/api"
)

// readerScript is a container workload that reads most of /usr/bin and the
// shared libraries in a loop and appends "<iteration> <md5 of the bytes>"
// to /out/log; errors (of the reads, or of running cat at all) go to
// /out/err.
const readerScript = `i=0; while :; do i=$((i+1)); ` +
	`s=$({ cat /usr/bin/* /usr/lib/x86_64-linux-gnu/*.so* | md5sum | cut -d" " -f1; } 2>>/out/err); ` +
	`echo "$i $s" >> /out/log; sleep 0.05; done`

// checkOutput asserts a container printed every one of wants.
func checkOutput(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(out, want) {
			t.Errorf("container output lacks %q:\n%s", want, out)
		}
	}
}

// readerLog is the state of a readerScript container.
type readerLog struct {
	lines int
	sums  map[string]int
	errs  string
}

func readReaderLog(t *testing.T, out string) readerLog {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(out, "log"))
	r := readerLog{sums: map[string]int{}}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(l); len(f) == 2 {
			r.lines++
			r.sums[f[1]]++
		} else if len(f) == 1 { // no checksum: the pipeline failed
			r.lines++
			r.sums[""]++
		}
	}
	e, _ := os.ReadFile(filepath.Join(out, "err"))
	r.errs = string(e)
	return r
}

// waitLines waits until the reader has written n more lines than have.
func waitLines(t *testing.T, out string, have, n int, what string) int {
	t.Helper()
	var got int
	waitFor(t, 60*time.Second, fmt.Sprintf("%d more reader iterations %s", n, what), func() bool {
		got = readReaderLog(t, out).lines
		return got >= have+n
	})
	return got
}

// startReader starts a readerScript container "reader" on ref, drops the
// page cache every 200 ms until the test ends so its reads reach nydusd,
// and waits for its first two passes. It returns the container's /out
// directory and the passes so far.
func (e *env) startReader(t *testing.T, ref string) (outDir string, lines int) {
	t.Helper()
	outDir = filepath.Join(e.dir, "out")
	os.MkdirAll(outDir, 0o755)
	e.startContainer("reader", ref, outDir, "/bin/sh", "-c", readerScript)
	done := make(chan struct{})
	go dropCaches(done)
	t.Cleanup(func() { close(done) })
	return outDir, waitLines(t, outDir, 0, 2, "before the kill")
}

// checkReader asserts the reader saw no error and always the same bytes.
func checkReader(t *testing.T, out string) readerLog {
	t.Helper()
	r := readReaderLog(t, out)
	if r.errs != "" {
		t.Errorf("the container's reads failed:\n%s", r.errs)
	}
	if len(r.sums) != 1 {
		t.Errorf("the container read different bytes across iterations: %v", r.sums)
	}
	return r
}

// TestDedicatedLifecycle runs the Debian image lazily under containerd
// with upstream nydus-snapshotter in dedicated mode and
// recover_policy=failover, then checks, with a container reading all the
// while: a SIGKILLed nydusd is replaced and takes the FUSE session over;
// a SIGKILLed snapshotter leaves containers readable and comes back;
// removing the image stops nydusd and the cache GC deletes its files.
func TestDedicatedLifecycle(t *testing.T) {
	e := newEnv(t, &snOptions{mode: "dedicated", recover: "failover"})
	ref, blobBytes := e.convert("curl", "nydus")

	pull := e.rpull(ref)
	e.reg.ResetStats()
	out, runTime, err := e.runContainer("hello", ref, "/bin/sh", "-c", "cat /etc/os-release; curl --version")
	if err != nil {
		t.Fatalf("%v\nsnapshotter log:\n%s", err, e.sn.Tail())
	}
	checkOutput(t, out, osRelease, curlVersion)
	st := e.reg.Stats()
	t.Logf("pull %s, run %s; fetched %d of %d blob bytes (%.1f%%) in %d requests",
		pull.Round(time.Millisecond), runTime.Round(time.Millisecond), st.BlobBytesServed, blobBytes,
		100*float64(st.BlobBytesServed)/float64(blobBytes), st.BlobGets)
	// What the container read, from nydusd's file metrics
	// (iostats_files), against what was fetched for it.
	var read int64
	socks := e.apiSockets()
	if len(socks) != 1 {
		t.Fatalf("want one nydusd API socket, have %v", socks)
	}
	c := nydusdAPI(socks[0])
	files, err := c.FileMetrics(t.Context(), "")
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		read += int64(f.DataRead)
	}
	t.Logf("the container read %d bytes of %d files: fetched/read = %.2f", read, len(files), float64(st.BlobBytesServed)/float64(read))
	if st.BlobBytesServed == 0 || st.BlobBytesServed > blobBytes/4 || float64(st.BlobBytesServed) > 1.2*float64(read) {
		t.Errorf("the run fetched %d of %d blob bytes for %d bytes read; want at most a quarter of the blobs and 1.2× the bytes read",
			st.BlobBytesServed, blobBytes, read)
	}
	pids := e.nydusdPIDs()
	if len(pids) != 1 {
		t.Fatalf("want one nydusd for the image, have %v", pids)
	}

	// A container that keeps reading, with the page cache dropped so its
	// reads reach nydusd.
	outDir, n := e.startReader(t, ref)

	t.Run("nydusd killed, failover", func(t *testing.T) {
		syscall.Kill(pids[0], syscall.SIGKILL)
		var now []int
		waitFor(t, 30*time.Second, "the snapshotter to start a new nydusd", func() bool {
			now = e.nydusdPIDs()
			return len(now) == 1 && now[0] != pids[0]
		})
		waitFor(t, 30*time.Second, "the new nydusd to run", func() bool {
			c := nydusdAPI(e.apiSockets()[0])
			defer c.Close()
			info, err := c.DaemonInfo(t.Context())
			return err == nil && info.State == api.StateRunning
		})
		n = waitLines(t, outDir, n, 3, "after the failover")
		checkReader(t, outDir)
		pids = now
	})

	t.Run("snapshotter killed and restarted", func(t *testing.T) {
		e.sn.Stop(syscall.SIGKILL)
		n = waitLines(t, outDir, n, 2, "with the snapshotter dead")
		e.startSnapshotter()
		// containerd redials the proxy plugin with a backoff.
		waitFor(t, 30*time.Second, "containerd to reach the restarted snapshotter", func() bool {
			_, err := e.ctr("snapshots", "--snapshotter", snapshotterName, "ls")
			return err == nil
		})
		if now := e.nydusdPIDs(); !slices.Equal(now, pids) {
			t.Errorf("nydusd processes changed across a snapshotter restart: %v, then %v", pids, now)
		}
		out, _, err := e.runContainer("hello2", ref, "/bin/sh", "-c", "cat /etc/os-release")
		if err != nil || !strings.Contains(out, osRelease) {
			t.Errorf("a new container after the snapshotter restart: %v\n%s", err, out)
		}
		n = waitLines(t, outDir, n, 2, "after the snapshotter restart")
		checkReader(t, outDir)
	})

	r := checkReader(t, outDir)
	t.Logf("the reader container read the same bytes %d times", r.lines)
	e.removeContainer("reader")

	t.Run("image removal stops nydusd and GCs the cache", func(t *testing.T) {
		if files := e.cacheFiles(); !slices.ContainsFunc(files, func(f string) bool { return strings.HasSuffix(f, ".blob.data") }) {
			t.Fatalf("no cached blob data before the removal: %v", files)
		}
		e.mustCtr("images", "rm", "--sync", ref)
		waitFor(t, 20*time.Second, "nydusd to stop", func() bool { return len(e.nydusdPIDs()) == 0 })
		if ms := fuseMountsUnder(e.snRoot); len(ms) > 0 {
			t.Errorf("FUSE mounts left after the image was removed: %v", ms)
		}
		waitFor(t, 20*time.Second, "the cache GC", func() bool {
			if files := e.cacheFiles(); len(files) > 0 {
				t.Logf("cache files left: %v", files)
				return false
			}
			return true
		})
	})
}

// TestSharedMode runs the image under one shared nydusd (daemon_mode =
// "shared"), which gets the image through POST /api/v1/mount; removing
// the image unmounts it (DELETE /api/v1/mount) and GCs its cache files
// while the shared daemon keeps running.
func TestSharedMode(t *testing.T) {
	// The one case with digest_validate (no passthrough, every read
	// re-verified); the others run the default configuration.
	e := newEnv(t, &snOptions{mode: "shared", recover: "failover", digestValidate: true})
	ref, _ := e.convert("curl", "nydus")
	e.rpull(ref)
	out, _, err := e.runContainer("hello", ref, "/bin/sh", "-c", "cat /etc/os-release; curl --version")
	if err != nil {
		t.Fatalf("%v\nsnapshotter log:\n%s", err, e.sn.Tail())
	}
	checkOutput(t, out, osRelease, curlVersion)
	pids := e.nydusdPIDs()
	if len(pids) != 1 {
		t.Fatalf("want one shared nydusd, have %v", pids)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pids[0]))
	if strings.Contains(string(cmdline), "--bootstrap") {
		t.Errorf("the shared nydusd was started with a bootstrap: %q", cmdline)
	}
	shared := filepath.Join(e.snRoot, "mnt")
	ents, err := os.ReadDir(shared)
	if err != nil || len(ents) != 1 {
		t.Fatalf("shared mountpoint %s lists %v (%v), want the one image", shared, ents, err)
	}

	e.mustCtr("images", "rm", "--sync", ref)
	waitFor(t, 20*time.Second, "the image to be unmounted from the shared daemon", func() bool {
		ents, err := os.ReadDir(shared)
		return err == nil && len(ents) == 0
	})
	if now := e.nydusdPIDs(); !slices.Equal(now, pids) {
		t.Errorf("the shared nydusd changed: %v, then %v", pids, now)
	}
	waitFor(t, 20*time.Second, "the cache GC", func() bool {
		return !slices.ContainsFunc(e.cacheFiles(), func(f string) bool { return strings.Contains(f, ".blob.data") })
	})
}

// TestCorruptBootstrap: an image whose bootstrap layer holds a damaged
// bootstrap fails to run with an error naming the bootstrap, in bounded
// time, and leaves no nydusd or mount behind. A damaged magic is caught by
// the snapshotter itself; damaged superblock fields past it reach nydusd,
// which must refuse the bootstrap with a one-line error.
func TestCorruptBootstrap(t *testing.T) {
	e := newEnv(t, &snOptions{})
	ref, _ := e.convert("minbase", "nydus")
	for _, c := range []struct {
		name     string
		from, to int
		// errWant is in ctr's error; logWant in the snapshotter's log,
		// where nydusd's own one-line error lands (log_to_stdout).
		errWant, logWant string
	}{
		{"magic", 1024, 1024 + 256, "bootstrap is not ready", "unknown file system header"},
		{"extended superblock", 1152, 1152 + 256, "failed to reach RUNNING", "nydusd: bootstrap "},
	} {
		t.Run(c.name, func(t *testing.T) {
			tag := "corrupt-" + strings.ReplaceAll(c.name, " ", "-")
			bad := corruptBootstrap(t, ref, e.reg.Host+"/debian:"+tag, c.from, c.to)
			e.rpull(bad)
			start := time.Now()
			out, _, err := e.runContainer(tag, bad, "/bin/sh", "-c", "echo should-not-run")
			took := time.Since(start)
			t.Logf("run failed after %s: %v", took.Round(time.Millisecond), err)
			if err == nil || strings.Contains(out, "should-not-run") {
				t.Fatalf("a corrupt bootstrap ran:\n%s", out)
			}
			if !strings.Contains(err.Error(), c.errWant) {
				t.Errorf("the error lacks %q: %v", c.errWant, err)
			}
			if log := e.sn.Tail(); !strings.Contains(log, c.logWant) {
				t.Errorf("the snapshotter's log lacks %q", c.logWant)
			} else if i := strings.Index(log, c.logWant); c.name != "magic" {
				t.Logf("nydusd said: %s", strings.SplitN(log[i:], "\n", 2)[0])
			}
			if took > 90*time.Second {
				t.Errorf("failing took %s", took)
			}
			e.ctr("containers", "rm", tag)
			e.mustCtr("images", "rm", "--sync", bad)
			waitFor(t, 20*time.Second, "no nydusd", func() bool { return len(e.nydusdPIDs()) == 0 })
			if ms := fuseMountsUnder(e.snRoot); len(ms) > 0 {
				t.Errorf("FUSE mounts left: %v", ms)
			}
		})
	}
}

// TestRegistryUnreachable: when the registry goes away mid-run, a
// container reading files not yet fetched gets EIO and exits, instead of
// hanging; once the registry is back, the same files read fine.
func TestRegistryUnreachable(t *testing.T) {
	e := newEnv(t, &snOptions{backend: `"timeout":2,"connect_timeout":2,`})
	ref, _ := e.convert("curl", "nydus")
	e.rpull(ref)
	outDir := filepath.Join(e.dir, "out")
	os.MkdirAll(outDir, 0o755)
	// Large files that starting a shell does not touch.
	files := "/usr/bin/perl /usr/lib/x86_64-linux-gnu/libcrypto.so.3 /usr/lib/x86_64-linux-gnu/libunistring.so.2.2.0 /usr/bin/curl"
	// The shell, cat and their libraries are read whole first, so that
	// their pages never need the registry: a page of a mapped binary
	// that cannot be read kills the process with SIGBUS instead.
	tools := "/usr/bin/dash /usr/bin/cat /usr/bin/sleep /etc/ld.so.cache /usr/lib/x86_64-linux-gnu/libc.so.6 /usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
	e.startContainer("offline", ref, outDir, "/bin/sh", "-c",
		`cat `+tools+` > /dev/null && touch /out/ready; `+
			`while [ ! -e /out/go ]; do sleep 0.1; done; for f in `+files+`; do `+
			`if cat "$f" > /dev/null 2>>/out/err; then echo "ok $f"; else echo "fail $f"; fi >> /out/log; done; echo done >> /out/log`)
	waitFor(t, 30*time.Second, "the container to start", func() bool {
		_, err := os.Stat(filepath.Join(outDir, "ready"))
		return err == nil
	})
	e.reg.SetOffline(true)
	os.WriteFile(filepath.Join(outDir, "go"), nil, 0o644)
	start := time.Now()
	waitFor(t, 90*time.Second, "the container's reads to end", func() bool {
		b, _ := os.ReadFile(filepath.Join(outDir, "log"))
		return strings.Contains(string(b), "done")
	})
	log, _ := os.ReadFile(filepath.Join(outDir, "log"))
	errs, _ := os.ReadFile(filepath.Join(outDir, "err"))
	t.Logf("reads ended after %s:\n%s%s", time.Since(start).Round(time.Millisecond), log, errs)
	if !strings.Contains(string(log), "fail ") || !strings.Contains(string(errs), "Input/output error") {
		t.Errorf("no read failed with EIO while the registry was unreachable")
	}
	waitFor(t, 30*time.Second, "the container to exit", func() bool {
		out, _ := e.ctr("tasks", "ls")
		return !strings.Contains(out, "RUNNING")
	})

	e.reg.SetOffline(false)
	out, _, err := e.runContainer("online", ref, "/bin/sh", "-c", "cat "+files+" | wc -c")
	if err != nil {
		t.Fatalf("reads after the registry came back: %v", err)
	}
	t.Logf("after the registry came back, the files read fine: %s bytes", strings.TrimSpace(out))
}

// TestMergePlatformWithoutSnapshotter: an image converted with
// --merge-platform runs on a containerd without the Nydus snapshotter,
// which picks the OCI manifest of the index; a plain Nydus image fails to
// unpack there.
func TestMergePlatformWithoutSnapshotter(t *testing.T) {
	e := newEnv(t, nil)
	ref, _ := e.convert("curl", "merged", "--merge-platform")
	e.mustCtr("images", "pull", "--plain-http", ref)
	out, err := e.ctr("run", "--rm", ref, "merged", "/bin/sh", "-c", "cat /etc/os-release; curl --version")
	if err != nil {
		t.Fatal(err)
	}
	checkOutput(t, out, osRelease, curlVersion)

	// A plain Nydus image has no such fallback.
	plain, _ := e.convert("minbase", "nydus")
	if out, err := e.ctr("images", "pull", "--plain-http", plain); err == nil {
		t.Errorf("a plain Nydus image pulled on containerd without the snapshotter:\n%s", out)
	} else if !strings.Contains(err.Error(), "no processor for media-type") {
		t.Errorf("pulling a plain Nydus image failed with an unexpected error: %v", err)
	}
}

// deadSessionErrors are the failures docs/containerd.md documents for a
// container whose FUSE session died: ENOTCONN once the connection is gone,
// ECONNABORTED for requests the abort caught, SIGBUS for a mapped page,
// SIGSEGV for a program that was half loaded.
// ld.so reports errno by number ("Error 107").
var deadSessionErrors = []string{
	"transport endpoint is not connected", "error 107", // ENOTCONN
	"software caused connection abort", "error 103", // ECONNABORTED
	"bus error",          // SIGBUS: a mapped page of the dead session
	"segmentation fault", // SIGSEGV: a program half-loaded when its mappings failed
}

func documentedDeadSessionError(line string) bool {
	l := strings.ToLower(line)
	for _, e := range deadSessionErrors {
		if strings.Contains(l, e) {
			return true
		}
	}
	return false
}

// TestRestartPolicy documents recover_policy = "restart": after nydusd is
// killed the snapshotter starts a fresh one on a new FUSE session, so new
// containers work, but a running container keeps its overlay on the dead
// session and its reads fail (ENOTCONN, or SIGBUS for a mapped binary);
// only "failover" keeps it alive.
func TestRestartPolicy(t *testing.T) {
	e := newEnv(t, &snOptions{recover: "restart"})
	ref, _ := e.convert("curl", "nydus")
	e.rpull(ref)
	outDir, _ := e.startReader(t, ref)
	pids := e.nydusdPIDs()
	if len(pids) != 1 {
		t.Fatalf("want one nydusd, have %v", pids)
	}
	syscall.Kill(pids[0], syscall.SIGKILL)
	waitFor(t, 30*time.Second, "a new nydusd", func() bool {
		now := e.nydusdPIDs()
		return len(now) == 1 && now[0] != pids[0]
	})
	// The first sign of the dead session: the reader logs an error, or
	// its shell itself dies (SIGBUS on a page of /bin/sh that is gone).
	// Every error must be one docs/containerd.md names.
	waitFor(t, 60*time.Second, "the running container's reads to fail or the container to exit", func() bool {
		return strings.Contains(readReaderLog(t, outDir).errs, "\n") || e.taskStatus("reader") == "STOPPED"
	})
	// Whole lines only: the reader may be writing the next one.
	errs := readReaderLog(t, outDir).errs
	errs = strings.TrimSpace(errs[:strings.LastIndexByte(errs, '\n')+1])
	if errs == "" {
		t.Logf("the running container exited (status %s) before it logged an error", e.taskStatus("reader"))
	} else {
		t.Logf("the running container: %s", strings.SplitN(errs, "\n", 2)[0])
	}
	for _, l := range strings.Split(errs, "\n") {
		if l != "" && !documentedDeadSessionError(l) {
			t.Errorf("the running container failed with an error docs/containerd.md does not name: %q", l)
		}
	}
	out, _, err := e.runContainer("fresh", ref, "/bin/sh", "-c", "cat /etc/os-release")
	if err != nil || !strings.Contains(out, osRelease) {
		t.Errorf("a new container after the restart: %v\n%s", err, out)
	}
}

// TestSharedChunksAcrossImages: under containerd and nydus-snapshotter
// (its default dedicated mode, one cache directory), a second image with
// the same files in other blobs (converted with another compressor and
// --dedup-scope none, as another team's pipeline would) runs without
// fetching the files the first image's container read: nydusd copies
// their chunks from the cache by content. digest_validate turns FUSE
// passthrough off, so that the whole-file copies (shared by content too)
// do not serve the second container instead. Bytes from the registry's
// counting proxy.
func TestSharedChunksAcrossImages(t *testing.T) {
	e := newEnv(t, &snOptions{digestValidate: true})
	ref1, _ := e.convert("curl", "h1")
	ref2, blobs2 := e.convert("curl", "h2", "--compressor", "lz4_block", "--dedup-scope", "none")
	e.rpull(ref1)
	out, _, err := e.runContainer("h1", ref1, "/bin/sh", "-c", "curl --version")
	if err != nil {
		t.Fatalf("%v\nsnapshotter log:\n%s", err, e.sn.Tail())
	}
	checkOutput(t, out, curlVersion)
	first := e.reg.Stats().BlobBytesServed
	e.rpull(ref2)
	e.reg.ResetStats()
	out, _, err = e.runContainer("h2", ref2, "/bin/sh", "-c", "curl --version")
	if err != nil {
		t.Fatalf("%v\nsnapshotter log:\n%s", err, e.sn.Tail())
	}
	checkOutput(t, out, curlVersion)
	got := e.reg.Stats().BlobBytesServed
	t.Logf("the first container fetched %d bytes (with its pull); the second, of the same files in other blobs (%d bytes of blobs), %d", first, blobs2, got)
	if got > first/10 {
		t.Fatalf("the second image fetched %d bytes; the first %d: its chunks were not copied from the cache", got, first)
	}
}
