#!/bin/bash
# The I/O engine at scale and under a hostile client (scale_client.py does
# the raw NBD):
#
#   scale_group_up          four members (group_lib.sh), every link up; m1 takes
#                           up to 1100 client connections
#   scale_1000_clients      1000 client connections open at once on m1, next to
#                           its 3 member links; then one 4 KiB READ on each: all
#                           answered with the right bytes (3 in 4 are forwarded:
#                           "stripe 1 2 3 4"); m1's stats count the 1000
#   scale_forward_2000      2000 WRITEs, then 2000 READs, of 4 KiB pipelined over
#                           4 connections to m1 for extents m2 owns, and the
#                           same from m2 for m1's, at the same time; every
#                           member's egress delayed 300 ms (netem) so that the
#                           pieces pile up: during the READs each link had
#                           >= 2000 pieces outstanding at once; all completed,
#                           none failed, the data read is the data written
#   scale_stuck_reader      8 connections pipeline 256 READs of 128 KiB each and
#                           never read a reply, next to an nbd-client running
#                           fio 4k randread: fio's p99 stays within 2x of its
#                           p99 alone (alone measured again after, should the
#                           first run be the noisier one), and the stuck
#                           connections are closed after io_timeout (15 s), not
#                           before
#   scale_teardown          everything removed, knbd unloaded
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export GRP_N=4
# shellcheck source=group_lib.sh
. "$here/group_lib.sh"

PY=$here/scale_client.py
VOL=sv
SIZE=$((64 << 20))
MIB=$((1 << 20))
NCONNS=${KNBD_SCALE_CONNS:-1000}
NFWD=${KNBD_SCALE_PIECES:-2000}
PIDS=()
UP=0
ST_NODE=st
ST_PORT=10811
ST_TIMEOUT=15

cleanup() {
	kill_bg "${PIDS[@]}" 2>/dev/null
	for i in 1 2; do
		grp_in_ns "$i" tc qdisc del dev "knbdte$i" root 2>/dev/null
	done
	nbd_detach /dev/nbd0 >/dev/null 2>&1
	grp_teardown >/dev/null 2>&1
}
trap cleanup EXIT

# wait_pid SECS PID: PID's exit status once it has exited, 124 after SECS
wait_pid() {
	wait_until "$1" pid_gone "$2" || return 124
	wait "$2"
}

need_up() {
	[ "$UP" = 1 ] || { why "group not set up"; return 1; }
}

# py NAME ARGS...: run scale_client.py (bounded), its output in $KNBD_OUT/scale-NAME.txt
py() {
	local name=$1 out
	shift
	out=$KNBD_OUT/scale-$name.txt
	with_timeout 600 python3 "$PY" "$@" >"$out" 2>&1 && return 0
	why "scale_client.py $1: $(grep -E '^FAIL' "$out" | tail -n 1)$(tail -n 2 "$out" | tr '\n' ' ')"
	return 1
}

# peer_field I J KEY: a value from m<I>'s link to m<J>
peer_field() {
	awk -v k="$3" '$1 == k { print $2 }' "$KNBD_CFS/nodes/m$1/peers/m$2/state" 2>/dev/null
}

check_group_up() {
	local i
	grp_up || return 1
	grp_set "$KNBD_CFS/nodes/m1/max_connections" 1100 || return 1
	for i in 1 2; do
		grp_set "$KNBD_CFS/nodes/m$i/queue_depth" 1024 || return 1
	done
	grp_vol_add "$VOL" "$SIZE" 1M "epoch 1; stripe 1 2 3 4" || return 1
	# for the forwarding check: the first half m1's, the second m2's
	grp_vol_add fv $((32 * MIB)) 1M "epoch 1; 0-15 1; 16-31 2" || return 1
	grp_enable_all || return 1
	wait_until 60 grp_links_up || { why "links not up: $(grp_links_summary)"; return 1; }
	UP=1
}

# connections m1 counts as clients in transmission (load monitor, each tick)
m1_clients() {
	awk '$1 == "node" { for (i = 1; i < NF; i++) if ($i == "connections") print $(i + 1) }' \
		"$KNBD_CFS/nodes/m1/stats" 2>/dev/null
}

check_1000_clients() {
	local hold=$KNBD_OUT/scale-hold pid n j
	need_up || return 1
	# 1000 blocks of a known pattern over the first 4 extents (m1..m4)
	py fill pipeline "$(grp_ip 1)" "$GRP_PORT" "$VOL" --conns 2 --count 1000 --op write ||
		return 1
	rm -f "$hold"
	python3 "$PY" many "$(grp_ip 1)" "$GRP_PORT" "$VOL" --count "$NCONNS" --blocks 1000 \
		--hold 4 --hold-file "$hold" --timeout 300 >"$KNBD_OUT/scale-many.txt" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	wait_until 400 test -e "$hold" ||
		{ why "not all $NCONNS connections open: $(tail -n 2 "$KNBD_OUT/scale-many.txt" | tr '\n' ' ')"; return 1; }
	wait_until 3 sh -c "[ \"\$(awk '\$1 == \"node\" { for (i = 1; i < NF; i++) if (\$i == \"connections\") print \$(i + 1) }' $KNBD_CFS/nodes/m1/stats)\" -ge $NCONNS ]"
	n=$(m1_clients)
	grp_links_up 1 || { why "m1's links not all up with $NCONNS clients: $(grp_links_summary)"; return 1; }
	wait_pid 400 "$pid" ||
		{ why "serving the $NCONNS connections: $(grep -E '^FAIL' "$KNBD_OUT/scale-many.txt")"; return 1; }
	grep '^ok:' "$KNBD_OUT/scale-many.txt" | sed 's/^/    /' >&2
	[ "${n:-0}" -ge "$NCONNS" ] || { why "m1 counted ${n:-?} client connections, not $NCONNS"; return 1; }
	j=$(grp_stat 1 "$VOL" forwarded_ios)
	[ "${j:-0}" -ge $((NCONNS / 2)) ] || { why "only ${j:-0} pieces forwarded by m1"; return 1; }
	# each link carried its share of the reads and lost none
	for j in 2 3 4; do
		[ "$(peer_field 1 "$j" failed)" = 0 ] || { why "m1->m$j failed $(peer_field 1 "$j" failed) pieces"; return 1; }
	done
}

check_forward_2000() {
	local i j pids=() rc=0 max half=$((16 * MIB))
	need_up || return 1
	# Each member's replies (and forwarded frames) wait 300 ms in its qdisc:
	# the pieces of both clients pile up on both links.
	modprobe sch_netem 2>/dev/null
	for i in 1 2; do
		grp_in_ns "$i" tc qdisc add dev "knbdte$i" root netem delay 300ms limit 100000 ||
			{ why "netem on m$i"; return 1; }
	done
	for op in write read; do
		pids=()
		# through m1 to m2's half, through m2 to m1's half, at the same time
		python3 "$PY" pipeline "$(grp_ip 1)" "$GRP_PORT" fv --conns 4 --count "$NFWD" \
			--offset "$half" --op "$op" >"$KNBD_OUT/scale-fwd-m1-$op.txt" 2>&1 &
		pids+=($!)
		python3 "$PY" pipeline "$(grp_ip 2)" "$GRP_PORT" fv --conns 4 --count "$NFWD" \
			--offset 0 --op "$op" >"$KNBD_OUT/scale-fwd-m2-$op.txt" 2>&1 &
		pids+=($!)
		PIDS+=("${pids[@]}")
		for i in 0 1; do
			wait_pid 300 "${pids[$i]}" || rc=1
		done
		[ "$rc" = 0 ] || {
			why "$op: $(grep -h '^FAIL' "$KNBD_OUT"/scale-fwd-m*-"$op".txt | tr '\n' ' ')"
			break
		}
		grep -h '^ok:' "$KNBD_OUT"/scale-fwd-m*-"$op".txt | sed "s/^/    $op /" >&2
		for i in 1 2; do
			j=$((3 - i))
			max=$(peer_field "$i" "$j" inflight_max)
			log "    after the ${op}s: m$i->m$j $(tr '\n' ' ' <"$KNBD_CFS/nodes/m$i/peers/m$j/state")"
			# READ frames are small: all of them are out before the first reply
			[ "$op" = write ] || [ "${max:-0}" -ge "$NFWD" ] ||
				{ why "m$i->m$j had at most ${max:-?} pieces outstanding, not $NFWD"; rc=1; }
			[ "$(peer_field "$i" "$j" failed)" = 0 ] || { why "m$i->m$j failed pieces"; rc=1; }
			[ "$(grp_stat "$i" fv errors)" = 0 ] || { why "errors on m$i: $(grp_stat "$i" fv errors)"; rc=1; }
		done
		[ "$rc" = 0 ] || break
	done
	for i in 1 2; do
		grp_in_ns "$i" tc qdisc del dev "knbdte$i" root 2>/dev/null
	done
	return $rc
}

# fio_p99 OUT: 4k randread QD4 on /dev/nbd0 for 12 s; prints "p99_us iops"
fio_p99() {
	with_timeout 120 fio --name=st --filename=/dev/nbd0 --rw=randread --bs=4k --iodepth=4 \
		--ioengine=libaio --direct=1 --time_based --runtime=12 --size=192M \
		--output-format=json --output="$1" >/dev/null 2>&1 || return 1
	fio_json_get "$1" '"%d %d" % (j["read"]["clat_ns"]["percentile"]["99.000000"] / 1000, j["read"]["iops"])'
}

node_io_timeouts() {
	awk '$1 == "latency_us" { for (i = 1; i < NF; i++) if ($i == "io_timeouts") print $(i + 1) }' \
		"$(knbd_node_dir "$ST_NODE")/stats" 2>/dev/null
}

check_stuck_reader() {
	local alone again with pid ready=$KNBD_OUT/scale-stuck-ready t0 before after
	knbd_backing "$KNBD_TMP/st.img" $((256 * MIB)) random || { why "backing"; return 1; }
	knbd_node_create "$ST_NODE" "$ST_PORT" 127.0.0.1 || return 1
	cfs_set "$(knbd_node_dir "$ST_NODE")/io_timeout" "$ST_TIMEOUT" || return 1
	knbd_vol_create "$ST_NODE" v "$KNBD_TMP/st.img" || return 1
	knbd_node_enable "$ST_NODE" || return 1
	nbd_attach /dev/nbd0 v 1 "$ST_PORT" -t 60 || return 1
	alone=$(fio_p99 "$KNBD_OUT/scale-fio-alone.json") || { why "fio alone failed"; return 1; }
	before=$(node_io_timeouts)
	rm -f "$ready"
	python3 "$PY" stuck 127.0.0.1 "$ST_PORT" v --conns 8 --reqs 256 --len $((128 << 10)) \
		--size $((256 * MIB)) --expect-close "$ST_TIMEOUT" --window 10 \
		--ready-file "$ready" >"$KNBD_OUT/scale-stuck.txt" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	wait_until 60 test -e "$ready" || { why "stuck clients not set up: $(tail -n 2 "$KNBD_OUT/scale-stuck.txt")"; return 1; }
	t0=$SECONDS
	with=$(fio_p99 "$KNBD_OUT/scale-fio-stuck.json") || { why "fio next to the stuck clients failed"; return 1; }
	log "    fio 4k randread QD4 p99/iops: alone ${alone% *} us / ${alone#* }, next to 8 stuck clients ${with% *} us / ${with#* } (fio took $((SECONDS - t0)) s of the ${ST_TIMEOUT} s)"
	wait_pid 60 "$pid" || { why "stuck clients: $(grep '^FAIL' "$KNBD_OUT/scale-stuck.txt")"; return 1; }
	grep '^ok:' "$KNBD_OUT/scale-stuck.txt" | sed 's/^/    /' >&2
	after=$(node_io_timeouts)
	[ $((after - before)) -ge 8 ] || { why "io_timeouts counted $((after - before)), want 8"; return 1; }
	if [ "${with% *}" -gt $((2 * ${alone% *})) ]; then
		# TCG is noisy: alone once more, now that the stuck clients are gone
		again=$(fio_p99 "$KNBD_OUT/scale-fio-alone2.json") || { why "fio alone (again) failed"; return 1; }
		log "    fio alone again: ${again% *} us / ${again#* }"
		[ "${again% *}" -le "${alone% *}" ] || alone=$again
	fi
	[ "${with% *}" -le $((2 * ${alone% *})) ] ||
		{ why "fio p99 ${with% *} us next to stuck clients, more than 2x its ${alone% *} us alone"; return 1; }
	# the well-behaved client is still served
	dd if=/dev/nbd0 of=/dev/null bs=4k count=16 iflag=direct status=none ||
		{ why "nbd0 no longer served after the stuck clients"; return 1; }
	nbd_detach /dev/nbd0
}

check_teardown() {
	nbd_detach /dev/nbd0 >/dev/null 2>&1
	local d=$(knbd_node_dir "$ST_NODE")
	if [ -d "$d" ]; then
		with_timeout 60 sh -c 'echo 0 > "$1/enable"' _ "$d" || { why "disabling $ST_NODE hangs"; return 1; }
		rmdir "$d/volumes/v" "$d" || { why "removing $ST_NODE"; return 1; }
	fi
	grp_teardown
}

t_run scale_group_up check_group_up
t_run scale_1000_clients check_1000_clients
t_run scale_forward_2000 check_forward_2000
t_run scale_stuck_reader check_stuck_reader
t_run scale_teardown check_teardown
t_done
