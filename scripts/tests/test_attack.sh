#!/bin/bash
# Bounded memory and bounded time under hostile clients (attack_client.py does
# the raw NBD), on one node with max_inflight_mb 64, io_timeout 10 s,
# handshake_timeout 6 s, next to a well-behaved nbd-client:
#
#   attack_setup            node, a 128 MiB volume (random bytes, so that fio's
#                           writes take no new tmpfs pages), nbd-client -C 2
#   attack_flood            fio randrw crc32c verify on /dev/nbd0 throughout
#                           (rounds of 8 MiB, each must pass);
#                           first 40 connections that each send the header of a
#                           32 MiB WRITE and then 1 byte/s of its payload: all
#                           closed io_timeout after their header (not before,
#                           not more than 5 s late), MemAvailable falls by less
#                           than the documented bound for them (max_inflight_mb
#                           + 40 x 1 MiB + 32 MiB of sockets and noise; pages
#                           at the header would be 1280 MiB); then 4 connections that
#                           each pipeline 3 READs of 32 MiB and read 1 byte/s:
#                           closed io_timeout after their READs, MemAvailable
#                           under max_inflight_mb + 4 x 32 MiB (their first
#                           READs) + 64 MiB; the budget's peak never over
#                           max_inflight_mb and some READs had to wait for it;
#                           fio completes without an error; io_timeouts counts
#                           the 44
#   attack_slowloris        3 connections trickle an option's data 1 byte/s:
#                           closed handshake_timeout after they connected
#                           (not before, not 5 s late), handshake_timeouts
#                           counts them
#   attack_idle             idle_timeout 0: a connection silent for 8 s stays
#                           and is served; idle_timeout 4: one is closed 4 s
#                           after its last request, idle_closes counts it
#   attack_attrs            the new attributes refuse out-of-range values
#   attack_teardown         everything removed, knbd unloaded
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

PY=$here/attack_client.py
N=atk
PORT=10812
SIZE=$((128 << 20))
MIB=$((1 << 20))
BUDGET_MB=64
IO_TIMEOUT=10
HS_TIMEOUT=6
PIDS=()

cleanup() {
	kill_bg "${PIDS[@]}" 2>/dev/null
	nbd_detach /dev/nbd0 >/dev/null 2>&1
}
trap cleanup EXIT

# node_stat KEY: a counter from the node's stats, whatever its line
node_stat() {
	awk -v k="$1" '{ for (i = 1; i < NF; i++) if ($i == k) { print $(i + 1); exit } }' \
		"$(knbd_node_dir "$N")/stats" 2>/dev/null
}

# wait_pid SECS PID: PID's exit status once it has exited, 124 after SECS
wait_pid() {
	wait_until "$1" pid_gone "$2" || return 124
	wait "$2"
}

chk_setup() {
	local d
	knbd_load || return 1
	knbd_backing "$KNBD_TMP/atk.img" "$SIZE" random || { why "backing"; return 1; }
	knbd_node_create "$N" "$PORT" 127.0.0.1 || return 1
	d=$(knbd_node_dir "$N")
	cfs_set "$d/max_inflight_mb" "$BUDGET_MB" || return 1
	cfs_set "$d/io_timeout" "$IO_TIMEOUT" || return 1
	cfs_set "$d/handshake_timeout" "$HS_TIMEOUT" || return 1
	[ "$(cfs_get "$d/idle_timeout")" = 0 ] || { why "idle_timeout default $(cfs_get "$d/idle_timeout"), want 0"; return 1; }
	knbd_vol_create "$N" v "$KNBD_TMP/atk.img" || return 1
	knbd_node_enable "$N" || return 1
	nbd_attach /dev/nbd0 v 2 "$PORT" -t 60 || return 1
}

# attacker NAME ARGS...: run attack_client.py NAME in the background, then wait
# for it (bounded); its "ok:" lines go to the log
attacker() {
	local name=$1
	local pid ready=$KNBD_OUT/attack-$name.ready
	shift
	rm -f "$ready"
	python3 "$PY" "$name" 127.0.0.1 "$PORT" "$@" --ready-file "$ready" \
		>"$KNBD_OUT/attack-$name.txt" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	wait_until 90 test -e "$ready" && sleep 3
	log "    $name, 3 s in: $(grep '^budget' "$(knbd_node_dir "$N")/stats")"
	wait_pid 90 "$pid"
	local rc=$?
	grep -h '^ok:' "$KNBD_OUT/attack-$name.txt" | sed 's/^/    /' >&2
	[ "$rc" = 0 ] || why "$name: $(grep -h '^FAIL' "$KNBD_OUT/attack-$name.txt" | head -n 2)"
	return $rc
}

# fio_loop STOPFILE: fio randrw crc32c write+verify rounds on /dev/nbd0 until
# STOPFILE exists; each round's output in fio-attack-N.txt
fio_loop() {
	local i=0
	while [ ! -e "$1" ]; do
		i=$((i + 1))
		with_timeout 120 fio --name=atk --filename=/dev/nbd0 --rw=randrw --bs=4k \
			--iodepth=8 --ioengine=libaio --direct=1 --size=8M --offset=$(((i % 8) * 8))M \
			--verify=crc32c --do_verify=1 --verify_fatal=1 \
			>"$KNBD_OUT/fio-attack-$i.txt" 2>&1 || return 1
	done
}

chk_flood() {
	local fio_pid t0 before after out f n=0 stop=$KNBD_OUT/attack-fio.stop
	rm -f "$stop" "$KNBD_OUT"/fio-attack-*.txt
	before=$(node_stat io_timeouts)
	fio_loop "$stop" &
	fio_pid=$!
	PIDS+=("$fio_pid")
	t0=$SECONDS
	# trickled WRITEs: pages come with the bytes, so the 40 pin little
	attacker trickle v --conns 40 --len $((32 * MIB)) --expect-close "$IO_TIMEOUT" \
		--mem-bound $((BUDGET_MB + 40 + 32)) || { touch "$stop"; return 1; }
	# slow readers: their first READs (4 x 32 MiB) and max_inflight_mb more
	attacker slowread v --conns 4 --reqs 3 --len $((32 * MIB)) --expect-close "$IO_TIMEOUT" \
		--mem-bound $((BUDGET_MB + 4 * 32 + 64)) || { touch "$stop"; return 1; }
	log "    after: $(grep '^budget' "$(knbd_node_dir "$N")/stats")"
	touch "$stop"
	pid_gone "$fio_pid" && log "    (fio stopped before the attacks did)"
	wait_pid 150 "$fio_pid" || { why "fio next to the attackers failed: $(grep -hiE 'verify|err=|error|with_timeout' "$KNBD_OUT"/fio-attack-*.txt | head -n 3)"; return 1; }
	for f in "$KNBD_OUT"/fio-attack-*.txt; do
		grep -q 'err= 0' "$f" || { why "fio reported errors: $(grep 'err=' "$f")"; return 1; }
		n=$((n + 1))
	done
	log "    fio randrw verify next to the attackers: $n rounds of 8 MiB, none failed, in $((SECONDS - t0)) s"
	after=$(node_stat io_timeouts)
	[ $((after - before)) -ge 44 ] || { why "io_timeouts counted $((after - before)), want 44"; return 1; }
	out=$(node_stat peak)
	[ "${out:-x}" -le $((BUDGET_MB * MIB)) ] 2>/dev/null ||
		{ why "budget peak ${out:-?} bytes, over max_inflight_mb $BUDGET_MB"; return 1; }
	[ "$(node_stat waits)" -gt 0 ] || { why "no request waited for the budget"; return 1; }
	if [ "$(node_stat used)" != 0 ] || [ "$(node_stat floor)" != 0 ]; then
		why "budget not back to 0 once the attackers are gone: $(grep '^budget' "$(knbd_node_dir "$N")/stats")"
		return 1
	fi
	# the well-behaved client is still served
	dd if=/dev/nbd0 of=/dev/null bs=1M count=4 iflag=direct status=none ||
		{ why "nbd0 no longer served after the attackers"; return 1; }
}

chk_slowloris() {
	local before after
	before=$(node_stat handshake_timeouts)
	with_timeout 60 python3 "$PY" slowloris 127.0.0.1 "$PORT" --conns 3 \
		--expect-close "$HS_TIMEOUT" >"$KNBD_OUT/attack-slowloris.txt" 2>&1 ||
		{ why "$(grep '^FAIL' "$KNBD_OUT/attack-slowloris.txt")"; return 1; }
	grep '^ok:' "$KNBD_OUT/attack-slowloris.txt" | sed 's/^/    /' >&2
	after=$(node_stat handshake_timeouts)
	[ $((after - before)) -eq 3 ] || { why "handshake_timeouts counted $((after - before)), want 3"; return 1; }
}

chk_idle() {
	local d before after
	d=$(knbd_node_dir "$N")
	before=$(node_stat idle_closes)
	with_timeout 60 python3 "$PY" idle 127.0.0.1 "$PORT" v --expect-close 0 --hold 8 \
		>"$KNBD_OUT/attack-idle0.txt" 2>&1 ||
		{ why "$(grep '^FAIL' "$KNBD_OUT/attack-idle0.txt")"; return 1; }
	grep '^ok:' "$KNBD_OUT/attack-idle0.txt" | sed 's/^/    /' >&2
	cfs_set "$d/idle_timeout" 4 || return 1
	with_timeout 60 python3 "$PY" idle 127.0.0.1 "$PORT" v --expect-close 4 \
		>"$KNBD_OUT/attack-idle4.txt" 2>&1 ||
		{ why "$(grep '^FAIL' "$KNBD_OUT/attack-idle4.txt")"; cfs_set "$d/idle_timeout" 0; return 1; }
	grep '^ok:' "$KNBD_OUT/attack-idle4.txt" | sed 's/^/    /' >&2
	cfs_set "$d/idle_timeout" 0 || return 1
	after=$(node_stat idle_closes)
	[ $((after - before)) -ge 1 ] || { why "idle_closes counted $((after - before)), want 1"; return 1; }
}

chk_attrs() {
	local d e r
	d=$(knbd_node_dir "$N")
	for e in "max_inflight_mb 0" "max_inflight_mb 31" "max_inflight_mb 1048577" \
		"handshake_timeout 0" "handshake_timeout 3601" "idle_timeout 604801" \
		"idle_timeout x"; do
		r=$(cfs_try "$d/${e% *}" "${e#* }")
		[ "$r" = EINVAL ] || { why "${e% *}=${e#* } gave $r, want EINVAL"; return 1; }
	done
	cfs_set "$d/max_inflight_mb" 32 || return 1
	[ "$(cfs_get "$d/max_inflight_mb")" = 32 ] || { why "max_inflight_mb reads $(cfs_get "$d/max_inflight_mb")"; return 1; }
}

chk_teardown() {
	nbd_detach /dev/nbd0 || return 1
	with_timeout 60 sh -c 'echo 0 > "$1/enable"' _ "$(knbd_node_dir "$N")" || { why "disabling $N hangs"; return 1; }
	knbd_unload
}

t_run attack_setup chk_setup
if [ "$T_NFAIL" -eq 0 ]; then
	t_run attack_flood chk_flood
	t_run attack_slowloris chk_slowloris
	t_run attack_idle chk_idle
	t_run attack_attrs chk_attrs
fi
t_run attack_teardown chk_teardown
t_done
