#!/bin/bash
# Host side of the knbd benchmarks: build knbd.ko, run a guest benchmark in a
# QEMU/TCG VM (scripts/vm-run.sh) and print its summary lines.
#
#   scripts/bench/run.sh [--out DIR] [--timeout SECS] [--smp N] [--mem SIZE]
#                        [--bench forward-latency] [-- BENCH_ARGS...]
#
# Default bench: forward-latency (scripts/bench/forward-latency.sh; see its
# header for BENCH_ARGS such as --runtime 12 --qd "1 16").  Results: the
# "bench:" lines on stdout, the full console and fio JSON in DIR.
# Note: TCG numbers are only good for comparing runs of the same VM (ratios),
# not as absolute figures.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

out='' timeout=900 smp=2 mem=2G bench=forward-latency
while [ $# -gt 0 ]; do
	case $1 in
	--out) out=$2; shift 2 ;;
	--timeout) timeout=$2; shift 2 ;;
	--smp) smp=$2; shift 2 ;;
	--mem) mem=$2; shift 2 ;;
	--bench) bench=$2; shift 2 ;;
	--) shift; break ;;
	-h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
	esac
done
script=scripts/bench/$bench.sh
[ -f "$repo/$script" ] || { echo "run.sh: no $script" >&2; exit 2; }
out=${out:-$(mktemp -d "${TMPDIR:-/tmp}/knbd-bench.XXXXXX")}
mkdir -p "$out"

echo "run.sh: building knbd.ko" >&2
make -C "$repo" >"$out/build.log" 2>&1 || { tail -n 20 "$out/build.log" >&2; exit 1; }

rc=0
(cd "$repo" && scripts/vm-run.sh --smp "$smp" --mem "$mem" --timeout "$timeout" --out "$out" \
	-- "$script" "$@") >"$out/vm-run.log" 2>&1 || rc=$?
echo "---- $bench (smp $smp, exit $rc; console: $out/console.log)"
if [ -s "$out/bench-$bench.txt" ]; then
	grep '^bench:' "$out/bench-$bench.txt" | grep -v ' stats: '
else
	grep '^bench:' "$out/console.log" 2>/dev/null || tail -n 20 "$out/vm-run.log"
fi
exit "$rc"
