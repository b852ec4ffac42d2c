#!/usr/bin/env bash
# Image conversion benchmark (`make bench-convert`).
#
# Starts a temporary docker-registry on 127.0.0.1 and a temporary
# containerd (config, root, state and sockets in a temporary directory),
# builds Debian images from debootstrap rootfs trees (cached), pushes them
# as OCI gzip images and measures, all in this one invocation:
#
#   1. Conversion speed and size on a 2-layer image (bookworm minbase +
#      `apt-get install curl ca-certificates`), BENCH_RUNS rounds,
#      interleaved, median reported:
#        - bin/nydusify convert, registry -> registry (default options);
#        - bin/nydusify convert --independent;
#        - eStargz with Debian's ctr-remote: `ctr content fetch` (the pull,
#          timed separately), `ctr-remote image convert --estargz --oci`
#          (on containerd's content store), `ctr image push`;
#        - for reference (one run), `ctr-remote image convert --zstdchunked
#          --oci`.
#   2. Dedup across an image family (bookworm minbase, + curl, two more
#      independent bookworm minbase debootstraps, trixie minbase, + curl):
#      OCI gzip layer bytes vs unique Nydus blob bytes (distinct digests
#      in the converted manifests, read back from the registry) when
#      converting with --chunk-dict, with nydusify's defaults and no dict,
#      and upstream-style with --independent.
#
# It prints markdown tables and rewrites the "## Conversion" section of
# docs/benchmarks.md (other sections are kept). Everything it starts is
# stopped by PID on exit, and everything it mounts or creates outside the
# cache is removed.
#
# Environment:
#   BENCH_DIR        cache of rootfs trees and the OCI layout (default
#                    /var/tmp/nydus-bench; the bookworm rootfs is shared
#                    with `make bench-build`)
#   BENCH_RUNS       rounds of the speed measurement (default 3)
#   BENCH_ZSTDCHUNKED 1 (default) to add the zstd:chunked reference row
#                    (one run)
#   BENCH_MIRROR     Debian mirror URI (default: read from apt's sources)
#   BENCH_DOC        markdown file to update (default docs/benchmarks.md)
#   BENCH_TMP        parent of the temporary directory (default /dev/shm
#                    if it has room, else BENCH_DIR)
#   BENCH_IDLE_WAIT, BENCH_WAIT_BUDGET, BENCH_REJECT_OTHERS, BENCH_DEADLINE:
#                    see below
# Needs root (apt-get, debootstrap, chroot, containerd).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BENCH_DIR=${BENCH_DIR:-/var/tmp/nydus-bench}
CACHE=$BENCH_DIR/convert
RUNS=${BENCH_RUNS:-3}
ZSTDCHUNKED=${BENCH_ZSTDCHUNKED:-1}
DOC=${BENCH_DOC:-$ROOT/docs/benchmarks.md}
GO=${GO:-go}
# The machine may be shared: before each timed run wait up to IDLE_WAIT s
# (WAIT_BUDGET s in all) for the CPUs to be idle, and redo (up to 2 times)
# a run during which other processes kept more than REJECT cores busy.
# Past DEADLINE s into the script, stop waiting and redoing so the whole
# benchmark stays within ~10 minutes.
IDLE_WAIT=${BENCH_IDLE_WAIT:-10}
WAIT_BUDGET=${BENCH_WAIT_BUDGET:-60}
REJECT=${BENCH_REJECT_OTHERS:-0.3}
DEADLINE=${BENCH_DEADLINE:-420}
HEADING='## Conversion (`make bench-convert`)'
IMAGE_PATH_ENV='PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

NYDUSIFY=$ROOT/bin/nydusify
NYDUS_IMAGE=$ROOT/bin/nydus-image
LAYOUT=$CACHE/layout

START=$SECONDS
TMP=""
HELPER=""
BGPID=""
REG_PID=""
CTRD_PID=""
declare -A DEB_PIDS=() DEB_T0=() RFS=() RFS_OK=()
RUN_CONTAINERD_EXISTED=1
CGROUP_BEFORE=""

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'bench-convert: warning: %s\n' "$*" >&2; }
die() {
	printf 'bench-convert: error: %s\n' "$*" >&2
	exit 1
}

# unmount_under DIR: lazily unmount anything mounted at or below DIR.
unmount_under() {
	local d m
	d=$(realpath -m "$1")
	command -v findmnt >/dev/null || return 0
	findmnt -rn -o TARGET 2>/dev/null | awk -v p="$d" '$0 == p || index($0, p "/") == 1' | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

rm_tree() {
	[[ -e $1 ]] || return 0
	unmount_under "$1"
	rm -rf --one-file-system "$1"
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

# stop_pid PID NAME: SIGTERM, wait up to 15 s, then SIGKILL; reap it.
stop_pid() {
	local pid=$1 name=$2 i
	[[ -n $pid ]] || return 0
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 150; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			warn "$name (pid $pid) ignored SIGTERM; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$? d
	trap - EXIT
	set +e
	if [[ -n $BGPID ]]; then
		kill -TERM "$BGPID" 2>/dev/null
		wait "$BGPID" 2>/dev/null
	fi
	stop_pid "$CTRD_PID" containerd
	stop_pid "$REG_PID" docker-registry
	# Interrupted debootstraps: stop their process groups, remove the trees.
	for d in "${!DEB_PIDS[@]}"; do
		kill -TERM -- "-${DEB_PIDS[$d]}" 2>/dev/null || kill -TERM "${DEB_PIDS[$d]}" 2>/dev/null
		wait "${DEB_PIDS[$d]}" 2>/dev/null
		rm_tree "${RFS[$d]}.tmp"
	done
	if [[ -n $TMP && -d $TMP ]]; then
		unmount_under "$TMP"
		rm -rf --one-file-system "$TMP"
	fi
	# containerd 1.6 may use /run/containerd whatever its config says;
	# remove it only if it appeared during the run and no other
	# containerd (another user's) is running.
	if ((!RUN_CONTAINERD_EXISTED)) && [[ -e /run/containerd ]]; then
		if pgrep -x containerd >/dev/null 2>&1; then
			warn "/run/containerd appeared during the run but another containerd is running; left in place"
		else
			unmount_under /run/containerd
			rm -rf --one-file-system /run/containerd
		fi
	fi
	for d in /sys/fs/cgroup/*/default; do
		[[ -d $d ]] || continue
		grep -qxF "$d" <<<"$CGROUP_BEFORE" || rmdir "$d" 2>/dev/null
	done
	if ((rc != 0)); then
		printf 'bench-convert: FAILED (exit %d) after %ds\n' "$rc" $((SECONDS - START)) >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer, got '$RUNS'"
[[ $(id -u) == 0 ]] || die "run as root: it installs packages, runs debootstrap, chroot and containerd"
[[ -x $NYDUSIFY && -x $NYDUS_IMAGE ]] || die "bin/nydusify or bin/nydus-image is missing: run 'make bench-convert' (it runs 'make build' first)"
command -v "$GO" >/dev/null || die "'$GO' not found: the Go toolchain is needed to build bench/convert"

# --- tools ------------------------------------------------------------------
export PATH=$PATH:/usr/sbin:/sbin
need=()
for pair in docker-registry:docker-registry containerd:containerd ctr:containerd runc:runc \
	ctr-remote:stargz-snapshotter debootstrap:debootstrap umoci:umoci skopeo:skopeo curl:curl; do
	command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if ((${#need[@]})); then
	mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
	command -v apt-get >/dev/null || die "missing packages: ${need[*]}, and no apt-get to install them"
	log "installing ${need[*]} (apt-get update + install)"
	apt-get update -qq || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null ||
		die "apt-get install -y ${need[*]} failed"
fi
for t in docker-registry containerd ctr runc ctr-remote debootstrap umoci skopeo curl tar chroot findmnt; do
	command -v "$t" >/dev/null || die "$t is still missing after installing packages"
done

[[ -e /run/containerd ]] || RUN_CONTAINERD_EXISTED=0
CGROUP_BEFORE=$(ls -d /sys/fs/cgroup/*/default 2>/dev/null || true)

mkdir -p "$CACHE"
if [[ -n ${BENCH_TMP:-} ]]; then
	mkdir -p "$BENCH_TMP"
	TMP=$(mktemp -d "$BENCH_TMP/nydus-bench-convert.XXXXXX")
elif [[ -d /dev/shm && -w /dev/shm ]] && (($(df -k --output=avail /dev/shm | tail -n1) > 4 * 1024 * 1024)); then
	TMP=$(mktemp -d /dev/shm/nydus-bench-convert.XXXXXX)
else
	TMP=$(mktemp -d "$BENCH_DIR/tmp-convert.XXXXXX")
fi
TMP_FS="$(df --output=fstype "$TMP" | tail -n1) ($(dirname "$TMP"))"
mkdir -p "$TMP/logs" "$TMP/json" "$TMP/wd"

log "building the helper (bench/convert)"
HELPER=$TMP/helper
"$GO" build -o "$HELPER" ./bench/convert || die "go build ./bench/convert failed"

NPROC=$(nproc)
KERNEL=$(uname -r)
CPU=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
MEM=$(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
log "machine: nproc $NPROC, ${CPU:-unknown CPU}, kernel $KERNEL, $MEM RAM; cache $BENCH_DIR, temporary files in $TMP"

# --- rootfs trees (cached) ----------------------------------------------------
BUILT=()
NOTES=()
MIRROR=${BENCH_MIRROR:-}
# ensure_mirror: set MIRROR from apt's sources (bookworm, main); the same
# mirror serves trixie.
ensure_mirror() {
	[[ -z $MIRROR ]] || return 0
	MIRROR=$("$HELPER" mirror -suite bookworm -component main) ||
		die "cannot find a Debian mirror for bookworm in apt's sources; set BENCH_MIRROR"
}

# Image name -> rootfs tree and its marker. The first bookworm tree is the
# one `make bench-build` caches (same path, same marker, same recipe).
RFS=(
	[bookworm-min]=$BENCH_DIR/rootfs
	[bookworm-min-2]=$CACHE/rootfs-bookworm-2
	[bookworm-min-3]=$CACHE/rootfs-bookworm-3
	[trixie-min]=$CACHE/rootfs-trixie
)
RFS_OK=(
	[bookworm-min]=$BENCH_DIR/rootfs.ok
	[bookworm-min-2]=$CACHE/rootfs-bookworm-2.ok
	[bookworm-min-3]=$CACHE/rootfs-bookworm-3.ok
	[trixie-min]=$CACHE/rootfs-trixie.ok
)

# deb_start NAME SUITE [SCRIPT]: start `debootstrap --variant=minbase`
# into RFS[NAME].tmp in the background, in its own process group.
deb_start() {
	local name=$1 suite=$2 script=${3:-} dir=${RFS[$1]}
	ensure_mirror
	rm -f "${RFS_OK[$name]}"
	rm_tree "$dir"
	rm_tree "$dir.tmp"
	log "debootstrap --variant=minbase $suite $dir${script:+ (script $script)} (log: $CACHE/debootstrap-$name.log)"
	# shellcheck disable=SC2086
	setsid debootstrap --variant=minbase "$suite" "$dir.tmp" "$MIRROR" $script >"$CACHE/debootstrap-$name.log" 2>&1 &
	DEB_PIDS[$name]=$!
	DEB_T0[$name]=$SECONDS
}

# deb_finish NAME: wait for its debootstrap, clean the tree as a slim
# image would be (no .debs, no apt lists), move it in place, touch the
# marker. Returns 1 if debootstrap failed.
deb_finish() {
	local name=$1 dir=${RFS[$1]} rc=0
	wait "${DEB_PIDS[$name]}" || rc=$?
	unset "DEB_PIDS[$name]"
	unmount_under "$dir.tmp"
	if ((rc != 0)); then
		tail -n 5 "$CACHE/debootstrap-$name.log" >&2
		rm_tree "$dir.tmp"
		return 1
	fi
	(cd "$dir.tmp" && rm -rf var/cache/apt/archives/*.deb var/lib/apt/lists/*_Packages var/lib/apt/lists/*Release*)
	mv "$dir.tmp" "$dir"
	touch "${RFS_OK[$name]}"
	BUILT+=("debootstrap of $name ($((SECONDS - ${DEB_T0[$name]})) s)")
	log "rootfs $dir ready in $((SECONDS - ${DEB_T0[$name]}))s"
}

# The missing trees are bootstrapped in parallel (the machine has 2 cores
# and debootstrap waits on the network and on dpkg much of the time).
have_rootfs() { [[ -f ${RFS_OK[$1]} && -d ${RFS[$1]} ]]; }
TRIXIE=1
TRIXIE_HOW="\`debootstrap --variant=minbase trixie\`"
for name in bookworm-min bookworm-min-2 bookworm-min-3 trixie-min; do
	if have_rootfs "$name"; then
		log "reusing rootfs ${RFS[$name]}"
	elif [[ $name == trixie-min ]]; then
		deb_start "$name" trixie
	else
		deb_start "$name" bookworm
	fi
done
for name in bookworm-min bookworm-min-2 bookworm-min-3; do
	[[ -z ${DEB_PIDS[$name]:-} ]] || deb_finish "$name" || die "debootstrap bookworm into ${RFS[$name]} failed"
done
if [[ -n ${DEB_PIDS[trixie-min]:-} ]]; then
	if deb_finish trixie-min; then
		echo "$TRIXIE_HOW" >"$CACHE/rootfs-trixie.how"
	elif [[ -f /usr/share/debootstrap/scripts/sid ]] && warn "retrying trixie with the sid script" &&
		deb_start trixie-min trixie /usr/share/debootstrap/scripts/sid && deb_finish trixie-min; then
		TRIXIE_HOW="\`debootstrap --variant=minbase trixie <dir> <mirror> /usr/share/debootstrap/scripts/sid\` (plain \`debootstrap trixie\` failed with this debootstrap)"
		echo "$TRIXIE_HOW" >"$CACHE/rootfs-trixie.how"
	else
		TRIXIE=0
		warn "debootstrap trixie failed, also with the sid script: the family is measured without the trixie images"
		NOTES+=("debootstrap of trixie failed on this machine (also with the sid script), so the family has no trixie images; see $CACHE/debootstrap-trixie-min.log.")
	fi
elif [[ -f $CACHE/rootfs-trixie.how ]]; then
	TRIXIE_HOW=$(cat "$CACHE/rootfs-trixie.how")
fi

# --- OCI images (cached in an OCI layout) --------------------------------------
layout_has() { umoci ls --layout "$LAYOUT" 2>/dev/null | grep -qxF "$1"; }

if [[ ! -f $LAYOUT/index.json ]]; then
	rm -rf "$LAYOUT"
	rm -f "$CACHE"/img-*.ok
	umoci init --layout "$LAYOUT" || die "umoci init failed"
fi

# build_min NAME: one layer, the rootfs tarred with no ./ prefix and the
# contents of dev, proc and sys left out.
build_min() {
	local name=$1 rfs=${RFS[$1]} rok=${RFS_OK[$1]} ok=$CACHE/img-$1.ok tarf top t0
	if [[ -f $ok && $ok -nt $rok ]] && layout_has "$name"; then
		log "reusing OCI image $name from $LAYOUT"
		return 0
	fi
	t0=$SECONDS
	log "building OCI image $name from $rfs"
	rm -f "$ok"
	tarf=$TMP/$name.tar
	mapfile -t top < <(ls -A "$rfs")
	((${#top[@]})) || die "$rfs is empty"
	bg_run tar --numeric-owner --xattrs --acls -C "$rfs" --exclude='dev/*' --exclude='proc/*' --exclude='sys/*' \
		-cf "$tarf" "${top[@]}" || die "tar of $rfs failed"
	umoci rm --image "$LAYOUT:$name" >/dev/null 2>&1 || true
	umoci new --image "$LAYOUT:$name" &&
		umoci raw add-layer --image "$LAYOUT:$name" "$tarf" &&
		umoci config --image "$LAYOUT:$name" --config.cmd /bin/bash --config.env "$IMAGE_PATH_ENV" ||
		die "umoci could not build $name"
	rm -f "$tarf"
	touch "$ok"
	BUILT+=("image $name ($((SECONDS - t0)) s)")
}

# build_curl NAME BASE: BASE + a layer made by `apt-get install curl
# ca-certificates` in a chroot of BASE, diffed by `umoci repack`.
build_curl() {
	local name=$1 base=$2 ok=$CACHE/img-$1.ok bok=$CACHE/img-$2.ok b r t0 had_resolv=0
	if [[ -f $ok && $ok -nt $bok ]] && layout_has "$name"; then
		log "reusing OCI image $name from $LAYOUT"
		return 0
	fi
	t0=$SECONDS
	log "building OCI image $name: $base + apt-get install curl ca-certificates"
	rm -f "$ok"
	b=$TMP/bundle-$name
	r=$b/rootfs
	bg_run umoci unpack --image "$LAYOUT:$base" "$b" >/dev/null || die "umoci unpack $base failed"
	if [[ -e $r/etc/resolv.conf || -L $r/etc/resolv.conf ]]; then
		had_resolv=1
		cp -a "$r/etc/resolv.conf" "$TMP/resolv.conf.saved"
	fi
	rm -f "$r/etc/resolv.conf"
	cat /etc/resolv.conf >"$r/etc/resolv.conf"
	mount -t proc proc "$r/proc"
	mount --rbind /dev "$r/dev"
	mount --make-rslave "$r/dev"
	if ! bg_run chroot "$r" /bin/sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl ca-certificates && apt-get clean && rm -rf /var/lib/apt/lists/*' \
		>"$CACHE/apt-$name.log" 2>&1; then
		tail -n 5 "$CACHE/apt-$name.log" >&2
		die "apt-get install in the $base chroot failed (log: $CACHE/apt-$name.log)"
	fi
	umount -R "$r/dev" || umount -l "$r/dev"
	umount "$r/proc" || umount -l "$r/proc"
	rm -f "$r/etc/resolv.conf"
	((!had_resolv)) || cp -a "$TMP/resolv.conf.saved" "$r/etc/resolv.conf"
	chroot "$r" curl --version >/dev/null || die "curl does not run in the $name tree"
	umoci rm --image "$LAYOUT:$name" >/dev/null 2>&1 || true
	bg_run umoci repack --image "$LAYOUT:$name" "$b" || die "umoci repack $name failed"
	rm_tree "$b"
	touch "$ok"
	BUILT+=("image $name ($((SECONDS - t0)) s)")
}

FAMILY=(bookworm-min bookworm-curl bookworm-min-2 bookworm-min-3)
((!TRIXIE)) || FAMILY+=(trixie-min trixie-curl)
build_min bookworm-min
build_curl bookworm-curl bookworm-min
build_min bookworm-min-2
build_min bookworm-min-3
if ((TRIXIE)); then
	build_min trixie-min
	build_curl trixie-curl trixie-min
fi
if ((${#BUILT[@]})); then
	umoci gc --layout "$LAYOUT" || warn "umoci gc failed"
fi

# --- temporary registry and containerd ------------------------------------------
REG=""
start_registry() {
	local attempt port i
	mkdir -p "$TMP/registry/data"
	for attempt in 1 2 3 4 5; do
		port=$("$HELPER" freeport) || die "no free port"
		cat >"$TMP/registry/config.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $TMP/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
		docker-registry serve "$TMP/registry/config.yml" >"$TMP/logs/registry.log" 2>&1 &
		REG_PID=$!
		for ((i = 0; i < 100; i++)); do
			kill -0 "$REG_PID" 2>/dev/null || break
			if grep -q "listening on 127.0.0.1:$port" "$TMP/logs/registry.log" &&
				[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v2/") == 200 ]]; then
				REG=127.0.0.1:$port
				log "docker-registry pid $REG_PID on $REG (data in $TMP/registry/data)"
				return 0
			fi
			sleep 0.1
		done
		tail -n 3 "$TMP/logs/registry.log" >&2
		stop_pid "$REG_PID" docker-registry
		REG_PID=""
		warn "docker-registry did not come up on port $port (attempt $attempt)"
	done
	die "could not start docker-registry"
}

CSOCK=$TMP/containerd/containerd.sock
start_containerd() {
	local c=$TMP/containerd i
	mkdir -p "$c"
	cat >"$c/config.toml" <<EOF
version = 2
root = "$c/root"
state = "$c/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$c/containerd.sock"
[ttrpc]
  address = "$c/containerd.sock.ttrpc"
[debug]
  address = "$c/debug.sock"
  level = "info"
[metrics]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$c/opt"
EOF
	containerd --config "$c/config.toml" >"$TMP/logs/containerd.log" 2>&1 &
	CTRD_PID=$!
	for ((i = 0; i < 100; i++)); do
		kill -0 "$CTRD_PID" 2>/dev/null || break
		if [[ -S $CSOCK ]] && ctr -a "$CSOCK" version >/dev/null 2>&1; then
			log "containerd pid $CTRD_PID on $CSOCK"
			return 0
		fi
		sleep 0.1
	done
	tail -n 5 "$TMP/logs/containerd.log" >&2
	die "containerd did not start (log: $TMP/logs/containerd.log)"
}

start_registry
start_containerd
CTR="ctr -a $CSOCK"
CR="ctr-remote -a $CSOCK"

log "pushing ${#FAMILY[@]} OCI images to $REG with skopeo"
for name in "${FAMILY[@]}"; do
	skopeo copy -q --dest-tls-verify=false "oci:$LAYOUT:$name" "docker://$REG/bench/$name:oci" >"$TMP/logs/skopeo-$name.log" 2>&1 ||
		{ cat "$TMP/logs/skopeo-$name.log" >&2; die "skopeo copy of $name failed"; }
done
"$HELPER" layers "$REG/bench/bookworm-curl:oci" >"$TMP/oci-layers.tsv" || die "cannot read back bookworm-curl"
[[ $(wc -l <"$TMP/oci-layers.tsv") == 2 ]] || die "bookworm-curl should have 2 layers: $(cat "$TMP/oci-layers.tsv")"

# --- timed runs ---------------------------------------------------------------------
RESULTS=$TMP/results.tsv
PLAN=$TMP/plan.tsv
: >"$RESULTS"
: >"$PLAN"
WAITED=0
DISCARDED=0
export NYDUSIFY REG TMP CSOCK
plan() { printf '%s\n' "$(IFS=$'\t'; echo "$*")" >>"$PLAN"; }

# measure LABEL ROUND PREP CMD: one recorded run of CMD (a bash -c string
# that may use $A, the attempt number); PREP (a bash -c string, untimed)
# runs before every attempt.
measure() {
	local label=$1 round=$2 prep=$3 cmd=$4 attempt rc w maxw reject
	for attempt in 1 2 3; do
		reject=()
		export A=$attempt
		[[ -z $prep ]] || bash -c "$prep" >>"$TMP/logs/prep.log" 2>&1 || die "preparing '$label' failed: $prep"
		if ((SECONDS - START < DEADLINE)); then
			maxw=$(awk -v w="$WAITED" -v b="$WAIT_BUDGET" -v m="$IDLE_WAIT" 'BEGIN {r = b - w; if (r > m) r = m; if (r < 0) r = 0; print r}')
			w=$("$HELPER" waitidle -max "$maxw") || die "waitidle failed"
			WAITED=$(awk -v a="$WAITED" -v b="$w" 'BEGIN {print a + b}')
			((attempt == 3)) || reject=(-reject-others "$REJECT")
		fi
		rc=0
		bg_run "$HELPER" run -label "$label" -round "$round" -results "$RESULTS" -services "$REG_PID,$CTRD_PID" \
			"${reject[@]}" -- bash -c "$cmd" || rc=$?
		case $rc in
		0) return 0 ;;
		3) DISCARDED=$((DISCARDED + 1)) ;;
		*)
			tail -n 15 "$TMP/logs/last.log" >&2 2>/dev/null || true
			die "'$label' (round $round) failed (exit $rc): $cmd"
			;;
		esac
	done
}

SRC=$REG/bench/bookworm-curl:oci
export SRC
# The commands, as run (stdout and stderr to $TMP/logs/last.log).
C_NYDUS='"$NYDUSIFY" convert --source "$SRC" --target "$REG/speed-nydus/r$R-a$A:nydus" --plain-http --work-dir "$TMP/wd/n$R-$A" --output-json "$TMP/json/speed-nydus-r$R.json" >"$TMP/logs/last.log" 2>&1'
C_NYDUS_I='"$NYDUSIFY" convert --source "$SRC" --target "$REG/speed-nydus-independent/r$R-a$A:nydus" --plain-http --independent --work-dir "$TMP/wd/i$R-$A" --output-json "$TMP/json/speed-nydus-independent-r$R.json" >"$TMP/logs/last.log" 2>&1'
C_FETCH='ctr -a "$CSOCK" content fetch --plain-http "$SRC" >"$TMP/logs/last.log" 2>&1'
C_CONVERT='ctr-remote -a "$CSOCK" image convert --estargz --oci "$SRC" "$REG/speed-estargz/r$R:esgz" >"$TMP/logs/last.log" 2>&1'
C_PUSH='ctr -a "$CSOCK" image push --plain-http "$REG/speed-estargz/r$R-a$A:esgz" "$REG/speed-estargz/r$R:esgz" >"$TMP/logs/last.log" 2>&1'
C_ZSTD='ctr-remote -a "$CSOCK" image convert --zstdchunked --oci "$SRC" "$REG/speed-zstdchunked/r$R:zstd" >"$TMP/logs/last.log" 2>&1'
P_CLEAN='ctr -a "$CSOCK" image ls -q | xargs -r ctr -a "$CSOCK" image rm --sync >/dev/null'
P_RM_DST='ctr -a "$CSOCK" image rm --sync "$REG/speed-estargz/r$R:esgz" >/dev/null 2>&1 || true'
P_RM_ZSTD='ctr -a "$CSOCK" image rm --sync "$REG/speed-zstdchunked/r$R:zstd" >/dev/null 2>&1 || true'

for ((R = 1; R <= RUNS; R++)); do
	export R
	log "speed round $R/$RUNS"
	measure speed/nydus "$R" "" "$C_NYDUS"
	measure speed/nydus-independent "$R" "" "$C_NYDUS_I"
	measure speed/estargz-fetch "$R" "$P_CLEAN" "$C_FETCH"
	measure speed/estargz-convert "$R" "$P_RM_DST" "$C_CONVERT"
	measure speed/estargz-push "$R" "" "$C_PUSH"
	# One run only: it is a reference point, and as slow as the eStargz one.
	if [[ $ZSTDCHUNKED == 1 ]] && ((R == 1)); then
		measure speed/zstdchunked-convert "$R" "$P_RM_ZSTD" "$C_ZSTD"
		ctr -a "$CSOCK" image push --plain-http "$REG/speed-zstdchunked/r1:zstd" >"$TMP/logs/zstd-push.log" 2>&1 ||
			die "pushing the zstd:chunked image failed"
	fi
	bash -c "$P_CLEAN" || die "ctr image rm failed"
	left=$(ctr -a "$CSOCK" content ls -q | wc -l)
	((left == 0)) || warn "containerd still holds $left blobs after removing its images"
done
# The report reads sizes from the last recorded attempt of round 1.
last_attempt() { # REPO: the tag of round 1's last attempt
	local a
	for a in 3 2 1; do
		if "$HELPER" layers "$REG/$1/r1-a$a:$2" >/dev/null 2>&1; then
			printf '%s\n' "$REG/$1/r1-a$a:$2"
			return 0
		fi
	done
	die "no $1 image for round 1 in the registry"
}
plan image speed/oci "$SRC"
plan image speed/nydus "$(last_attempt speed-nydus nydus)"
plan image speed/nydus-independent "$(last_attempt speed-nydus-independent nydus)"
plan image speed/estargz "$(last_attempt speed-estargz esgz)"
[[ $ZSTDCHUNKED != 1 ]] || plan image speed/zstdchunked "$REG/speed-zstdchunked/r1:zstd"
plan json speed/nydus "$TMP/json/speed-nydus-r1.json"
plan json speed/nydus-independent "$TMP/json/speed-nydus-independent-r1.json"

# check_bootstrap REF: the bootstrap layer of REF must pass nydus-image check.
check_bootstrap() {
	local ref=$1 host_repo dgst
	dgst=$("$HELPER" layers "$ref" | awk -F'\t' '$4 == "nydus-bootstrap" {print $1}')
	[[ -n $dgst ]] || die "$ref has no bootstrap layer"
	host_repo=${ref%:*}
	curl -sf "http://${host_repo%%/*}/v2/${host_repo#*/}/blobs/$dgst" | tar -xzO image/image.boot >"$TMP/check.boot" ||
		die "cannot extract image/image.boot from the bootstrap layer of $ref"
	"$NYDUS_IMAGE" check "$TMP/check.boot" >"$TMP/logs/check.log" 2>&1 ||
		{ tail -n 5 "$TMP/logs/check.log" >&2; die "nydus-image check rejected the bootstrap of $ref"; }
}
log "checking the converted images"
check_bootstrap "$(last_attempt speed-nydus nydus)"
check_bootstrap "$(last_attempt speed-nydus-independent nydus)"
esgz_layers=$("$HELPER" layers "$(last_attempt speed-estargz esgz)")
[[ $(awk -F'\t' '$4 == "estargz"' <<<"$esgz_layers" | wc -l) == 2 ]] ||
	die "the eStargz image's layers lack the TOC digest annotation: $esgz_layers"

# --- family dedup -------------------------------------------------------------------
declare -A DICT=(
	[bookworm-min]=-
	[bookworm-curl]=bookworm-min
	[bookworm-min-2]=bookworm-min
	[bookworm-min-3]=bookworm-min
	[trixie-min]=bookworm-min
	[trixie-curl]=trixie-min
)
declare -A DESC=(
	[bookworm-min]="\`debootstrap --variant=minbase bookworm\` (the rootfs \`make bench-build\` uses)"
	[bookworm-curl]="bookworm-min + curl layer (the image of the speed test)"
	[bookworm-min-2]="bookworm minbase, second independent debootstrap"
	[bookworm-min-3]="bookworm minbase, third independent debootstrap"
	[trixie-min]="$TRIXIE_HOW"
	[trixie-curl]="trixie-min + curl layer"
)
# One repository per mode, the images as its tags: the default dedup
# scope is the target repository.
C_FAM='"$NYDUSIFY" convert --source "$REG/bench/$NAME:oci" --target "$REG/family-$MODE:$NAME" --plain-http $EXTRA --work-dir "$TMP/wd/f-$MODE-$NAME" --output-json "$TMP/json/family-$MODE-$NAME.json" >"$TMP/logs/last.log" 2>&1'
for MODE in dict default none independent; do
	log "family conversions: $MODE"
	for NAME in "${FAMILY[@]}"; do
		EXTRA=""
		case $MODE in
		dict) [[ ${DICT[$NAME]} == - ]] || EXTRA="--chunk-dict bootstrap:registry:$REG/family-dict:${DICT[$NAME]}" ;;
		none) EXTRA="--dedup-scope none" ;;
		independent) EXTRA="--independent --dedup-scope none" ;;
		esac
		export MODE NAME EXTRA
		bg_run "$HELPER" run -label "family/$MODE/$NAME" -results "$RESULTS" -services "$REG_PID,$CTRD_PID" -- bash -c "$C_FAM" ||
			{ tail -n 15 "$TMP/logs/last.log" >&2; die "nydusify convert of $NAME ($MODE) failed"; }
		plan image "family/$NAME/$MODE" "$REG/family-$MODE:$NAME"
		plan json "family/$NAME/$MODE" "$TMP/json/family-$MODE-$NAME.json"
		[[ $MODE != dict && $MODE != default ]] || check_bootstrap "$REG/family-$MODE:$NAME"
	done
done
# The dedup scope's dictionary artifacts count in the defaults column.
plan tags "family-dictart/" "$REG/family-default" "nydus-chunk-dict-"
for NAME in "${FAMILY[@]}"; do
	plan image "family/$NAME/oci" "$REG/bench/$NAME:oci"
	plan family "$NAME" "${DICT[$NAME]}" "${DESC[$NAME]}"
done

# --- report ---------------------------------------------------------------------------
shown() { # the command as documented: variables left symbolic, no log redirection
	local s=${1% >*}
	s=${s//\"/}
	s=${s//\$NYDUSIFY/bin/nydusify}
	s=${s//-a \$CSOCK /}
	s=${s//ctr-remote /\$CR }
	s=${s//ctr /\$CTR }
	s=${s//\$TMP\/json\//}
	s=${s//\$TMP\/wd\/*-\$A/\$W}
	printf '%s\n' "$s"
}
plan cmd "Build an image: layer 1" "tar --numeric-owner --xattrs --acls -C ROOTFS --exclude='dev/*' --exclude='proc/*' --exclude='sys/*' -cf layer.tar \$(ls -A ROOTFS) && umoci new --image LAYOUT:NAME && umoci raw add-layer --image LAYOUT:NAME layer.tar && umoci config --image LAYOUT:NAME --config.cmd /bin/bash --config.env $IMAGE_PATH_ENV"
plan cmd "Build an image: curl layer" "umoci unpack --image LAYOUT:BASE B; (resolv.conf, /proc, /dev bound) chroot B/rootfs sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends curl ca-certificates && apt-get clean && rm -rf /var/lib/apt/lists/*'; (resolv.conf restored) umoci repack --image LAYOUT:NAME B"
plan cmd "Push" "skopeo copy --dest-tls-verify=false oci:LAYOUT:NAME docker://\$REG/bench/NAME:oci"
plan cmd "Nydus" "$(shown "$C_NYDUS")"
plan cmd "Nydus --independent" "$(shown "$C_NYDUS_I")"
plan cmd "eStargz fetch" "$(shown "$C_FETCH")"
plan cmd "eStargz convert" "$(shown "$C_CONVERT")"
plan cmd "eStargz push" "$(shown "$C_PUSH")"
[[ $ZSTDCHUNKED != 1 ]] || plan cmd "zstd:chunked convert" "$(shown "$C_ZSTD")"
plan cmd "Between eStargz rounds" "\$CTR image rm --sync <all images> (containerd garbage-collects their content)"
plan cmd "Family" "bin/nydusify convert --source \$REG/bench/NAME:oci --target \$REG/family-MODE:NAME --plain-http [--chunk-dict bootstrap:registry:\$REG/family-dict:DICT | --dedup-scope none | --independent --dedup-scope none] --work-dir \$W --output-json family-MODE-NAME.json"

if ((${#BUILT[@]})); then
	cache="cold for: $(IFS=';'; echo "${BUILT[*]}" | sed 's/;/, /g'); the rest reused from the cache"
else
	cache="warm: rootfs trees and OCI layout reused from $CACHE; on a cold cache add ~3 min: 3–4 debootstraps run in parallel (~90 s) and the two curl layers (~12 s each), and the waits for idle CPUs grow"
fi
NOTES+=(
	"eStargz with Debian's \`ctr-remote\` 0.12 recompresses each layer with gzip at its default \`--estargz-compression-level\` 9 and writes a TOC per layer; nydusify compresses 1 MiB chunks (small files in batches) with zstd level 3 on all cores and hashes every chunk."
	"nydusify's time covers the whole job registry → registry (pull of the gzip source, decompression, chunking, compression, push of blobs and bootstrap); the eStargz steps are timed apart, and the headline ratio uses the conversion step alone, the least favourable comparison for Nydus."
	"The Nydus size counts the bootstrap layer (RAFS v6 metadata in a gzip tar) on top of the data blobs; OCI and eStargz carry their metadata in the tar headers (and the TOC) inside the layers."
	"Family: the three bookworm minbase trees come from separate debootstrap runs of the same packages: their contents differ only in a few logs and caches, but the timestamps of everything created at install time differ, so their OCI layers have different digests and the registry stores each in full. Nydus deduplicates by chunk content (BLAKE3 digest of each 1 MiB chunk or small file), so with a chunk dict only the data that really differs is stored again. With nydusify's defaults the dict is the target repository's own (the dedup scope), kept by nydusify: no dict is named. With \`--dedup-scope none\`, nydusify still deduplicates within one image (layer 2 against layer 1) but not across images; upstream-style \`--independent\` deduplicates only within a layer."
	"Identical blobs are counted once per column: the first layer of bookworm-curl is bookworm-min's layer, and nydusify converts it to the same blob digest, so it costs nothing in any column."
	"nydusify's defaults (since 2026-12-07): 1 MiB batches split at 64 KiB compressed (\`--batch-size 0x100000 --batch-limit 0x10000\`). With the earlier defaults (64 KiB batches, unsplit) the defaults column was 0.360 of the OCI sum on 2026-12-07 (0.354 without the dictionary artifacts); see the README for what each costs a lazy read."
)
if ((DISCARDED > 0)); then
	NOTES+=("$DISCARDED timed run(s) were redone because other processes kept more than $REJECT cores busy during them.")
fi

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then commit+=" + uncommitted changes"; fi
pkgv() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo '?'; }
tools="bin/nydusify $("$NYDUSIFY" --version 2>/dev/null | awk '/^Version:/ {print $2}') (this tree); ctr-remote from stargz-snapshotter $(pkgv stargz-snapshotter); containerd $(pkgv containerd); docker-registry $(pkgv docker-registry); skopeo $(pkgv skopeo); umoci $(pkgv umoci); debootstrap $(pkgv debootstrap)"
l2=$(awk -F'\t' 'NR == 2 {print $2}' "$TMP/oci-layers.tsv")
for n in "${NOTES[@]}"; do plan note "$n"; done

log "report"
"$HELPER" report -results "$RESULTS" -plan "$PLAN" -doc "$DOC" -heading "$HEADING" \
	-kv command="make bench-convert" \
	-kv workdir="$BENCH_DIR" \
	-kv tmpfs="$TMP_FS" \
	-kv date="$(date -u '+%Y-%m-%d %H:%M UTC')" \
	-kv commit="$commit" \
	-kv go="$("$GO" env GOVERSION)" \
	-kv nproc="$NPROC" \
	-kv cpu="${CPU:-unknown CPU}" \
	-kv kernel="$KERNEL" \
	-kv mem="$MEM" \
	-kv tools="$tools" \
	-kv registry="127.0.0.1 (a free port)" \
	-kv runs="$RUNS" \
	-kv elapsed="$((SECONDS - START))" \
	-kv cache="$cache" \
	-kv contention="before each timed run the script waited (bounded) for other processes to leave the CPUs idle, ${WAITED} s in total, and redid $DISCARDED run(s) during which they (not counting the benchmark's registry and containerd) kept more than $REJECT cores busy" \
	-kv layer1_desc="\`debootstrap --variant=minbase bookworm\`, cleaned (no .debs, apt lists), tarred without \`./\` prefix" \
	-kv layer2_desc="\`apt-get install -y --no-install-recommends curl ca-certificates\` in a chroot, diffed by \`umoci repack\` ($((l2 / 1000)) kB gzip)" \
	-kv oci_desc="\`umoci raw add-layer\` / \`umoci repack\`, pushed with \`skopeo copy\`" ||
	die "report failed"

log "done in $((SECONDS - START))s; wrote the section '$HEADING' of ${DOC#"$ROOT"/}"
