#!/usr/bin/env bash
# make demo: run a Debian container lazily from a Nydus-Go image.
#
#   1. builds (once, cached) a debootstrapped Debian bookworm image with curl
#      as an OCI layout (scripts/debian-image.sh);
#   2. converts it with our nydusify and pushes it to a local
#      docker-registry;
#   3. starts containerd, upstream nydus-snapshotter (bin/containerd-nydus-grpc,
#      `make snapshotter`) and, through it, our nydusd, in the snapshotter's
#      shared mode (one nydusd, started with the snapshotter, mounts every
#      image through its API: `make bench` measures it faster to a ready
#      container than dedicated mode, which spawns a nydusd per image and
#      polls it until it runs; DEMO_DAEMON_MODE=dedicated runs that);
#   4. pulls the image with the labels that enable remote snapshots
#      (ctr-remote image rpull) and runs `cat /etc/os-release; curl --version`
#      in a container before the image's data has been downloaded;
#   5. prints the pull and run times and the bytes fetched against the image
#      size, then stops everything it started, by PID, and unmounts.
#
# Needs root (containerd, FUSE) and the packages `make deps` installs.
# Environment: DEMO_IMAGE_DIR (image cache, default /var/tmp/nydus-images),
# DEMO_KEEP=1 keeps the work directory, DEMO_DAEMON_MODE (shared or
# dedicated) the snapshotter's daemon_mode.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/bin
PATH=$PATH:/usr/sbin:/sbin

die() {
	printf 'demo: error: %s\n' "$*" >&2
	exit 1
}
step() { printf '\n== %s\n' "$*"; }

[[ $(id -u) == 0 ]] || die "the containerd demo needs root (containerd, runc, FUSE); 'make demo-builder' runs the rootless builder demo"
for b in nydusd nydusify nydus-image containerd-nydus-grpc; do
	[[ -x $BIN/$b ]] || die "$BIN/$b not found: run 'make demo' (it builds everything first)"
done
for t in docker-registry containerd ctr ctr-remote runc curl python3; do
	command -v "$t" >/dev/null || die "$t not found: run 'make deps' as root"
done

# Short: the snapshotter's root must be at most 70 bytes.
W=$(mktemp -d /tmp/nydus-demo.XXXXXX)
PIDS=()
HAD_RUN_CONTAINERD=0
[[ -d /run/containerd ]] && HAD_RUN_CONTAINERD=1
CTR="ctr -a $W/containerd.sock"

# pids_under: processes whose command line mentions the work directory
# (nydusd daemons the snapshotter started, containerd's shims).
pids_under() {
	local p
	for p in /proc/[0-9]*; do
		[[ ${p#/proc/} == "$$" ]] && continue
		tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q -- "$W/" && echo "${p#/proc/}"
	done
}

cleanup() {
	local rc=$? pid m
	trap - EXIT INT TERM
	if [[ -S $W/containerd.sock ]]; then
		for c in $($CTR containers ls -q 2>/dev/null); do
			$CTR tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
			$CTR tasks rm -f "$c" >/dev/null 2>&1 || true
			$CTR containers rm "$c" >/dev/null 2>&1 || true
		done
		imgs=$($CTR images ls -q 2>/dev/null || true)
		[[ -n $imgs ]] && $CTR images rm --sync $imgs >/dev/null 2>&1 || true
	fi
	# Stop in reverse order of start: containerd, snapshotter, registry.
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		pid=${PIDS[i]}
		kill -TERM "$pid" 2>/dev/null || continue
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	for pid in $(pids_under); do kill -KILL "$pid" 2>/dev/null || true; done
	sleep 0.2
	findmnt -rn -o TARGET | awk -v p="$W" 'index($0, p "/") == 1' | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done
	((HAD_RUN_CONTAINERD)) || rm -rf /run/containerd
	rmdir /sys/fs/cgroup/*/default 2>/dev/null || true
	if [[ -n ${DEMO_KEEP:-} ]]; then
		echo "demo: kept $W"
	else
		rm -rf "$W"
	fi
	left=$(findmnt -rn -o TARGET | awk -v p="$W" 'index($0, p "/") == 1' | wc -l)
	((left == 0)) || { echo "demo: $left mounts left under $W" >&2; rc=1; }
	((rc == 0)) || echo "demo: FAILED (exit $rc); logs were in $W" >&2
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CMD...: start a daemon in the background, logging to $W/NAME.log.
start() {
	local name=$1
	shift
	"$@" >"$W/$name.log" 2>&1 &
	PIDS+=($!)
}

# wait_for WHAT CMD...: poll CMD for up to 20 s.
wait_for() {
	local what=$1
	shift
	for _ in $(seq 200); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	die "timed out waiting for $what"
}

now() { date +%s.%N; }
since() { python3 -c "import sys; print('%.2f s' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$(now)"; }
mib() { python3 -c "import sys; print('%.1f MiB' % (int(sys.argv[1]) / 1048576))" "$1"; }

step "image: Debian bookworm minbase + curl, as an OCI layout (built once, cached)"
LAYOUT=$(./scripts/debian-image.sh "${DEMO_IMAGE_DIR:-/var/tmp/nydus-images}")
echo "  $LAYOUT"

step "registry: Debian's docker-registry on 127.0.0.1"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$W/registry.yml" <<EOF
version: 0.1
storage:
  filesystem:
    rootdirectory: $W/registry
http:
  addr: 127.0.0.1:$PORT
log:
  level: warn
EOF
start registry docker-registry serve "$W/registry.yml"
wait_for "the registry" curl -sf "http://127.0.0.1:$PORT/v2/"
REG=127.0.0.1:$PORT
REF=$REG/demo/debian:curl-nydus

step "convert: nydusify convert --source oci:$LAYOUT:curl --target $REF"
"$BIN/nydusify" convert --log-level warn ${DEMO_CONVERT_ARGS:-} --source "oci:$LAYOUT:curl" --target "$REF" --plain-http
MANIFEST=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REG/v2/demo/debian/manifests/curl-nydus")
BLOB_BYTES=$(python3 -c 'import json, sys
m = json.loads(sys.argv[1])
print(sum(l["size"] for l in m["layers"] if l.get("annotations", {}).get("containerd.io/snapshot/nydus-blob") == "true"))' "$MANIFEST")
OCI_BYTES=$(python3 -c 'import json, sys, os
d = sys.argv[1]
idx = json.load(open(os.path.join(d, "index.json")))
man = [m for m in idx["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "curl"][0]
m = json.load(open(os.path.join(d, "blobs", *man["digest"].split(":"))))
print(sum(l["size"] for l in m["layers"]))' "$LAYOUT")

MODE=${DEMO_DAEMON_MODE:-shared}
case $MODE in shared | dedicated) ;; *) die "DEMO_DAEMON_MODE=$MODE: want shared or dedicated" ;; esac
step "start containerd and upstream nydus-snapshotter (which starts our nydusd, $MODE mode)"
cat >"$W/nydusd.json" <<EOF
{"device":{"backend":{"type":"registry","config":{"scheme":"http","timeout":5,"connect_timeout":5,"retry_limit":2}},"cache":{"type":"blobcache"}},"mode":"direct","digest_validate":false,"iostats_files":true,"enable_xattr":true,"fs_prefetch":{"enable":false}}
EOF
cat >"$W/snapshotter.toml" <<EOF
version = 1
root = "$W/sn"
address = "$W/sn.sock"
daemon_mode = "$MODE"
[system]
enable = false
[daemon]
nydusd_config = "$W/nydusd.json"
nydusd_path = "$BIN/nydusd"
nydusimage_path = "$BIN/nydus-image"
fs_driver = "fusedev"
recover_policy = "failover"
[cgroup]
enable = false
[log]
log_to_stdout = true
level = "info"
[metrics]
address = ""
EOF
cat >"$W/containerd.toml" <<EOF
version = 2
root = "$W/containerd/root"
state = "$W/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$W/containerd.sock"
[ttrpc]
  address = "$W/containerd.sock.ttrpc"
[metrics]
  address = ""
[proxy_plugins]
  [proxy_plugins.nydus]
    type = "snapshot"
    address = "$W/sn.sock"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$W/containerd/opt"
EOF
start snapshotter "$BIN/containerd-nydus-grpc" --config "$W/snapshotter.toml"
start containerd containerd --config "$W/containerd.toml"
wait_for "the snapshotter" test -S "$W/sn.sock"
wait_for "containerd" $CTR version
echo "  containerd $(containerd --version | awk '{print $3}'), nydus-snapshotter $("$BIN/containerd-nydus-grpc" --version 2>&1 | awk '/Version/ {print $2; exit}')"

step "pull: ctr-remote image rpull --snapshotter nydus (metadata only)"
t0=$(now)
ctr-remote -a "$W/containerd.sock" image rpull --snapshotter nydus --plain-http "$REF" >/dev/null
PULL=$(since "$t0")
echo "  pulled in $PULL"

step "run: cat /etc/os-release; curl --version"
t0=$(now)
$CTR run --rm --snapshotter nydus "$REF" demo /bin/sh -c 'grep PRETTY_NAME /etc/os-release; curl --version | head -n 1' |
	sed 's/^/  | /'
RUN=$(since "$t0")

SOCK=$(ls "$W"/sn/socket/*/api.sock)
BACKEND=$(curl -sf --unix-socket "$SOCK" http://nydusd/api/v1/metrics/backend | python3 -c 'import json, sys; m = json.load(sys.stdin); print(m["read_amount_total"], m["read_count"])')
read -r FETCHED REQUESTS <<<"$BACKEND"
READ=$(curl -sf --unix-socket "$SOCK" http://nydusd/api/v1/metrics/files | python3 -c 'import json, sys; d = json.load(sys.stdin); print(sum(f["data_read"] for f in d.values()), len(d))')
set -- $READ

step "summary"
printf '  %-34s %s\n' "pull (metadata only):" "$PULL"
printf '  %-34s %s\n' "create + run to exit:" "$RUN"
printf '  %-34s %s of %s Nydus blobs (%s%%) in %s requests\n' "fetched from the registry:" "$(mib "$FETCHED")" "$(mib "$BLOB_BYTES")" \
	"$(python3 -c "print(round(100 * $FETCHED / $BLOB_BYTES, 1))")" "$REQUESTS"
printf '  %-34s %s in %s files\n' "read by the container:" "$(mib "$1")" "$2"
printf '  %-34s %s (what a plain OCI pull downloads first)\n' "OCI image layers (gzip):" "$(mib "$OCI_BYTES")"
step "demo finished; stopping containerd, the snapshotter, nydusd and the registry"
