#!/usr/bin/env bash
# Layer build benchmark (`make bench-build`).
#
# Builds a `debootstrap --variant=minbase bookworm` rootfs, tars it as a
# layer (~130 MB) and times, 3 runs each (median reported), interleaved:
#   - bin/nydus-image create -t tar-rafs (zstd, blake3, 1 MiB chunks), in
#     its plain form and in the form nydus-snapshotter's converter uses
#     (--blob-inline-meta --features blob-toc);
#   - zstd -3 -T0 on the same tar (the machine's compression limit);
#   - mkfs.erofs on the same tree, plain and chunked (--chunksize --blobdev);
# then the peak RSS and throughput of nydus-image on a synthesised ~1 GiB
# layer (the tar repeated under 8 top-level directories plus random data).
# It prints a markdown table and rewrites the "## Layer build" section of
# docs/benchmarks.md (other sections are kept).
#
# Environment:
#   BENCH_DIR      cache of the rootfs and layer tars (default /var/tmp/nydus-bench)
#   BENCH_OUT_DIR  where outputs are written (default: a fresh dir on /dev/shm)
#   BENCH_RUNS     runs per contender (default 3)
#   BENCH_PROFILE  1 (default) to add a CPU profile of one build, 0 to skip
#   BENCH_MIRROR   Debian mirror URI (default: read from apt's sources)
#   BENCH_DOC      markdown file to update (default docs/benchmarks.md)
#   BENCH_IDLE_WAIT, BENCH_REJECT_OTHERS, BENCH_DEADLINE: see below
# Needs root the first time (apt-get install, debootstrap).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BENCH_DIR=${BENCH_DIR:-/var/tmp/nydus-bench}
RUNS=${BENCH_RUNS:-3}
PROFILE=${BENCH_PROFILE:-1}
DOC=${BENCH_DOC:-$ROOT/docs/benchmarks.md}
GO=${GO:-go}
SUITE=bookworm
BIG_COPIES=8
BIG_RANDOM_MIB=128
# The machine may be shared (other sessions build and test on it): before
# each run wait up to IDLE_WAIT s for the CPUs to be idle, and retry (up to
# 2 times) a run during which other processes kept more than REJECT cores
# busy. Past DEADLINE s into the script, stop waiting and retrying so the
# whole benchmark stays within ~10 minutes.
IDLE_WAIT=${BENCH_IDLE_WAIT:-20}
REJECT=${BENCH_REJECT_OTHERS:-0.25}
DEADLINE=${BENCH_DEADLINE:-420}
HEADING='## Layer build (`make bench-build`)'

N=$ROOT/bin/nydus-image
ROOTFS=$BENCH_DIR/rootfs
LAYER=$BENCH_DIR/layer.tar
BIG=$BENCH_DIR/big.tar

START=$SECONDS
OUT=""          # output dir (removed on exit if we created it)
OUT_CREATED=0
HELPER=""
DEBOOTSTRAP_TARGET=""
BGPID=""

log() { printf '==> %s\n' "$*" >&2; }
die() {
	printf 'bench-build: error: %s\n' "$*" >&2
	exit 1
}

# unmount_under DIR: lazily unmount anything mounted at or below DIR (a
# failed debootstrap can leave proc/sys/dev mounts behind).
unmount_under() {
	local d m
	d=$(realpath -m "$1")
	command -v findmnt >/dev/null || return 0
	findmnt -rn -o TARGET 2>/dev/null | awk -v p="$d" '$0 == p || index($0, p "/") == 1' | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

# bg_run CMD...: run CMD in the background and wait for it, so that a
# signal interrupts the wait at once and cleanup can stop CMD.
bg_run() {
	local rc=0
	"$@" &
	BGPID=$!
	wait "$BGPID" || rc=$?
	BGPID=""
	return "$rc"
}

rm_tree() {
	[[ -e $1 ]] || return 0
	unmount_under "$1"
	rm -rf --one-file-system "$1"
}

cleanup() {
	local rc=$?
	trap - EXIT
	if [[ -n $BGPID ]]; then
		kill -TERM "$BGPID" 2>/dev/null || true
		wait "$BGPID" 2>/dev/null || true
	fi
	if [[ -n $DEBOOTSTRAP_TARGET ]]; then
		unmount_under "$DEBOOTSTRAP_TARGET"
	fi
	rm -f "$LAYER.tmp"
	if ((OUT_CREATED)) && [[ -n $OUT && -d $OUT ]]; then
		rm -rf "$OUT"
	fi
	if ((rc != 0)); then
		printf 'bench-build: FAILED (exit %d) after %ds\n' "$rc" $((SECONDS - START)) >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer, got '$RUNS'"
[[ -x $N ]] || die "$N is missing: run 'make bench-build' (it runs 'make build' first)"
command -v "$GO" >/dev/null || die "'$GO' not found: the Go toolchain is needed to build bench/build"

# --- tools ------------------------------------------------------------------
need=()
command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] || need+=(debootstrap)
command -v zstd >/dev/null || need+=(zstd)
command -v mkfs.erofs >/dev/null || need+=(erofs-utils)
[[ -x /usr/bin/time ]] || need+=(time)
if ((${#need[@]})); then
	[[ $(id -u) == 0 ]] || die "missing packages: ${need[*]}; rerun as root so they can be installed with apt-get"
	command -v apt-get >/dev/null || die "missing packages: ${need[*]}, and no apt-get to install them"
	log "installing ${need[*]} (apt-get update + install)"
	apt-get update -qq || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null ||
		die "apt-get install -y ${need[*]} failed"
fi
export PATH=$PATH:/usr/sbin:/sbin
for t in debootstrap zstd mkfs.erofs tar; do
	command -v "$t" >/dev/null || die "$t is still missing after installing packages"
done

mkdir -p "$BENCH_DIR"
if [[ -n ${BENCH_OUT_DIR:-} ]]; then
	OUT=$BENCH_OUT_DIR
	mkdir -p "$OUT"
	OUT_FS="$(df --output=fstype "$OUT" | tail -n1) ($OUT)"
elif [[ -d /dev/shm && -w /dev/shm ]] && (($(df -k --output=avail /dev/shm | tail -n1) > 3 * 1024 * 1024)); then
	OUT=$(mktemp -d /dev/shm/nydus-bench.XXXXXX)
	OUT_CREATED=1
	OUT_FS='tmpfs (/dev/shm)'
else
	OUT=$(mktemp -d "$BENCH_DIR/out.XXXXXX")
	OUT_CREATED=1
	OUT_FS="$(df --output=fstype "$OUT" | tail -n1) ($BENCH_DIR)"
fi

log "building the helper (bench/build)"
HELPER=$OUT/bench-helper
"$GO" build -o "$HELPER" ./bench/build || die "go build ./bench/build failed"

NPROC=$(nproc)
GOMAXPROCS_EFF=$("$HELPER" gomaxprocs)
KERNEL=$(uname -r)
CPU=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
MEM=$(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
log "machine: nproc $NPROC (GOMAXPROCS $GOMAXPROCS_EFF), ${CPU:-unknown CPU}, kernel $KERNEL, $MEM RAM"
log "work dir $BENCH_DIR, outputs on $OUT"

# --- rootfs and layer tar (cached) -------------------------------------------
if [[ -f $BENCH_DIR/rootfs.ok && -d $ROOTFS ]]; then
	log "reusing rootfs $ROOTFS (delete $BENCH_DIR to rebuild)"
else
	[[ $(id -u) == 0 ]] || die "debootstrap needs root"
	mirror=${BENCH_MIRROR:-}
	if [[ -z $mirror ]]; then
		mirror=$("$HELPER" mirror -suite "$SUITE" -component main) ||
			die "cannot find a Debian mirror for $SUITE in apt's sources; set BENCH_MIRROR"
	fi
	rm -f "$BENCH_DIR/rootfs.ok" "$LAYER" "$BIG" "$BENCH_DIR/big.ok"
	rm_tree "$ROOTFS"
	DEBOOTSTRAP_TARGET=$BENCH_DIR/rootfs.tmp
	rm_tree "$DEBOOTSTRAP_TARGET"
	log "debootstrap --variant=minbase $SUITE from $mirror (log: $BENCH_DIR/debootstrap.log)"
	t0=$SECONDS
	if ! bg_run debootstrap --variant=minbase "$SUITE" "$DEBOOTSTRAP_TARGET" "$mirror" >"$BENCH_DIR/debootstrap.log" 2>&1; then
		tail -n 20 "$BENCH_DIR/debootstrap.log" >&2
		die "debootstrap failed; see $BENCH_DIR/debootstrap.log"
	fi
	unmount_under "$DEBOOTSTRAP_TARGET"
	(cd "$DEBOOTSTRAP_TARGET" && rm -rf var/cache/apt/archives/*.deb var/lib/apt/lists/*_Packages var/lib/apt/lists/*Release*)
	mv "$DEBOOTSTRAP_TARGET" "$ROOTFS"
	DEBOOTSTRAP_TARGET=""
	touch "$BENCH_DIR/rootfs.ok"
	log "rootfs ready in $((SECONDS - t0))s"
fi

if [[ -f $LAYER && $LAYER -nt $BENCH_DIR/rootfs.ok ]]; then
	log "reusing $LAYER"
else
	log "tarring the rootfs into $LAYER"
	mapfile -t top < <(ls -A "$ROOTFS")
	((${#top[@]})) || die "$ROOTFS is empty"
	bg_run tar --numeric-owner --xattrs --acls -C "$ROOTFS" --exclude='dev/*' --exclude='proc/*' --exclude='sys/*' \
		-cf "$LAYER.tmp" "${top[@]}" || die "tar of $ROOTFS failed"
	mv "$LAYER.tmp" "$LAYER"
	rm -f "$BIG" "$BENCH_DIR/big.ok"
fi

BIG_SPEC="v1 copies=$BIG_COPIES random_mib=$BIG_RANDOM_MIB seed=1"
if [[ -f $BIG && $BIG -nt $LAYER && -f $BENCH_DIR/big.ok && "$(cat "$BENCH_DIR/big.ok")" == "$BIG_SPEC" ]]; then
	log "reusing $BIG"
else
	log "synthesising the ~1 GiB layer $BIG ($BIG_COPIES copies + $BIG_RANDOM_MIB MiB random)"
	rm -f "$BENCH_DIR/big.ok"
	bg_run "$HELPER" mkbig -in "$LAYER" -out "$BIG" -copies "$BIG_COPIES" -random-mib "$BIG_RANDOM_MIB" -seed 1 ||
		die "synthesising $BIG failed"
	echo "$BIG_SPEC" >"$BENCH_DIR/big.ok"
fi

LAYER_BYTES=$(stat -c %s "$LAYER")
BIG_BYTES=$(stat -c %s "$BIG")
LAYER_ENTRIES=$(tar -tf "$LAYER" | wc -l)
((LAYER_BYTES > 50000000)) || die "$LAYER is only $LAYER_BYTES bytes; expected ~130 MB (delete $BENCH_DIR to rebuild)"
log "layer: $LAYER_BYTES bytes, $LAYER_ENTRIES entries; 1 GiB layer: $BIG_BYTES bytes"

# Read every input once so all contenders find it in the page cache.
log "warming the page cache"
cat "$LAYER" "$BIG" >/dev/null
find "$ROOTFS" -xdev -type f -print0 | xargs -0 -r cat >/dev/null

# --- contenders ---------------------------------------------------------------
# Each command is run with bash -c (which execs it) with L (layer tar), B
# (1 GiB tar), R (rootfs), O (output dir) and N (nydus-image) exported;
# the same text, $N shown as bin/nydus-image, goes into the report.
export L=$LAYER B=$BIG R=$ROOTFS O=$OUT/o N
C_LABEL=() C_GROUP=() C_KIND=() C_CMD=() C_SIZE=() C_RSS=()
add() { # label group kind command sizes [rss-from]
	C_LABEL+=("$1") C_GROUP+=("$2") C_KIND+=("$3") C_CMD+=("$4") C_SIZE+=("$5") C_RSS+=("${6:-}")
}
add "nydus-image create -t tar-rafs" layer ours \
	'"$N" create -t tar-rafs -B "$O/a.boot" -b "$O/a.blob" "$L"' "$O/a.blob,$O/a.boot"
add "nydus-image create --blob-inline-meta --features blob-toc" layer ours \
	'"$N" create -t tar-rafs --blob-inline-meta --features blob-toc --fs-version 6 --whiteout-spec none --prefetch-policy fs -b "$O/c.blob" "$L" </dev/null' "$O/c.blob"
add "nydus-image create -t tar-rafs --batch-size 0x100000" layer ours \
	'"$N" create -t tar-rafs --batch-size 0x100000 -B "$O/d.boot" -b "$O/d.blob" "$L"' "$O/d.blob,$O/d.boot"
add "nydus-image create -t tar-rafs --batch-size 0x100000 --compression-level 1" layer ours \
	'"$N" create -t tar-rafs --batch-size 0x100000 --compression-level 1 -B "$O/e.boot" -b "$O/e.blob" "$L"' "$O/e.blob,$O/e.boot"
add "zstd -3 -T0" layer zstd \
	'zstd -3 -T0 -q -f "$L" -o "$O/layer.tar.zst"' "$O/layer.tar.zst"
add "mkfs.erofs" layer erofs \
	'mkfs.erofs --quiet "$O/erofs.img" "$R/"' "$O/erofs.img"
add "mkfs.erofs --chunksize=1048576 --blobdev" layer erofs \
	'mkfs.erofs --quiet --chunksize=1048576 --blobdev="$O/erofs.blob" "$O/erofs-chunked.img" "$R/"' "$O/erofs-chunked.img,$O/erofs.blob"
add "nydus-image create -t tar-rafs" big ours \
	'/usr/bin/time -v -o "$O/time-v.txt" "$N" create -t tar-rafs -B "$O/big.boot" -b "$O/big.blob" -J "$O/big.json" "$B"' \
	"$O/big.blob,$O/big.boot" "$O/time-v.txt"
add "zstd -3 -T0" big zstd \
	'zstd -3 -T0 -q -f "$B" -o "$O/big.tar.zst"' "$O/big.tar.zst"

RESULTS=$OUT/results.tsv
CMDS=$OUT/commands.tsv
: >"$RESULTS"
: >"$CMDS"
for k in "${!C_LABEL[@]}"; do
	shown=${C_CMD[$k]//\"/}
	shown=${shown//\$N/bin/nydus-image}
	printf '%s\t%s\n' "${C_LABEL[$k]}" "$shown" >>"$CMDS"
done

WAITED=0
DISCARDED=0
# measure K: one recorded run of contender K.
measure() {
	local k=$1 bytes attempt rc w
	local rss=() reject=() outs=()
	if [[ ${C_GROUP[$k]} == big ]]; then bytes=$BIG_BYTES; else bytes=$LAYER_BYTES; fi
	[[ -z ${C_RSS[$k]} ]] || rss=(-rss-from "${C_RSS[$k]}")
	for attempt in 1 2 3; do
		reject=()
		if ((SECONDS - START < DEADLINE)); then
			w=$("$HELPER" waitidle -max "$IDLE_WAIT") || die "waitidle failed"
			WAITED=$(awk -v a="$WAITED" -v b="$w" 'BEGIN {print a + b}')
			((attempt == 3)) || reject=(-reject-others "$REJECT")
		fi
		IFS=, read -ra outs <<<"${C_SIZE[$k]}"
		rm -f "${outs[@]}"
		rc=0
		bg_run "$HELPER" run -label "${C_LABEL[$k]}" -group "${C_GROUP[$k]}" -kind "${C_KIND[$k]}" \
			-input-bytes "$bytes" -results "$RESULTS" -size "${C_SIZE[$k]}" "${rss[@]}" "${reject[@]}" \
			-- bash -c "${C_CMD[$k]}" || rc=$?
		case $rc in
		0) return 0 ;;
		3) DISCARDED=$((DISCARDED + 1)) ;;
		*) die "contender '${C_LABEL[$k]}' (${C_GROUP[$k]}) failed (exit $rc)" ;;
		esac
	done
	die "unreachable: contender '${C_LABEL[$k]}' never recorded"
}

for ((i = 1; i <= RUNS; i++)); do
	log "round $i/$RUNS"
	rm -rf "$O"
	mkdir -p "$O"
	for k in "${!C_LABEL[@]}"; do
		measure "$k"
	done
done
log "waited ${WAITED}s in total for idle CPUs; discarded $DISCARDED contended runs"

# The figures are only worth something if the outputs are valid.
log "checking the last round's bootstraps"
"$N" check "$O/a.boot" >/dev/null || die "nydus-image check rejected the bootstrap built from $LAYER"
"$N" check "$O/big.boot" >/dev/null || die "nydus-image check rejected the bootstrap built from $BIG"

profile_args=()
if [[ $PROFILE == 1 ]]; then
	log "CPU profile of one in-process build of $LAYER"
	bg_run "$HELPER" profile -cpuprofile "$OUT/cpu.pprof" -o "$OUT/profile.blob" "$LAYER" || die "profile build failed"
	{
		"$GO" tool pprof -top -nodecount=25 "$HELPER" "$OUT/cpu.pprof" 2>/dev/null | sed '/^Build ID:/d; /^File:/d'
		echo
		"$GO" tool pprof -top -cum -nodecount=25 "$HELPER" "$OUT/cpu.pprof" 2>/dev/null | sed '1,/^ *flat/d' | sed '1i\      flat  flat%   sum%        cum   cum%  (sorted by cum)'
	} >"$OUT/pprof.txt" || die "go tool pprof failed"
	"$GO" tool pprof -top -cum -nodecount=1000 "$HELPER" "$OUT/cpu.pprof" >"$OUT/pprof-cum.txt" 2>/dev/null ||
		die "go tool pprof failed"
	profile_args=(-profile "$OUT/pprof.txt" -profile-cum "$OUT/pprof-cum.txt")
fi

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then commit+=" + uncommitted changes"; fi
zstd_v=$(zstd --version 2>&1 | grep -o 'v[0-9][0-9.]*' | head -n1 || true)
erofs_v=$(dpkg-query -W -f='${Version}' erofs-utils 2>/dev/null || true)

log "report"
"$HELPER" report -results "$RESULTS" -doc "$DOC" -heading "$HEADING" \
	-stats "$O/big.json" -commands "$CMDS" "${profile_args[@]}" \
	-kv command="make bench-build" \
	-kv workdir="$BENCH_DIR" \
	-kv outfs="$OUT_FS" \
	-kv date="$(date -u '+%Y-%m-%d %H:%M UTC')" \
	-kv commit="$commit" \
	-kv go="$("$GO" env GOVERSION)" \
	-kv nproc="$NPROC" \
	-kv gomaxprocs="$GOMAXPROCS_EFF" \
	-kv cpu="${CPU:-unknown CPU}" \
	-kv kernel="$KERNEL" \
	-kv mem="$MEM" \
	-kv zstd_version="zstd ${zstd_v:-?}" \
	-kv erofs_version="mkfs.erofs ${erofs_v:-?}" \
	-kv reject="$REJECT" \
	-kv contention="waited ${WAITED} s in total for idle CPUs and discarded $DISCARDED contended runs" \
	-kv layer_desc="\`debootstrap --variant=minbase $SUITE\`, cleaned, tarred with \`tar --numeric-owner --xattrs --acls\` (no \`./\` prefix, dev/proc/sys contents excluded): $LAYER_BYTES bytes, $LAYER_ENTRIES entries" \
	-kv big_desc="the layer tar repeated under copy0/ … copy$((BIG_COPIES - 1))/ plus $BIG_RANDOM_MIB MiB of random data in 8 MiB files (\`bench/build mkbig\`): $BIG_BYTES bytes" \
	-kv layer_short="layer ($((LAYER_BYTES / 1000000)) MB)" \
	-kv big_short="1 GiB layer ($((BIG_BYTES / 1000000)) MB)" ||
	die "report failed"

log "done in $((SECONDS - START))s; wrote the section '$HEADING' of ${DOC#"$ROOT"/}"
