package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMarkdownRatiosAndFailures(t *testing.T) {
	r := report{Runs: 3, Profiles: []profile{{Name: "unlimited"}, {Name: "constrained", Mbit: 100, RTT: 20 * time.Millisecond}},
		Workloads: workloads[:1]}
	for _, f := range forms {
		pr := prepared{Workload: "echo", Form: f.Name, Size: 1e6, Convert: 10 * time.Second}
		switch f.Name {
		case "OCI + SOCI index":
			pr.Added, pr.AddedBlobs, pr.Convert = 60e3, 55e3, 2*time.Second
		case "OCI + Nydus-Go zran":
			pr.Added, pr.AddedBlobs, pr.Convert = 40e3, 38e3, 2*time.Second
		}
		r.Prepared = append(r.Prepared, pr)
	}
	add := func(f, p string, total time.Duration, bytes int64, err string) {
		reqs := map[string]int64{"eStargz": 12, "Nydus-Go": 5, "Nydus-Go + prefetch": 4}[f]
		for rep := 1; rep <= 3; rep++ {
			r.Results = append(r.Results, result{Workload: "echo", Form: f, Profile: p, Rep: rep, Pull: total / 2, Ready: total / 2,
				Total: total, Bytes: bytes, Requests: reqs, ReadBytes: 2e6, Err: err,
				Kinds: map[string]kindStat{"demand": {Requests: 3, Bytes: 1e6, Amplified: 1}, "hotset": {Requests: 2, Bytes: 2e6, Amplified: 1}}})
		}
	}
	for _, p := range []string{"unlimited", "constrained"} {
		add("OCI", p, 8*time.Second, 50e6, "")
		add("eStargz", p, 2*time.Second, 10e6, "")
		add("Nydus-Go", p, time.Second, 2e6, "")
		add("Nydus-Go + prefetch", p, time.Second, 2e6, "")
		add("Nydus-Go shared", p, time.Second, 2e6, "")
		add("Nydus-Go + prefetch shared", p, time.Second/2, 2e6, "")
		add("eStargz optimized", p, 0, 0, "run: boom")
		add("OCI + SOCI index", p, 4*time.Second, 5e6, "")
		add("OCI + Nydus-Go zran", p, 3*time.Second, 4e6, "")
	}
	for i := range r.Results {
		if r.Results[i].Form == "OCI + SOCI index" {
			r.Results[i].RemoteLayers = 2
		}
	}
	md := r.markdown()
	for _, want := range []string{
		"| echo | 0.12× | 0.50× | — | 0.04× | 0.20× |", // Nydus-Go ÷ OCI, ÷ eStargz, fetched ratios
		"| echo | stargz | eStargz optimized | failed |",
		"constrained, echo, eStargz optimized: run: boom",
		// Targets: 1 s ÷ 2 s, 0 requests, eStargz optimized failed; the
		// floor = 2 MB / 12.5 MB/s + 3 × 20 ms + OCI's 4 s ready.
		"| echo | 0.50× | met | 0.42× | met | — | — (no reference) | 4 | met | 4.22 | 0.24× | met | 1.00 | met |",
		"| echo | 0.50× | — | 1.00× | 0.50× |",            // shared: ÷ eStargz, ÷ eStargz optimized (failed), ready ratios
		"| echo | 0.50× | met |\n",                        // unlimited: ≤ 0.8× eStargz
		"| echo | Nydus-Go | 3 / 1.0 | — | — | 2 / 2.0 |", // fetch kinds
		// By reference: bytes added against the OCI layers (1 MB), index
		// time against nydusify convert's 10 s; cold starts against OCI's
		// 8 s and each other.
		"| echo | OCI + SOCI index | 1.0 | 60.0 | 55.0 | 6.00% | — | 2.00 | 0.20× | — |",
		"| echo | OCI + Nydus-Go zran | 1.0 | 40.0 | 38.0 | 4.00% | met | 2.00 | 0.20× | met |",
		"| echo | 0.50× | 0.38× | 0.75× | met | 0.10× | 0.80× | 2 of 2 |",
		"| echo | 0.50× | 0.38× | 0.75× | — | 0.10× | 0.80× | 2 of 2 |", // unlimited: no target
		"| echo | OCI + Nydus-Go zran | 3 / 1.0 | — | — | 2 / 2.0 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if err := r.chart(filepath.Join(t.TempDir(), "c.png")); err != nil {
		t.Fatal(err)
	}
}

func TestMedian(t *testing.T) {
	if got := median([]int64{5, 1, 3}); got != 3 {
		t.Fatalf("median %d", got)
	}
}

func TestParseBenchFS(t *testing.T) {
	out := "goos: linux\nBenchmarkFS/warm-2         \t       1\t5000000000 ns/op\t  1000 native-disk-MB/s\t 950.5 nydus-disk-MB/s\t 0.95 disk-ratio\nBenchmarkFS/walk-2 1 1 ns/op 47.4 native-ms 42.1 nydus-ms 0.89 slowdown\nPASS\n"
	got := parseBenchFS(out)
	if len(got) != 6 || got[1] != (fsFigure{"warm", "nydus-disk-MB/s", 950.5}) || got[5] != (fsFigure{"walk", "slowdown", 0.89}) {
		t.Fatalf("parsed %+v", got)
	}
}

func TestReadWorkloads(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "w.json")
		os.WriteFile(p, []byte(s), 0o644)
		return p
	}
	wls, err := readWorkloads(write(`[{"name": "web", "packages": ["nginx-light"], "argv": ["nginx", "-v"], "want": "nginx version"},
		{"name": "sh", "argv": ["/bin/sh", "-c", "echo hi"], "want": "hi"}]`))
	if err != nil {
		t.Fatal(err)
	}
	if len(wls) != 2 || wls[0].Image != "w-web" || wls[1].Image != "minbase" || wls[0].Packages[0] != "nginx-light" {
		t.Fatalf("parsed %+v", wls)
	}
	for in, want := range map[string]string{
		`[]`: "no workloads",
		`[{"name": "Web", "argv": ["x"], "want": "y"}]`:                                          `name "Web"`,
		`[{"name": "a", "argv": [], "want": "y"}]`:                                               "empty argv",
		`[{"name": "a", "argv": ["x"]}]`:                                                         "empty want",
		`[{"name": "a", "argv": ["x"], "want": "y", "packages": ["a b"]}]`:                       `"a b" is not a Debian package name`,
		`[{"name": "a", "argv": ["x"], "want": "y"}, {"name": "a", "argv": ["x"], "want": "y"}]`: "appears twice",
		`[{"name": "a", "argv": ["x"], "want": "y", "image": "z"}]`:                              "unknown field",
	} {
		if _, err := readWorkloads(write(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", in, err, want)
		}
	}
}
