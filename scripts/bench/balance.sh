#!/bin/bash
# make bench-balance: the connection manager's balance scenarios, several runs
# each, with stock and (when built) patched nbd.ko, in one QEMU/TCG VM.
#
#   scripts/bench/balance.sh [--out DIR] [--timeout SECS] [--smp N] [--mem SIZE]
#                            [--no-build] [--report-only] [-- GUEST_ARGS...]
#
# Builds knbd.ko, ip_vs_knbd.ko and tools/knbd-reconnect (and the patched
# nbd.ko with "make nbd-patched" when the Makefile has it), runs
# scripts/bench/balance-guest.sh in the VM (GUEST_ARGS: --runs N,
# --scenarios "skew3 heavy4 churn", --nbd "stock patched", --runtime S,
# --nbd-timeout S, ...; see its header) and turns its raw data into
# DIR/bench-balance.txt (the table, also printed), .csv (one row per run),
# .json (runs and summary) and .png (member load over time per scenario),
# with scripts/bench/balance_analyze.py.  --report-only: only the last step,
# on DIR's raw data.  DIR defaults to out/bench-balance; the VM has 2 vCPUs,
# 2G and a timeout of 3600 s (the guest starts no run after timeout - 240 s).
# Documentation/bench.md ("balance") says what every column means.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
PY=/usr/bin/python3	# Debian's (python3-matplotlib), whatever else is on PATH

out='' timeout=3600 smp=2 mem=2G build=1 report_only=0
while [ $# -gt 0 ]; do
	case $1 in
	--out) out=$2; shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	--smp) smp=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--no-build) build=0; shift ;;
	--report-only) report_only=1; shift ;;
	--) shift; break ;;
	-h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "balance.sh: unknown option $1" >&2; exit 2 ;;
	esac
done
args=("$@")
out=${out:-$repo/out/bench-balance}
mkdir -p "$out"
out=$(cd "$out" && pwd)

rc=0
if [ "$report_only" = 0 ]; then
	if [ "$build" = 1 ]; then
		echo "balance.sh: building knbd.ko and tools" >&2
		{ make -C "$repo" && make -C "$repo" tools; } >"$out/build.log" 2>&1 ||
			{ tail -n 20 "$out/build.log" >&2; exit 1; }
		# the patched nbd.ko, where the tree has it; stock only otherwise
		if grep -q '^nbd-patched:' "$repo/Makefile"; then
			make -C "$repo" nbd-patched >>"$out/build.log" 2>&1 ||
				echo "balance.sh: make nbd-patched failed (see build.log): the patched runs will be skipped" >&2
		fi
	fi
	budget_given=0
	for a in "${args[@]}"; do [ "$a" = --budget ] && budget_given=1; done
	[ "$budget_given" = 1 ] || args+=(--budget $((timeout > 600 ? timeout - 240 : timeout * 3 / 4)))
	rm -rf "$out/balance-raw"
	rm -f "$out"/bench-balance.*
	echo "balance.sh: VM (smp $smp, mem $mem, timeout ${timeout}s); console: $out/console.log" >&2
	t0=$SECONDS
	(cd "$repo" && scripts/vm-run.sh --smp "$smp" --mem "$mem" --timeout "$timeout" --out "$out" \
		-- scripts/bench/balance-guest.sh "${args[@]}") >"$out/vm-run.log" 2>&1 || rc=$?
	echo "---- bench-balance (exit $rc, $((SECONDS - t0))s wall; raw data and console in $out)"
	grep -h '^bench:' "$out/balance-raw/notes.txt" 2>/dev/null || true
fi
[ -d "$out/balance-raw" ] || { echo "balance.sh: no raw data in $out/balance-raw" >&2; exit 1; }
"$PY" "$here/balance_analyze.py" "$out/balance-raw" --out "$out" || rc=$?
exit "$rc"
