#!/usr/bin/env bash
# debian-image.sh [DIR]: build (once) a small real Debian image as an OCI
# layout, for `make e2e` and `make demo`, with no registry and no internet
# other than the Debian mirror apt is configured with:
#
#   DIR/debian:minbase  one layer, `debootstrap --variant=minbase bookworm`
#   DIR/debian:curl     minbase plus a layer with curl and ca-certificates
#                       (apt-get install in a chroot, diffed by umoci)
#
# DIR defaults to /var/tmp/nydus-images. A finished build leaves
# DIR/debian.ok and is reused; delete DIR to rebuild. Prints the layout path
# on stdout. Needs root (debootstrap, chroot) and the packages debootstrap
# and umoci. Layer tars have no "./" prefix (ctr-remote optimize needs that).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:-/var/tmp/nydus-images}
SUITE=bookworm
LAYOUT=$DIR/debian
WORK=$DIR/work
GO=${GO:-go}
PATH=$PATH:/usr/sbin:/sbin

log() { printf '==> %s\n' "$*" >&2; }
die() {
	printf 'debian-image: error: %s\n' "$*" >&2
	exit 1
}

# unmount_under D: lazily unmount everything at or below D.
unmount_under() {
	local d
	d=$(realpath -m "$1")
	findmnt -rn -o TARGET 2>/dev/null | awk -v p="$d" '$0 == p || index($0, p "/") == 1' | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

cleanup() {
	local rc=$?
	[[ -d $WORK ]] && unmount_under "$WORK"
	rm -rf --one-file-system "$WORK"
	((rc == 0)) || printf 'debian-image: FAILED (exit %d)\n' "$rc" >&2
	exit "$rc"
}

if [[ -f $DIR/debian.ok && -f $LAYOUT/index.json ]]; then
	echo "$LAYOUT"
	exit 0
fi
[[ $(id -u) == 0 ]] || die "building the image needs root (debootstrap, chroot)"
for t in debootstrap umoci tar findmnt; do
	command -v "$t" >/dev/null || die "$t not found (apt-get install debootstrap umoci)"
done
mkdir -p "$DIR"
trap cleanup EXIT
rm -f "$DIR/debian.ok"
[[ -d $WORK ]] && unmount_under "$WORK"
rm -rf --one-file-system "$WORK" "$LAYOUT"
mkdir -p "$WORK"

mirror=${DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
	mirror=$(cd "$ROOT" && "$GO" run ./bench/build mirror -suite "$SUITE" -component main) ||
		die "cannot find a Debian mirror for $SUITE in apt's sources; set DEBIAN_MIRROR"
fi

log "debootstrap --variant=minbase $SUITE from $mirror"
t0=$SECONDS
R=$WORK/rootfs
if ! debootstrap --variant=minbase "$SUITE" "$R" "$mirror" >"$WORK/debootstrap.log" 2>&1; then
	tail -n 20 "$WORK/debootstrap.log" >&2
	die "debootstrap failed"
fi
unmount_under "$R"
(cd "$R" && rm -rf var/cache/apt/archives/*.deb var/lib/apt/lists/*_Packages var/lib/apt/lists/*Release*)
log "rootfs in $((SECONDS - t0))s"

mapfile -t top < <(ls -A "$R")
tar --numeric-owner --xattrs --acls -C "$R" --exclude='dev/*' --exclude='proc/*' --exclude='sys/*' \
	-cf "$WORK/minbase.tar" "${top[@]}"

umoci init --layout "$LAYOUT"
umoci new --image "$LAYOUT:minbase"
umoci raw add-layer --image "$LAYOUT:minbase" "$WORK/minbase.tar"
umoci config --image "$LAYOUT:minbase" --config.cmd /bin/sh \
	--config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log "second layer: apt-get install curl ca-certificates"
B=$WORK/bundle
umoci unpack --image "$LAYOUT:minbase" "$B"
BR=$B/rootfs
cp "$BR/etc/resolv.conf" "$WORK/resolv.conf.orig" 2>/dev/null || : >"$WORK/resolv.conf.orig"
cp /etc/resolv.conf "$BR/etc/resolv.conf"
mount -t proc proc "$BR/proc"
mount --rbind /dev "$BR/dev"
chroot "$BR" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	--no-install-recommends curl ca-certificates >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/*'
unmount_under "$BR/dev"
unmount_under "$BR/proc"
cp "$WORK/resolv.conf.orig" "$BR/etc/resolv.conf"
umoci repack --image "$LAYOUT:curl" "$B"

touch "$DIR/debian.ok"
log "image ready in $((SECONDS - t0))s: $LAYOUT (tags minbase, curl)"
echo "$LAYOUT"
