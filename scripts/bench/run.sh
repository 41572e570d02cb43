#!/bin/bash
# Host side of the knbd benchmarks: build knbd.ko, run a guest benchmark in a
# QEMU/TCG VM (scripts/vm-run.sh) and print its summary.
#
#   scripts/bench/run.sh [--out DIR] [--timeout SECS] [--smp N] [--mem SIZE]
#                        [--bench compare|forward-latency] [--no-build] [-- BENCH_ARGS...]
#
# compare (default; "make bench"): knbd vs nvmet-tcp, nbd-server, nbdkit,
#   qemu-nbd and loop (scripts/bench/compare.sh; BENCH_ARGS such as --quick,
#   --servers "knbd nvmet-tcp", --jobs, --conns, --backings, --runtime; see its
#   header and Documentation/bench.md).  VM: 4 vCPUs, 4G; timeout 3600 s
#   (1200 with --quick); the guest stops starting runs 150 s before it and
#   still reports.  Results in DIR: bench-compare.txt (the table, also
#   printed), bench-compare.json, bench-compare.png (drawn here on the host),
#   compare-raw/ (fio JSON, /proc/stat snapshots), console.log.
# forward-latency ("make bench-forward"): local vs forwarded 4k latency in a
#   3-member group (scripts/bench/forward-latency.sh; --runtime, --qd, --conns);
#   VM: 2 vCPUs, 2G, timeout 900 s.
# DIR defaults to out/bench-BENCH in the repo.
# Note: TCG numbers are only good for comparing runs of the same VM (ratios),
# not as absolute figures.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
PY=/usr/bin/python3	# Debian's (python3-matplotlib), whatever else is on PATH

out='' timeout='' smp='' mem='' bench=compare build=1
while [ $# -gt 0 ]; do
	case $1 in
	--out) out=$2; shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	--smp) smp=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--bench) bench=$2; shift 2 ;;
	--no-build) build=0; shift ;;
	--) shift; break ;;
	-h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
	esac
done
script=scripts/bench/$bench.sh
[ -f "$repo/$script" ] || { echo "run.sh: no $script" >&2; exit 2; }
args=("$@")
case $bench in
compare)
	smp=${smp:-4} mem=${mem:-4G}
	if [ -z "$timeout" ]; then
		timeout=3600
		for a in "${args[@]}"; do [ "$a" = --quick ] && timeout=1200; done
	fi
	budget_given=0
	for a in "${args[@]}"; do [ "$a" = --budget ] && budget_given=1; done
	[ "$budget_given" = 1 ] || args+=(--budget $((timeout > 600 ? timeout - 150 : timeout * 3 / 4)))
	;;
*) smp=${smp:-2} mem=${mem:-2G} timeout=${timeout:-900} ;;
esac
out=${out:-$repo/out/bench-$bench}
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out/bench-$bench.txt" "$out/bench-$bench.json" "$out/bench-$bench.png"

if [ "$build" = 1 ]; then
	echo "run.sh: building knbd.ko" >&2
	make -C "$repo" >"$out/build.log" 2>&1 || { tail -n 20 "$out/build.log" >&2; exit 1; }
fi
[ -f "$repo/knbd.ko" ] || { echo "run.sh: no knbd.ko (run make)" >&2; exit 1; }

echo "run.sh: $bench in a VM (smp $smp, mem $mem, timeout ${timeout}s); console: $out/console.log" >&2
t0=$SECONDS
rc=0
(cd "$repo" && scripts/vm-run.sh --smp "$smp" --mem "$mem" --timeout "$timeout" --out "$out" \
	-- "$script" "${args[@]}") >"$out/vm-run.log" 2>&1 || rc=$?
wall=$((SECONDS - t0))
echo "---- $bench (smp $smp, exit $rc, ${wall}s wall; results and console in $out)"

if [ "$bench" = compare ]; then
	# The guest writes the table and JSON; if it died half-way, make them
	# here from what it left in compare-raw/.  The chart is always drawn here.
	if [ ! -s "$out/bench-compare.json" ] && [ -s "$out/compare-raw/runs.jsonl" ]; then
		echo "run.sh: the guest left no report; building it from $out/compare-raw" >&2
		"$PY" "$here/compare_report.py" "$out/compare-raw" --json "$out/bench-compare.json" \
			--txt "$out/bench-compare.txt" || true
	fi
	if [ -s "$out/bench-compare.json" ]; then
		"$PY" "$here/compare_report.py" --from-json "$out/bench-compare.json" --txt /dev/null \
			--png "$out/bench-compare.png" && echo "chart: $out/bench-compare.png" ||
			echo "run.sh: no chart (python3-matplotlib missing? scripts/deps.sh)" >&2
	fi
fi
if [ -s "$out/bench-$bench.txt" ]; then
	grep -v ' stats: ' "$out/bench-$bench.txt"
else
	grep '^bench:' "$out/console.log" 2>/dev/null || tail -n 20 "$out/vm-run.log"
fi
exit "$rc"
