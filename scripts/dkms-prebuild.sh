#!/bin/bash
# DKMS build of the knbd-dkms package, on the host, without touching the
# host's DKMS state:
#
#   scripts/dkms-prebuild.sh DEBS_DIR [KVER]
#
# Unpacks DEBS_DIR/knbd-dkms_VERSION_all.deb into a scratch directory, runs
# "dkms build" on its /usr/src/knbd-VERSION (the package's own dkms.conf) for
# KVER (default: the newest /lib/modules/*/build, as the Makefile picks) with
# scratch DKMS trees and a scratch signing key, checks that both modules
# were built with MODULE_VERSION = VERSION, and packs the result as a DKMS
# tarball DEBS_DIR/knbd-VERSION.dkms.tar.gz ("dkms mktarball"). The VM test
# (test_package.sh) puts that tarball where knbd-dkms's postinst looks for
# prebuilt modules (/usr/share/knbd-dkms/), so the install in the TCG guest
# does not compile for minutes; KNBD_PKG_GUEST_BUILD=1 makes it compile there.
set -euo pipefail

debs=${1:?usage: dkms-prebuild.sh DEBS_DIR [KVER]}
debs=$(cd "$debs" && pwd)	# dkms runs in a scratch directory
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=$(cat "$repo/VERSION")
kver=${2:-$(for d in /lib/modules/*/build/Makefile; do [ -e "$d" ] && echo "$d"; done |
	cut -d/ -f4 | sort -V | tail -n 1)}
[ -n "$kver" ] || { echo "dkms-prebuild: no /lib/modules/*/build" >&2; exit 1; }
deb=$debs/knbd-dkms_${version}_all.deb
[ -f "$deb" ] || { echo "dkms-prebuild: no $deb (make deb)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/knbd-dkms.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/root" "$work/tree" "$work/install"
dpkg-deb -x "$deb" "$work/root"
# signing key and certificate of this build only (not /var/lib/dkms/mok.*)
export mok_signing_key=$work/mok.key mok_certificate=$work/mok.pub
dk=(-m knbd -v "$version" -k "$kver" --dkmstree "$work/tree" --sourcetree "$work/root/usr/src"
	--installtree "$work/install")
t0=$SECONDS
if ! (cd "$work" && dkms build "${dk[@]}") >"$work/build.out" 2>&1; then
	cat "$work/build.out"
	cat "$work/tree/knbd/$version/build/make.log" 2>/dev/null | tail -n 30
	echo "dkms-prebuild: dkms build for $kver failed" >&2
	exit 1
fi
echo "dkms-prebuild: dkms build knbd/$version for $kver: $((SECONDS - t0))s"
for m in knbd ip_vs_knbd; do
	ko=$work/tree/knbd/$version/$kver/$(uname -m)/module/$m.ko
	v=$(modinfo -F version "$ko" 2>/dev/null || true)
	[ "$v" = "$version" ] || { echo "dkms-prebuild: $ko: version '$v', want $version" >&2; exit 1; }
done
rm -f "$debs/knbd-$version.dkms.tar.gz"
(cd "$work" && dkms mktarball "${dk[@]}" --archive "$debs/knbd-$version.dkms.tar.gz") >"$work/tar.out" 2>&1 ||
	{ cat "$work/tar.out"; echo "dkms-prebuild: dkms mktarball failed" >&2; exit 1; }
[ -s "$debs/knbd-$version.dkms.tar.gz" ] || { cat "$work/tar.out"; echo "dkms-prebuild: no tarball" >&2; exit 1; }
echo "dkms-prebuild: $debs/knbd-$version.dkms.tar.gz"
