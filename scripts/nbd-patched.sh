#!/bin/bash
# Build the patched nbd.ko (`make nbd-patched`): drivers/block/nbd.c of Debian's
# linux-source-6.1 (the source of the kernel the VM boots) + patches/nbd/*.patch,
# built out of tree against the same headers as knbd.ko, into out/nbd-patched/nbd.ko.
#
# usage: scripts/nbd-patched.sh [--force]
# Env: KDIR (the Makefile passes its own), KNBD_CACHE, KNBD_LINUX_TARBALL,
#      KNBD_NBD_OUT (default out/nbd-patched).
#
# nbd.c comes from the tree scripts/kunit.sh extracted (when it was extracted from
# this tarball), else from the tarball itself (that one file). Nothing is rebuilt
# when nbd.c, the patches, the kernel headers and this script are as in the last
# build. The result must carry the vermagic of the stock nbd.ko of that kernel.
# Documentation/nbd-patch.md says how to install it.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARBALL=${KNBD_LINUX_TARBALL:-/usr/src/linux-source-6.1.tar.xz}
CACHE=${KNBD_CACHE:-/var/cache/knbd}
TREE=$CACHE/kunit/linux-source-6.1
OUT=${KNBD_NBD_OUT:-$REPO/out/nbd-patched}
SRC_REL=drivers/block/nbd.c

die() { echo "nbd-patched: ERROR: $*" >&2; exit 1; }
log() { echo "nbd-patched: $*" >&2; }

force=0
case ${1:-} in
--force) force=1 ;;
'') ;;
*) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

if [ -z "${KDIR:-}" ]; then
	# the Makefile's choice: the running kernel's headers, else the newest installed
	KDIR=/lib/modules/$(uname -r)/build
	if [ ! -f "$KDIR/Makefile" ]; then
		KDIR=$(for d in /lib/modules/*/build; do [ -f "$d/Makefile" ] && echo "$d"; done |
			sort -V | tail -n 1)
	fi
fi
[ -f "$KDIR/Makefile" ] || die "no kernel build tree at '$KDIR': run scripts/deps.sh or pass KDIR="
KVER=$(sed -n 's/.*UTS_RELEASE "\(.*\)".*/\1/p' "$KDIR/include/generated/utsrelease.h")
[ -n "$KVER" ] || die "cannot read the kernel release of $KDIR"

# in the order of their numbers: 0002 applies on top of 0001
shopt -s nullglob
patches=("$REPO"/patches/nbd/[0-9][0-9][0-9][0-9]-*.patch)
shopt -u nullglob
[ ${#patches[@]} -eq "$(find "$REPO/patches/nbd" -maxdepth 1 -name '*.patch' | wc -l)" ] ||
	die "patches/nbd/*.patch must be named NNNN-*.patch (their order)"
[ ${#patches[@]} -gt 0 ] || die "no patches/nbd/*.patch"

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock -w 600 9 || die "timed out waiting for $OUT/.lock"

# ---- nbd.c of the tarball ----
tarball_id() { stat -c '%n %s %Y' "$TARBALL"; }
src=$OUT/nbd.c.orig
if [ ! -f "$src" ] || [ "$(cat "$src.id" 2>/dev/null)" != "$(tarball_id 2>/dev/null)" ]; then
	[ -f "$TARBALL" ] || die "$TARBALL missing: run scripts/deps.sh"
	rm -f "$src" "$src.id"
	if [ "$(cat "$TREE/.knbd-extracted" 2>/dev/null)" = "$(tarball_id)" ] &&
		cp "$TREE/$SRC_REL" "$src.tmp" 2>/dev/null; then
		log "nbd.c from $TREE"
	else
		log "extracting $SRC_REL from $TARBALL"
		tar -xJOf "$TARBALL" "linux-source-6.1/$SRC_REL" >"$src.tmp" ||
			die "no linux-source-6.1/$SRC_REL in $TARBALL"
	fi
	mv "$src.tmp" "$src"
	tarball_id >"$src.id"
fi

# ---- up to date? ----
want=$( {
	sha256sum "$src" "${patches[@]}" "${BASH_SOURCE[0]}"
	echo "$KDIR $KVER"
	sha256sum "$KDIR/Module.symvers" "$KDIR/include/generated/autoconf.h" 2>/dev/null
} | sed "s#$REPO/##g" | sha256sum | cut -d' ' -f1)
if [ "$force" = 0 ] && [ -f "$OUT/nbd.ko" ] && [ "$(cat "$OUT/.built" 2>/dev/null)" = "$want" ]; then
	log "$OUT/nbd.ko is up to date ($KVER)"
	exit 0
fi
rm -f "$OUT/nbd.ko" "$OUT/.built"

# ---- patch and build ----
build=$OUT/build
rm -rf "$build"
mkdir -p "$build"
cp "$src" "$build/nbd.c"
for p in "${patches[@]}"; do
	# -p3: a/drivers/block/nbd.c; no fuzz: the patch must fit this nbd.c exactly
	patch -s -p3 -F0 --no-backup-if-mismatch -d "$build" <"$p" ||
		die "${p#"$REPO"/} does not apply to $SRC_REL of $TARBALL"
	log "applied ${p#"$REPO"/}"
done
echo 'obj-m := nbd.o' >"$build/Kbuild"
make -C "$KDIR" M="$build" modules >"$OUT/build.log" 2>&1 || {
	tail -n 30 "$OUT/build.log" >&2
	die "build failed, see $OUT/build.log"
}
if grep -E '(warning|error):' "$OUT/build.log" >&2; then
	die "the build has warnings, see $OUT/build.log"
fi

# ---- the same vermagic as the stock module of that kernel ----
stock=''
for f in "/lib/modules/$KVER/kernel/drivers/block/nbd.ko"{,.xz,.zst,.gz}; do
	[ -f "$f" ] && stock=$f && break
done
vm_new=$(modinfo -F vermagic "$build/nbd.ko")
if [ -n "$stock" ]; then
	vm_stock=$(modinfo -F vermagic "$stock")
	[ "$vm_new" = "$vm_stock" ] ||
		die "vermagic '$vm_new' differs from the stock $stock: '$vm_stock'"
	log "vermagic '$vm_new' = stock $stock"
else
	log "no stock nbd.ko under /lib/modules/$KVER: vermagic '$vm_new' not compared"
fi
cp "$build/nbd.ko" "$OUT/nbd.ko.tmp"
mv "$OUT/nbd.ko.tmp" "$OUT/nbd.ko"
echo "$want" >"$OUT/.built"
log "built $OUT/nbd.ko for $KVER"
