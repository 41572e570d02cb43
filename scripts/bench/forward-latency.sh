#!/bin/bash
# knbd partitioned volumes: latency of forwarded vs local I/O.  A GUEST script:
#
#   scripts/vm-run.sh --smp 2 --timeout 900 --out OUT -- scripts/bench/forward-latency.sh [opts]
#   (or scripts/bench/run.sh on the host, which builds the module first)
#
# Builds the 3-member group of scripts/tests/group_lib.sh (one kernel, one
# network namespace per member, a bridge; the client in the root namespace),
# with a 256 MiB volume in 1 MiB extents routed by explicit ranges:
#   extents 0-84 -> m1 (A), 85-169 -> m2 (B), 170-255 -> m3 (C)
# attaches nbd-client to A and runs fio 4k randread at QD1 and QD16 over
#   local:     [0, 64 MiB)         all owned by A: served from A's own file
#   forwarded: [128 MiB, 192 MiB)  owned by B and C: every request is one piece
#                                  forwarded over A's member link
# and prints, per queue depth, a line
#   bench: local 4k randread qd1: iops=... mean=...us p99=...us ; forwarded: iops=... mean=...us p99=...us; latency ratio forwarded/local = X.XX
# (ratio of mean completion latencies; fio clat).  Both regions are written
# once beforehand so the reads hit allocated data.  Raw fio JSON and the
# summary land in $KNBD_OUT (bench-*.json, bench-forward-latency.txt).
#
# Options: --runtime SECS (per fio run, default 12)  --conns N (nbd-client -C, default 1)
#          --qd "1 16" (queue depths)  --no-prefill
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../tests/group_lib.sh
. "$here/../tests/group_lib.sh"

runtime=12 conns=1 qds="1 16" prefill=1
while [ $# -gt 0 ]; do
	case $1 in
	--runtime) runtime=$2; shift 2 ;;
	--conns) conns=$2; shift 2 ;;
	--qd) qds=$2; shift 2 ;;
	--no-prefill) prefill=0; shift ;;
	*) echo "forward-latency: unknown option $1" >&2; exit 2 ;;
	esac
done

VOL=bv
MIB=$((1 << 20))
LOCAL_OFF=0 LOCAL_SIZE=$((64 * MIB))
FWD_OFF=$((128 * MIB)) FWD_SIZE=$((64 * MIB))
RES=$KNBD_OUT/bench-forward-latency.txt

die() {
	echo "bench: ERROR: $*" | tee -a "$RES"
	exit 1
}
trap 'grp_teardown >/dev/null 2>&1' EXIT
: >"$RES"

t0=$SECONDS
grp_up || die "setup: $T_WHY"
grp_vol_add "$VOL" $((256 * MIB)) 1M "epoch 1; 0-84 1; 85-169 2; 170-255 3" || die "volume: $T_WHY"
grp_enable_all || die "enable: $T_WHY"
wait_until 30 grp_links_up || die "links not up: $(grp_links_summary)"
grp_attach /dev/nbd0 1 "$VOL" "$conns" || die "attach: $T_WHY"
log "group up in $((SECONDS - t0))s; $(grp_links_summary)"

if [ "$prefill" = 1 ]; then
	for r in "$LOCAL_OFF:$LOCAL_SIZE" "$FWD_OFF:$FWD_SIZE"; do
		with_timeout 600 fio --name=prefill --filename=/dev/nbd0 --rw=write --bs=1M --iodepth=8 \
			--ioengine=libaio --direct=1 --offset="${r%:*}" --size="${r#*:}" >/dev/null 2>&1 ||
			die "prefill of ${r#*:} bytes at ${r%:*} failed"
	done
	log "prefilled in $((SECONDS - t0))s"
fi

# run_fio NAME OFFSET SIZE QD: prints "iops mean_us p99_us"
run_fio() {
	local js=$KNBD_OUT/bench-$1.json
	with_timeout $((runtime + 120)) fio --name="$1" --filename=/dev/nbd0 --rw=randread --bs=4k \
		--iodepth="$4" --ioengine=libaio --direct=1 --offset="$2" --size="$3" \
		--time_based --runtime="$runtime" --ramp_time=2 --norandommap --randrepeat=0 \
		--output-format=json >"$js" 2>&1 || return 1
	python3 - "$js" <<'PY'
import json, sys
t = open(sys.argv[1]).read()
j = json.loads(t[t.index("{"):])["jobs"][0]
assert j["error"] == 0, "fio error %d" % j["error"]
r = j["read"]
c = r["clat_ns"]
print("%.0f %.1f %.1f" % (r["iops"], c["mean"] / 1000, c["percentile"]["99.000000"] / 1000))
PY
}

fwd() { grp_stat 1 "$VOL" forwarded_ios; }

# inflight_sampler FILE: until FILE.stop exists, sample the pieces in flight
# on m1's links to m2 and m3 (and the client connection's inflight) every
# 0.2 s; writes "max_m2 max_m3 max_client" to FILE at the end
inflight_sampler() {
	local f=$1 k v m2=0 m3=0 mc=0 line x
	while [ ! -e "$f.stop" ]; do
		while read -r k v; do
			[ "$k" = inflight ] && [ "$v" -gt "$m2" ] && m2=$v
		done <"$KNBD_CFS/nodes/m1/peers/m2/state"
		while read -r k v; do
			[ "$k" = inflight ] && [ "$v" -gt "$m3" ] && m3=$v
		done <"$KNBD_CFS/nodes/m1/peers/m3/state"
		while read -r line; do
			case $line in *" $VOL state="*)
				x=${line##*inflight=}
				x=${x%% *}
				[ "$x" -gt "$mc" ] && mc=$x ;;
			esac
		done <"$KNBD_CFS/nodes/m1/clients"
		sleep 0.2
	done
	echo "$m2 $m3 $mc" >"$f"
}

for qd in $qds; do
	f0=$(fwd)
	l=$(run_fio "local-qd$qd" "$LOCAL_OFF" "$LOCAL_SIZE" "$qd") || die "fio local qd$qd failed (see bench-local-qd$qd.json)"
	f1=$(fwd)
	smp=$KNBD_TMP/sampler-$qd
	rm -f "$smp" "$smp.stop"
	inflight_sampler "$smp" &
	spid=$!
	f=$(run_fio "fwd-qd$qd" "$FWD_OFF" "$FWD_SIZE" "$qd") || die "fio forwarded qd$qd failed (see bench-fwd-qd$qd.json)"
	touch "$smp.stop"
	wait "$spid"
	f2=$(fwd)
	read -r im2 im3 imc <"$smp"
	read -r li lm lp <<<"$l"
	read -r wi fm fp <<<"$f"
	ratio=$(awk -v a="$fm" -v b="$lm" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
	line="bench: local 4k randread qd$qd: iops=$li mean=${lm}us p99=${lp}us ; forwarded: iops=$wi mean=${fm}us p99=${fp}us; latency ratio forwarded/local = $ratio"
	echo "$line" | tee -a "$RES"
	echo "bench: qd$qd pieces forwarded by A: during local run $((f1 - f0)) (want 0), during forwarded run $((f2 - f1));" \
		"most in flight seen (0.2 s samples): client conn $imc, link A->B $im2, link A->C $im3" | tee -a "$RES"
done
for i in 1 2 3; do
	echo "bench: m$i stats: $(tr '\n' ' ' <"$KNBD_CFS/nodes/m$i/volumes/$VOL/stats")" >>"$RES"
done
log "bench done in $((SECONDS - t0))s"
exit 0
