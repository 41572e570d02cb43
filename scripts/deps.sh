#!/bin/bash
# Install everything knbd's build, VM harness, tests and KUnit runner need.
# Idempotent: does nothing (fast) when all packages are already present.
set -euo pipefail

PKGS_RUN="qemu-system-x86 linux-image-amd64 linux-headers-amd64 busybox-static kmod
  iproute2 cpio nbd-client nbd-server fio libnbd-bin nbdkit qemu-utils ipvsadm
  util-linux e2fsprogs procps psmisc make gcc libnl-3-dev libnl-genl-3-dev
  nvme-cli python3-matplotlib linux-perf dmsetup dkms"
# test_move_clients.sh: a libnbd client (python3 "import nbd", nbdsh)
PKGS_RUN="$PKGS_RUN python3-libnbd"
PKGS_DEV="sparse linux-source-6.1 bc flex bison libelf-dev libssl-dev dwarves python3
  xz-utils rsync debhelper dh-dkms fakeroot dpkg-dev"

want="$PKGS_RUN"
[ "${1:-}" = "--run-only" ] || want="$want $PKGS_DEV"

missing=""
for p in $want; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
if [ -z "$missing" ]; then
	echo "deps: all packages present"
	exit 0
fi
echo "deps: installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "deps: done"
