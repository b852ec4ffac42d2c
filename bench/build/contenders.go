package main

import (
	"os"
	"path/filepath"
	"strings"
)

// contender is one command the benchmark times. Its arguments and
// outputs name the inputs and outputs as $N (bin/nydus-image), $L (layer
// tar), $B (big layer tar), $R (rootfs tree) and $O (output dir); the
// report lists the commands in that form.
type contender struct {
	label   string
	group   string // input: "layer" or "big"
	kind    string // "ours", "zstd" (the group's reference) or "erofs"
	args    []string
	outputs []string // whose sizes are summed into the output size
	// stdinNull shows the command with "</dev/null", the form
	// nydus-snapshotter's converter runs; every contender reads
	// /dev/null.
	stdinNull bool
}

// contenders are timed in this order in every round.
var contenders = []contender{
	{label: "nydus-image create -t tar-rafs", group: "layer", kind: "ours",
		args:    []string{"$N", "create", "-t", "tar-rafs", "-B", "$O/a.boot", "-b", "$O/a.blob", "$L"},
		outputs: []string{"$O/a.blob", "$O/a.boot"}},
	{label: "nydus-image create --blob-inline-meta --features blob-toc", group: "layer", kind: "ours",
		args:    []string{"$N", "create", "-t", "tar-rafs", "--blob-inline-meta", "--features", "blob-toc", "--fs-version", "6", "--whiteout-spec", "none", "--prefetch-policy", "fs", "-b", "$O/c.blob", "$L"},
		outputs: []string{"$O/c.blob"}, stdinNull: true},
	{label: "nydus-image create -t tar-rafs --batch-size 0x100000", group: "layer", kind: "ours",
		args:    []string{"$N", "create", "-t", "tar-rafs", "--batch-size", "0x100000", "-B", "$O/d.boot", "-b", "$O/d.blob", "$L"},
		outputs: []string{"$O/d.blob", "$O/d.boot"}},
	{label: "nydus-image create -t tar-rafs --batch-size 0x100000 --compression-level 1", group: "layer", kind: "ours",
		args:    []string{"$N", "create", "-t", "tar-rafs", "--batch-size", "0x100000", "--compression-level", "1", "-B", "$O/e.boot", "-b", "$O/e.blob", "$L"},
		outputs: []string{"$O/e.blob", "$O/e.boot"}},
	{label: "zstd -3 -T0", group: "layer", kind: "zstd",
		args:    []string{"zstd", "-3", "-T0", "-q", "-f", "$L", "-o", "$O/layer.tar.zst"},
		outputs: []string{"$O/layer.tar.zst"}},
	{label: "mkfs.erofs", group: "layer", kind: "erofs",
		args:    []string{"mkfs.erofs", "--quiet", "$O/erofs.img", "$R/"},
		outputs: []string{"$O/erofs.img"}},
	{label: "mkfs.erofs --chunksize=1048576 --blobdev", group: "layer", kind: "erofs",
		args:    []string{"mkfs.erofs", "--quiet", "--chunksize=1048576", "--blobdev=$O/erofs.blob", "$O/erofs-chunked.img", "$R/"},
		outputs: []string{"$O/erofs-chunked.img", "$O/erofs.blob"}},
	{label: "nydus-image create -t tar-rafs", group: "big", kind: "ours",
		args:    []string{"$N", "create", "-t", "tar-rafs", "-B", "$O/big.boot", "-b", "$O/big.blob", "-J", bigStats, "$B"},
		outputs: []string{"$O/big.blob", "$O/big.boot"}},
	{label: "zstd -3 -T0", group: "big", kind: "zstd",
		args:    []string{"zstd", "-3", "-T0", "-q", "-f", "$B", "-o", "$O/big.tar.zst"},
		outputs: []string{"$O/big.tar.zst"}},
}

// Outputs of the last round the benchmark reads after the runs.
const (
	layerBoot = "$O/a.boot"
	bigBoot   = "$O/big.boot"
	bigStats  = "$O/big.json"
)

// vars are the values of $N, $L, $B, $R and $O.
type vars map[string]string

// expand replaces the variables in s.
func (v vars) expand(s string) string {
	return os.Expand(s, func(k string) string {
		if x, ok := v[k]; ok {
			return x
		}
		return "$" + k
	})
}

// argv is the contender's command line.
func (c contender) argv(v vars) []string {
	out := make([]string, len(c.args))
	for i, a := range c.args {
		out[i] = v.expand(a)
	}
	return out
}

// shown is the command as the report lists it: $N as bin/nydus-image,
// the other variables as they are.
func (c contender) shown() string {
	s := vars{"N": filepath.Join("bin", "nydus-image")}.expand(strings.Join(c.args, " "))
	if c.stdinNull {
		s += " </dev/null"
	}
	return s
}
