#!/usr/bin/env bash
# debian-image.sh [DIR [EXTRA...]]: build (once) small real Debian images
# as an OCI layout, for `make e2e`, `make demo` and `make bench`, with no
# registry and no internet other than the Debian mirror apt is configured
# with:
#
#   DIR/debian:minbase  one layer, `debootstrap --variant=minbase bookworm`
#   DIR/debian:curl     minbase plus a layer with curl and ca-certificates
#                       (apt-get install in a chroot, diffed by umoci)
#   DIR/debian:python   (EXTRA "python") minbase plus a layer with python3
#   DIR/debian:gcc      (EXTRA "gcc") minbase plus a layer with gcc and
#                       libc6-dev
#   DIR/debian:TAG      (EXTRA "TAG=PKG[,PKG...]") minbase plus a layer
#                       with those Debian packages (bench/startup
#                       -workloads builds its images this way)
#
# DIR defaults to /var/tmp/nydus-images. Finished builds leave DIR/debian.ok
# (minbase and curl) and DIR/debian-EXTRA.ok and are reused; delete DIR to
# rebuild. Prints the layout path on stdout. Needs root (debootstrap, chroot) and the packages debootstrap
# and umoci. Layer tars have no "./" prefix (ctr-remote optimize needs that).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:-/var/tmp/nydus-images}
shift || true
EXTRA=()
declare -A CUSTOM=()
for x in "$@"; do
	case $x in
	python | gcc) EXTRA+=("$x") ;;
	*=*)
		tag=${x%%=*} pkgs=${x#*=}
		if [[ ! $tag =~ ^[a-z0-9][a-z0-9._-]{0,63}$ || $tag == minbase || $tag == curl || $tag == python || $tag == gcc ]]; then
			printf 'debian-image: error: extra image %q: invalid tag %q (lower-case letters, digits, ".", "_", "-"; not minbase, curl, python or gcc)\n' "$x" "$tag" >&2
			exit 2
		fi
		if [[ ! $pkgs =~ ^[a-z0-9][a-z0-9.+-]*(,[a-z0-9][a-z0-9.+-]*)*$ ]]; then
			printf 'debian-image: error: extra image %q: invalid package list %q (Debian package names, comma-separated)\n' "$x" "$pkgs" >&2
			exit 2
		fi
		CUSTOM[$tag]=${pkgs//,/ }
		EXTRA+=("$tag")
		;;
	*)
		printf 'debian-image: error: unknown extra image %q (want python, gcc or TAG=PKG[,PKG...])\n' "$x" >&2
		exit 2
		;;
	esac
done
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

# packages_of TAG: the Debian packages of an image's second layer.
packages_of() {
	if [[ -n ${CUSTOM[$1]:-} ]]; then
		echo "${CUSTOM[$1]}"
		return
	fi
	case $1 in
	curl) echo curl ca-certificates ;;
	python) echo python3 ;;
	gcc) echo gcc libc6-dev ;;
	esac
}

# add_layer TAG: DIR/debian:TAG = minbase plus a layer with TAG's packages.
add_layer() {
	local tag=$1 B=$WORK/bundle-$1 BR
	log "image $tag: minbase + apt-get install $(packages_of "$tag")"
	umoci unpack --image "$LAYOUT:minbase" "$B"
	BR=$B/rootfs
	cp "$BR/etc/resolv.conf" "$WORK/resolv.conf.orig" 2>/dev/null || : >"$WORK/resolv.conf.orig"
	cp /etc/resolv.conf "$BR/etc/resolv.conf"
	touch "$WORK/mark"
	mount -t proc proc "$BR/proc"
	mount --rbind /dev "$BR/dev"
	chroot "$BR" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends $(packages_of "$tag") >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/*"
	unmount_under "$BR/dev"
	unmount_under "$BR/proc"
	cp "$WORK/resolv.conf.orig" "$BR/etc/resolv.conf"
	# Put every ancestor directory of a changed entry into the layer too:
	# `ctr-remote image optimize` (eStargz) fails on a layer holding
	# usr/bin/x without usr/ ("failed to sort tar entries").
	find "$BR" -xdev -newer "$WORK/mark" -printf '%h\n' | sort -u | awk -v r="$BR" '{
		d = $0
		while (length(d) > length(r)) { print d; sub(/\/[^\/]*$/, "", d) }
	}' | sort -u | xargs -r -d '\n' touch -c -h
	umoci repack --image "$LAYOUT:$tag" "$B"
	rm -rf --one-file-system "$B"
}

# A finished extra image leaves DIR/debian-TAG.ok holding its packages: a
# custom tag whose package list changed is built again.
missing=()
for x in "${EXTRA[@]}"; do
	if [[ ! -f $DIR/debian-$x.ok ]] || { [[ -n ${CUSTOM[$x]:-} ]] && [[ $(cat "$DIR/debian-$x.ok") != "${CUSTOM[$x]}" ]]; }; then
		missing+=("$x")
	fi
done
if [[ -f $DIR/debian.ok && -f $LAYOUT/index.json ]]; then
	((${#missing[@]} == 0)) && { echo "$LAYOUT"; exit 0; }
	[[ $(id -u) == 0 ]] || die "building the image needs root (chroot)"
	trap cleanup EXIT
	[[ -d $WORK ]] && unmount_under "$WORK"
	rm -rf --one-file-system "$WORK"
	mkdir -p "$WORK"
	for x in "${missing[@]}"; do
		add_layer "$x"
		packages_of "$x" >"$DIR/debian-$x.ok"
	done
	echo "$LAYOUT"
	exit 0
fi
[[ $(id -u) == 0 ]] || die "building the image needs root (debootstrap, chroot)"
for t in debootstrap umoci tar findmnt; do
	command -v "$t" >/dev/null || die "$t not found (apt-get install debootstrap umoci)"
done
mkdir -p "$DIR"
trap cleanup EXIT
rm -f "$DIR"/debian.ok "$DIR"/debian-*.ok
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

add_layer curl
touch "$DIR/debian.ok"
for x in "${EXTRA[@]}"; do
	add_layer "$x"
	packages_of "$x" >"$DIR/debian-$x.ok"
done
log "images ready in $((SECONDS - t0))s: $LAYOUT (tags minbase, curl ${EXTRA[*]})"
echo "$LAYOUT"
