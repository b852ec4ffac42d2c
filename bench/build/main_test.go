package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Fatalf("median = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Fatalf("median = %v", m)
	}
}

func TestContended(t *testing.T) {
	r := record{wall: 2, others: 1} // 0.5 cores
	for _, c := range []struct {
		reject float64
		want   bool
	}{{0, false}, {0.25, true}, {0.5, false}, {1, false}} {
		if got := contended(r, c.reject); got != c.want {
			t.Errorf("contended(0.5 cores, %v) = %v", c.reject, got)
		}
	}
}

// The rows keep the order of the first runs and the table row carries
// the medians, the runs and the ratios to the group's zstd row.
func TestRowsAndTable(t *testing.T) {
	rec := func(label, kind string, wall, cpu float64, rss, out int64) record {
		return record{group: "layer", kind: kind, label: label, inputBytes: 100e6, wall: wall, cpu: cpu, rssKiB: rss, outBytes: out, others: wall * 0.1}
	}
	rows, err := rowsOf([]record{
		rec("ours", "ours", 1, 1.8, 2048, 50e6), rec("zstd -3 -T0", "zstd", 0.5, 1, 1024, 40e6),
		rec("ours", "ours", 2, 3.6, 4096, 50e6), rec("zstd -3 -T0", "zstd", 0.5, 1, 1024, 40e6),
		rec("ours", "ours", 3, 5.4, 1024, 50e6), rec("zstd -3 -T0", "zstd", 0.5, 1, 1024, 40e6),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].label != "ours" || len(rows[0].walls) != 3 {
		t.Fatalf("rows %+v", rows)
	}
	got := tableRow(rows[0], ref(rows, "layer"), map[string]string{"layer_short": "layer (100 MB)"})
	want := "| layer (100 MB) | `ours` | 2.000 | 1.00 / 2.00 / 3.00 | 50.0 | 0.25× | 180% | 27.8 | 4 MiB | 50.0 MB | 1.250 | 0.10 |\n"
	if got != want {
		t.Fatalf("row\n%s\nwant\n%s", got, want)
	}
	if _, err := rowsOf(nil); err == nil {
		t.Fatal("rowsOf(nil): no error")
	}
	if s, label := cpuSpread(rows, nil); !rssOK(rows[0]) || s < 1.999 || s > 2.001 || label != "`ours` on the layer" {
		t.Fatalf("rssOK %v, spread %v %q", rssOK(rows[0]), s, label)
	}
}

// The commands the report lists are the script's, but for the big
// layer's nydus-image, which is no longer run under /usr/bin/time.
func TestShownCommands(t *testing.T) {
	cmds := shownCommands()
	want := map[int]string{
		0: "bin/nydus-image create -t tar-rafs -B $O/a.boot -b $O/a.blob $L",
		1: "bin/nydus-image create -t tar-rafs --blob-inline-meta --features blob-toc --fs-version 6 --whiteout-spec none --prefetch-policy fs -b $O/c.blob $L </dev/null",
		6: "mkfs.erofs --quiet --chunksize=1048576 --blobdev=$O/erofs.blob $O/erofs-chunked.img $R/",
		7: "bin/nydus-image create -t tar-rafs -B $O/big.boot -b $O/big.blob -J $O/big.json $B",
		8: "zstd -3 -T0 -q -f $B -o $O/big.tar.zst",
	}
	if len(cmds) != 9 {
		t.Fatalf("%d commands", len(cmds))
	}
	for i, w := range want {
		if cmds[i][1] != w {
			t.Errorf("command %d = %q, want %q", i, cmds[i][1], w)
		}
	}
	argv := contenders[6].argv(vars{"N": "/n", "L": "/l", "B": "/b", "R": "/r", "O": "/o"})
	if !slices.Equal(argv, []string{"mkfs.erofs", "--quiet", "--chunksize=1048576", "--blobdev=/o/erofs.blob", "/o/erofs-chunked.img", "/r/"}) {
		t.Fatalf("argv %q", argv)
	}
}

func TestFormatProfile(t *testing.T) {
	flat := "File: build\nBuild ID: abc\nType: cpu\nShowing nodes\n      flat  flat%   sum%        cum   cum%\n     1s 50% 50%  1s 50%  f\n"
	cum := "File: build\nType: cpu\n      flat  flat%   sum%        cum   cum%\n     0 0% 0%  2s 100%  main\n"
	want := "Type: cpu\nShowing nodes\n      flat  flat%   sum%        cum   cum%\n     1s 50% 50%  1s 50%  f\n\n" + cumHeader + "\n     0 0% 0%  2s 100%  main"
	if got := formatProfile(flat, cum); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	all := "      flat  flat%   sum%        cum   cum%\n  0.1s 1% 1%  1.5s 40.50% github.com/nydus-go/nydus/pkg/compress.Compress\n  0 0% 1%  0.2s 5.00% runtime.gcBgMarkWorker\n"
	if got, want := summariseProfile(all), "zstd compression of chunks 40.50%, garbage collector 5.00%"; got != want {
		t.Fatalf("summary %q, want %q", got, want)
	}
}

func TestParseConfig(t *testing.T) {
	env := map[string]string{"BENCH_RUNS": "5", "BENCH_PROFILE": "0", "BENCH_IDLE_WAIT": "2.5", "BENCH_DEADLINE": "60", "BENCH_DIR": "/x"}
	c, err := parseConfig(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.runs != 5 || c.profile || c.idleWait != 2500*time.Millisecond || c.deadline != time.Minute || c.benchDir != "/x" || c.reject != 0.25 || !strings.HasSuffix(c.doc, "docs/benchmarks.md") {
		t.Fatalf("config %+v", c)
	}
	if c, err = parseConfig([]string{"-runs", "1", "-profile"}, func(k string) string { return env[k] }); err != nil || c.runs != 1 || !c.profile {
		t.Fatalf("flags: %+v, %v", c, err)
	}
	env["BENCH_RUNS"] = "0"
	if _, err := parseConfig(nil, func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), "BENCH_RUNS") {
		t.Fatalf("BENCH_RUNS=0: %v", err)
	}
}

func TestSmallParts(t *testing.T) {
	if v := secondsText(27.0000001); v != "27" {
		t.Errorf("secondsText = %q", v)
	}
	if v := secondsText(0.1 + 0.2); v != "0.3" {
		t.Errorf("secondsText = %q", v)
	}
	if v := lastLines("a\nb\nc\n", 2); v != "b\nc" {
		t.Errorf("lastLines = %q", v)
	}
}
