#!/bin/bash
# The main job: install what is needed, build knbd.ko, boot a VM on Debian's kernel, serve a
# volume from the in-kernel server, attach it with stock nbd-client, run fio, print a summary.
#
# usage: scripts/demo.sh            (make demo)
# env:   KNBD_DEMO_RUNTIME=secs per fio job (default 10), KNBD_DEMO_OUT=dir for logs
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
OUT=${KNBD_DEMO_OUT:-$REPO/out/demo}
rm -rf "$OUT"
mkdir -p "$OUT"
t0=$SECONDS
step() { printf '[demo %3ds] %s\n' $((SECONDS - t0)) "$*"; }
die() {
	printf '[demo %3ds] FAILED: %s\n' $((SECONDS - t0)) "$*" >&2
	exit 1
}

step "1/4 installing dependencies (apt-get, only what is missing)"
scripts/deps.sh --run-only || die "dependency installation failed (is apt reachable?)"

step "2/4 building knbd.ko, ip_vs_knbd.ko (against the Debian kernel headers) and tools/knbd-reconnect"
{ make -s modules && make -s tools; } >"$OUT/build.log" 2>&1 ||
	{ tail -20 "$OUT/build.log"; die "build failed, see $OUT/build.log"; }

step "3/4 booting a VM (QEMU TCG, Debian kernel) and running the demo inside"
echo "RUNTIME=${KNBD_DEMO_RUNTIME:-10}" >"$OUT/demo.env"
set +e
scripts/vm-run.sh --smp 2 --mem 2G --timeout 1500 --out "$OUT/vm" -- scripts/demo/guest.sh "$OUT/demo.env" \
	>"$OUT/vm.log" 2>&1 &
vm=$!
# Relay the guest's progress lines while it runs.
tail -n +1 -F "$OUT/vm.log" 2>/dev/null | grep --line-buffered -a '^\[guest' &
relay=$!
wait $vm
rc=$?
sleep 0.5
kill $relay 2>/dev/null
wait $relay 2>/dev/null
set -e
case $rc in
0) ;;
124) die "the VM timed out (see $OUT/vm.log)" ;;
125) tail -30 "$OUT/vm.log"; die "the VM crashed or could not run the demo (see $OUT/vm.log)" ;;
*) grep -a -E '^\[guest|FAILED' "$OUT/vm.log" | tail -5; die "the demo failed in the guest with status $rc (see $OUT/vm.log)" ;;
esac

step "4/4 summary"
cat "$OUT/vm/summary.txt"
step "done; logs in $OUT"
