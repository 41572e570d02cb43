#!/bin/bash
# A soak of the hostile-input and fault tests, on demand (not in make check):
# the NBD fuzzer and the member-frame fuzzer for much longer, then the
# attack clients, backing faults and the group scenarios, in one VM.
#
# usage: scripts/soak.sh [--debug] [--out DIR] [--rounds N]
#   --debug     on the debug kernel (KASAN, lockdep, kmemleak...; built by
#               scripts/debug-kernel.sh if needed) instead of Debian's
#   --rounds N  run the test list N times in the same VM (default 1)
# Env: KNBD_SOAK_FUZZ_ITERS (NBD fuzzer iterations, default 50000),
#      KNBD_SOAK_FUZZ_SECONDS (its time cap, default 1800),
#      KNBD_SOAK_PEER_FUZZ_CASES (member-frame cases, default 50000),
#      KNBD_SOAK_TESTS (default "proto auth attack faults group").
# Prints the PASS/FAIL lines and "N passed, N failed"; exit 0 if none failed.
set -u
cd "$(dirname "$0")/.." || exit 2

debug=0 out=out/soak rounds=1
while [ $# -gt 0 ]; do
	case $1 in
	--debug) debug=1; shift ;;
	--out) out=$2; shift 2 ;;
	--rounds) rounds=$2; shift 2 ;;
	*) echo "usage: $0 [--debug] [--out DIR] [--rounds N]" >&2; exit 2 ;;
	esac
done

scripts/deps.sh >/dev/null || exit 1
make -s modules >/dev/null || { echo "soak: module build failed" >&2; exit 1; }
tests=()
for ((r = 0; r < rounds; r++)); do
	# shellcheck disable=SC2206
	tests+=(${KNBD_SOAK_TESTS:-proto auth attack faults group})
done
env=(--env "KNBD_FUZZ_ITERS=${KNBD_SOAK_FUZZ_ITERS:-50000}"
	--env "KNBD_FUZZ_SECONDS=${KNBD_SOAK_FUZZ_SECONDS:-1800}"
	--env "KNBD_PEER_FUZZ_CASES=${KNBD_SOAK_PEER_FUZZ_CASES:-50000}")
vm=(--smp 4 --mem 3G --timeout $((14400 * rounds)) --out "$out")
if [ "$debug" = 1 ]; then
	cache=${KNBD_CACHE:-/var/cache/knbd}
	scripts/debug-kernel.sh >/dev/null || { echo "soak: debug kernel build failed" >&2; exit 1; }
	rm -rf "$cache/knbd-soak-build" && mkdir -p "$cache/knbd-soak-build" &&
		cp -r Kbuild drivers include "$cache/knbd-soak-build/" &&
		make -s -C "$(scripts/debug-kernel.sh --print-kdir)" M="$cache/knbd-soak-build" modules >/dev/null ||
		{ echo "soak: knbd build for the debug kernel failed" >&2; exit 1; }
	export KNBD_NO_PVH=1
	vm+=(--kernel "$(scripts/debug-kernel.sh --print-kernel)"
		--append "knbd.module=$cache/knbd-soak-build/knbd.ko")
	env+=(--env "KNBD_GROUP_MB=8")
fi
mkdir -p "$out"
scripts/vm-run.sh "${vm[@]}" -- scripts/tests/guest-main.sh --limit $((7200 * rounds)) \
	"${env[@]}" "${tests[@]}" >"$out/soak.log" 2>&1
rc=$?
grep -a -E '^(PASS|FAIL): ' "$out/results.txt" 2>/dev/null
np=$(grep -c '^PASS: ' "$out/results.txt" 2>/dev/null)
nf=$(grep -c '^FAIL: ' "$out/results.txt" 2>/dev/null)
[ "$rc" = 0 ] || [ "${nf:-0}" -gt 0 ] || { echo "soak: VM run exited $rc (see $out/soak.log)"; nf=$((${nf:-0} + 1)); }
echo "${np:-0} passed, ${nf:-0} failed"
[ "${nf:-0}" = 0 ]
