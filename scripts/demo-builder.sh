#!/usr/bin/env bash
# make demo: build a two-layer Nydus image from this repository's own
# sources (the embedded default input), the way nydus-snapshotter's
# converter does, then merge, verify, inspect, unpack and (as root) mount
# it with the kernel's EROFS driver.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
NI=${NYDUS_IMAGE:-$ROOT/bin/nydus-image}
[ -x "$NI" ] || { echo "demo: $NI not found; run make build" >&2; exit 1; }
W=$(mktemp -d /tmp/nydus-demo.XXXXXX)
MNT=""
LOOPS=""
cleanup() {
  if [ -n "$MNT" ] && mountpoint -q "$MNT"; then umount "$MNT"; fi
  for l in $LOOPS; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }

step "layer 1: this repository's sources as an OCI layer tar"
tar -C "$ROOT" --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner \
    -cf "$W/layer1.tar" go.mod Makefile cmd pkg internal
# layer 2: delete a directory (OCI whiteout), add a copy of existing data
# (deduplicated) and a new file.
mkdir -p "$W/l2/pkg" "$W/l2/copies"
touch "$W/l2/pkg/.wh.blob"
cp "$ROOT/pkg/rafs/writer.go" "$W/l2/copies/writer.go"
echo "hello from layer 2" > "$W/l2/NEW"
tar -C "$W/l2" --sort=name --mtime=@1700000001 --owner=0 --group=0 --numeric-owner -cf "$W/layer2.tar" .
ls -l "$W"/layer*.tar | awk '{print "  " $5 " bytes  " $9}'

step "create: per-layer blobs with inline bootstrap and ToC (the converter's command line)"
mkdir -p "$W/blobs" "$W/cache"
for i in 1 2; do
  echo / | "$NI" create --log-level warn --prefetch-policy fs --type tar-rafs --blob-inline-meta \
      --features blob-toc --fs-version 6 --whiteout-spec none --compressor zstd \
      --blob "$W/layer$i.blob" -J "$W/create$i.json" "$W/layer$i.tar"
  id=$(sha256sum "$W/layer$i.blob" | cut -c1-64)
  mv "$W/layer$i.blob" "$W/blobs/$id"
  echo "  layer $i -> blob $id ($(stat -c %s "$W/blobs/$id") bytes)"
  eval "ID$i=$id"
done

step "merge: flatten the layers, applying whiteouts"
# Sources may be layer bootstraps or, as here, layer blobs carrying one;
# a layer's blob id is its file name (the blob digest).
"$NI" merge --log-level warn --bootstrap "$W/image.boot" --output-json "$W/merge.json" \
    "$W/blobs/$ID1" "$W/blobs/$ID2"
python3 -c 'import json,sys; print("  referenced blobs:", ", ".join(b[:12] for b in json.load(open(sys.argv[1]))["blobs"]))' "$W/merge.json"

step "dedup: build layer 2 on top of layer 1 (--parent-bootstrap): copied data is not stored again"
"$NI" create --log-level warn -t tar-rafs --parent-bootstrap "$W/blobs/$ID1" -B "$W/l2-on-l1.boot" \
    -D "$W/blobs" -J "$W/dedup.json" "$W/layer2.tar"
"$NI" check "$W/l2-on-l1.boot" -D "$W/blobs"
python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["trace"]["stats"]; print("  layer 2: %d chunks, %d reused from layer 1 (%d of %d bytes)" % (s["chunks"], s["dedup_chunks"], s["dedup_bytes"], s["bytes"]))' "$W/dedup.json"

step "check: validate the bootstrap and verify every chunk digest"
"$NI" check "$W/image.boot" -D "$W/blobs"

step "inspect"
"$NI" inspect "$W/image.boot"

step "unpack and compare with the expected tree"
"$NI" unpack "$W/image.boot" --blob-dir "$W/blobs" --output "$W/unpacked.tar"
tar -tf "$W/unpacked.tar" | sed 's|/$||' | grep -v '^\./\?$' | sort > "$W/got.txt"
{ tar -tf "$W/layer1.tar"; tar -tf "$W/layer2.tar"; } | sed 's|^\./||; s|/$||' | grep -v '^\.\?$' \
  | grep -v -E '^pkg/blob(/|$)' | grep -v '\.wh\.' | sort -u > "$W/want.txt"
if diff -u "$W/want.txt" "$W/got.txt"; then
  echo "  unpacked tree matches: $(wc -l < "$W/got.txt") entries, pkg/blob removed by the whiteout"
else
  echo "demo: unpacked tree differs" >&2; exit 1
fi

if [ "$(id -u)" = 0 ]; then
  step "kernel: mount the bootstrap with EROFS, data from the blob cache file"
  "$NI" create -t tar-rafs -B "$W/flat.boot" -b "$W/flat.blob" --blob-cache-dir "$W/cache" "$W/layer1.tar"
  data=$(ls "$W"/cache/*.blob.data)
  MNT=$W/mnt; mkdir -p "$MNT"
  # util-linux mount puts the bootstrap on a loop device, so the blob cache
  # file needs one too (a raw mount(2) could take both as plain files).
  LOOPS="$(losetup -f --show -r "$W/flat.boot") $(losetup -f --show -r "$data")"
  set -- $LOOPS
  mount -t erofs -o ro,device="$2" "$1" "$MNT"
  echo "  mounted: $(find "$MNT" -type f | wc -l) files; pkg/rafs/writer.go sha256:"
  echo "    source  $(sha256sum "$ROOT/pkg/rafs/writer.go" | cut -c1-64)"
  echo "    erofs   $(sha256sum "$MNT/pkg/rafs/writer.go" | cut -c1-64)"
  cmp "$ROOT/pkg/rafs/writer.go" "$MNT/pkg/rafs/writer.go"
  umount "$MNT"; MNT=""
  for l in $LOOPS; do losetup -d "$l"; done; LOOPS=""
fi
step "demo finished"
