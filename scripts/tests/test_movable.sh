#!/bin/bash
# The connection manager's client safety rule (issue 14): a connection is
# moved only when its client keeps service.  A three-member group
# (group_lib.sh); every client connects to m1 directly, from the root
# namespace (one source address for all of them).
#
#   movable_setup        group up, volumes mv sv pv; on m1: nbd0 = nbd-client -C 2
#                        on mv, nbd1 = nbd-client -C 1 on sv, nbd2 = nbd-client -C 1
#                        on pv with knbd-reconnect (back to m1), and nbdcopy
#                        (libnbd, one connection) on mv held open
#   movable_identity     nbd0's two connections: one client= key, movable=multi;
#                        nbd1, nbd2: movable=no, keys of their own; the nbdcopy
#                        connection (same host and volume as nbd0, another
#                        handshake): movable=no and another key; balance_clients
#                        is safe by default, refuses others (EINVAL, dmesg reason)
#   movable_would_break  manager on at m1, nbd1 busy, nbd0 light: the move that
#                        evens the load is nbd1's only connection: it stays,
#                        would_break grows and moves do not; dmesg names the
#                        client, in fewer lines than the decisions it changed
#                        (once per spell); an nbdcopy loop on m1 meanwhile: no
#                        error
#   movable_all          balance_clients=all: the manager moves nbd1's connection
#   movable_proven       nbd2's connection, drained by the admin, comes back
#                        (knbd-reconnect) with its key and movable=proven; busy,
#                        it is then moved by the manager; nbd2's fio: no error
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=group_lib.sh
. "$here/group_lib.sh"

SIZE=$((64 << 20))
EXT=$((1 << 20))
RECONNECT=$KNBD_REPO/tools/knbd-reconnect
M1=$KNBD_CFS/nodes/m1
# a request caught by a drain waits this long with stock nbd.ko
# shellcheck disable=SC2034 # read by group_lib.sh (nbd-client -t)
GRP_NBD_TIMEOUT=5
PIDS=()
UP=0
HOLD_PID=''

cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	grp_teardown >/dev/null 2>&1
}
trap cleanup EXIT

need_up() { [ "$UP" = 1 ] || { why "group not set up"; return 1; }; }

# tx VOL: m1's client lines of VOL in transmission
# (without the blanks that pad the clients file)
tx() { awk -v v="$1" '$3 == v && / state=transmission / { sub(/ +$/, ""); print }' "$M1/clients" 2>/dev/null; }
# fld NAME LINE...: the value of NAME= on each line
fld() { local n=$1; shift; sed -n "s/.* $n=\([^ ]*\).*/\1/p" <<<"$*"; }
# stat_of NAME: a counter of m1's balance line
stat_of() { sed -n "s/^balance .* $1 \([0-9]*\).*/\1/p" "$M1/stats"; }
conn_gone() { ! grep -q "^$1 " "$M1/clients"; }

setup() {
	local v
	[ -x "$RECONNECT" ] || { why "$RECONNECT missing (make tools)"; return 1; }
	grp_up && grp_enable_all || return 1
	for v in mv sv pv; do
		grp_vol_add "$v" "$SIZE" "$EXT" "epoch 1; stripe 1 2 3" || return 1
	done
	wait_until 30 grp_links_up || { why "links: $(grp_links_summary)"; return 1; }
	grp_attach /dev/nbd0 1 mv 2 && grp_attach /dev/nbd1 1 sv 1 && grp_attach /dev/nbd2 1 pv 1 ||
		return 1
	"$RECONNECT" -d /dev/nbd2 -H "$(grp_ip 1)" -p "$GRP_PORT" -N pv -D 30 \
		>"$KNBD_OUT/movable-reconnect.log" 2>&1 &
	PIDS+=($!)
	# libnbd, one connection, kept open: it blocks on the pipe nobody reads
	# shellcheck disable=SC2216
	nbdcopy --synchronous -C 1 "nbd://$(grp_ip 1):$GRP_PORT/mv" - 2>/dev/null | sleep 300 &
	HOLD_PID=$!
	PIDS+=($!)
	UP=1
}

# identity_ok: the lines of mv, sv and pv as expected (sets why)
identity_ok() {
	local mv sv pv keys multi k1 k2 other
	mv=$(tx mv)
	sv=$(tx sv)
	pv=$(tx pv)
	[ "$(grep -c . <<<"$mv")" = 3 ] || { why "mv: want 3 connections (nbd0 x2, nbdcopy): $mv"; return 1; }
	# the key shared by two lines is nbd0's
	keys=$(fld client "$mv" | sort | uniq -c | sort -rn)
	read -r multi k1 <<<"$(head -n 1 <<<"$keys")"
	read -r _ other <<<"$(sed -n 2p <<<"$keys")"
	[ "$multi" = 2 ] && [ -n "$other" ] ||
		{ why "mv: want two connections of one client and one of another: $mv"; return 1; }
	[ "$(grep " client=$k1 " <<<"$mv" | grep -c " movable=multi$")" = 2 ] ||
		{ why "nbd0's connections not both movable=multi: $mv"; return 1; }
	grep -q " client=$other movable=no$" <<<"$mv" ||
		{ why "the nbdcopy connection not movable=no: $mv"; return 1; }
	[ "$(grep -c . <<<"$sv")" = 1 ] && grep -q " movable=no$" <<<"$sv" ||
		{ why "nbd1 (sv): want one connection, movable=no: $sv"; return 1; }
	[ "$(grep -c . <<<"$pv")" = 1 ] && grep -q " movable=no$" <<<"$pv" ||
		{ why "nbd2 (pv): want one connection, movable=no: $pv"; return 1; }
	k2=$(fld client "$sv")
	[ "$k2" != "$k1" ] && [ "$k2" != "$other" ] && [ "$(fld client "$pv")" != "$k2" ] ||
		{ why "keys not distinct: nbd0 $k1 nbdcopy $other sv $k2 pv $(fld client "$pv")"; return 1; }
}

chk_identity() {
	need_up || return 1
	local mark r rc=0
	wait_until 20 identity_ok || rc=1
	log "m1 clients: $(tr -s ' \n' ' |' <"$M1/clients")"
	# (the nbdcopy held open would make the next one on mv a second
	# connection of the same client)
	kill "$HOLD_PID" 2>/dev/null
	[ "$rc" = 0 ] || return 1
	[ "$(cat "$M1/balance_clients")" = safe ] || { why "balance_clients default $(cat "$M1/balance_clients")"; return 1; }
	mark=$(kmsg_mark movable-cfg)
	for v in none 1 "safe all" ""; do
		r=$(cfs_try "$M1/balance_clients" "$v")
		[ "$r" = EINVAL ] || { why "balance_clients <- '$v': $r, want EINVAL"; return 1; }
	done
	dmesg_has_since "$mark" "balance_clients must be safe or all" ||
		{ why "no reason in dmesg for a refused balance_clients"; return 1; }
	# the members' links carry no client
	grep '(member)' "$M1/clients" | grep -qv ' client=- movable=-$' &&
		{ why "member link lines: $(grep '(member)' "$M1/clients" | head -n 1)"; return 1; }
	grep -q " would_break 0\( \|$\)" "$M1/stats" || { why "stats: $(grep ^balance "$M1/stats")"; return 1; }
}

# bg_fio NAME DEV SECS [FIO ARGS...]: fio in the background, its pid in FIO_PID
bg_fio() {
	local name=$1 dev=$2 secs=$3
	shift 3
	fio --name="$name" --filename="$dev" --bs=4k --ioengine=libaio --direct=1 \
		--time_based --runtime="$secs" --output-format=json \
		--output="$KNBD_OUT/fio-movable-$name.json" "$@" >/dev/null 2>&1 &
	FIO_PID=$!
	PIDS+=($!)
}

fio_wait() {
	with_timeout "$2" tail --pid="$1" -f /dev/null
	wait "$1"
}

# the manager of m1 only, quick to act
manager_on() {
	cfs_set "$M1/balance_hold_ms" 500 && cfs_set "$M1/balance_interval_ms" 1000 &&
		cfs_set "$M1/balance" 1
}

chk_would_break() {
	need_up || return 1
	local id wb0 mv0 mark lpid copies=0 fails=0 light busy said
	id=$(tx sv | awk '{ print $1 }')
	[ -n "$id" ] || { why "no nbd1 connection on m1"; return 1; }
	wait_until 10 eval '[ "$(tx mv | grep -c .)" = 2 ]' ||
		{ why "the nbdcopy held open is still connected: $(tx mv)"; return 1; }
	wb0=$(stat_of would_break)
	mv0=$(stat_of moves)
	mark=$(kmsg_mark movable-wb)
	bg_fio busy1 /dev/nbd1 40 --rw=randread --iodepth=8
	busy=$FIO_PID
	bg_fio light0 /dev/nbd0 40 --rw=randread --iodepth=1 --rate_iops=5
	light=$FIO_PID
	# libnbd clients next to them: they must never see an error
	(
		while :; do
			if with_timeout 60 nbdcopy -C 1 "nbd://$(grp_ip 1):$GRP_PORT/mv" null: 2>/dev/null; then
				echo ok
			else
				echo fail
			fi
		done >"$KNBD_OUT/movable-nbdcopy.log"
	) &
	lpid=$!
	PIDS+=("$lpid")
	manager_on || return 1
	wait_until 40 eval '[ "$(stat_of would_break)" -ge $((wb0 + 3)) ]' ||
		{ why "would_break $wb0 -> $(stat_of would_break) in 40 s: $(grep ^balance "$M1/stats")"; return 1; }
	# a whole copy takes its time on a loaded host: let at least one end
	wait_until 90 eval '[ "$(grep -c . "$KNBD_OUT/movable-nbdcopy.log")" -ge 1 ]'
	kill "$lpid"
	wait "$lpid" 2>/dev/null
	copies=$(grep -c ok "$KNBD_OUT/movable-nbdcopy.log")
	fails=$(grep -c fail "$KNBD_OUT/movable-nbdcopy.log")
	log "would_break $wb0 -> $(stat_of would_break), moves $mv0 -> $(stat_of moves); nbdcopy: $copies ok, $fails failed"
	[ "$(stat_of moves)" = "$mv0" ] || { why "the manager moved a connection: moves $mv0 -> $(stat_of moves)"; return 1; }
	grep -q "^$id " "$M1/clients" || { why "nbd1's connection $id is gone"; return 1; }
	dmesg_has_since "$mark" "not moving client connection [0-9]+ from $(grp_ip 254) " ||
		{ why "no dmesg line names the kept client"; return 1; }
	# said once per over-utilised spell, not once per decision
	said=$(dmesg_since "$mark" | grep -Ec "not moving client connection [0-9]+ from $(grp_ip 254) ")
	[ "$said" -lt $(($(stat_of would_break) - wb0)) ] ||
		{ why "$said lines for $(($(stat_of would_break) - wb0)) decisions the rule changed: one per decision"; return 1; }
	[ "$fails" = 0 ] && [ "$copies" -ge 1 ] || { why "nbdcopy: $copies ok, $fails failed"; return 1; }
	BUSY_PID=$busy
	LIGHT_PID=$light
}

chk_all() {
	need_up || return 1
	local id mv0 mark
	id=$(tx sv | awk '{ print $1 }')
	[ -n "$id" ] || { why "no nbd1 connection on m1"; return 1; }
	mv0=$(stat_of moves)
	mark=$(kmsg_mark movable-all)
	cfs_set "$M1/balance_clients" all || return 1
	[ "$(cat "$M1/balance_clients")" = all ] || { why "balance_clients reads $(cat "$M1/balance_clients")"; return 1; }
	wait_until 20 conn_gone "$id" || { why "nbd1's connection $id not moved in 20 s: $(grep ^balance "$M1/stats")"; return 1; }
	cfs_set "$M1/balance_clients" safe || return 1
	cfs_set "$M1/balance" 0 || return 1
	log "moves $mv0 -> $(stat_of moves)"
	[ "$(stat_of moves)" -gt "$mv0" ] || { why "connection $id went, but not by the manager"; return 1; }
	dmesg_has_since "$mark" "moving client connection $id " || { why "no dmesg line for moving $id"; return 1; }
	# nbd1 has nothing to come back with: its I/O fails; end it
	kill "${BUSY_PID:-}" "${LIGHT_PID:-}" 2>/dev/null
	wait "${BUSY_PID:-}" "${LIGHT_PID:-}" 2>/dev/null
	grp_detach /dev/nbd1
	return 0
}

# back_proven OLD_ID KEY: pv's connection is a new one, same key, proven
back_proven() {
	local l
	l=$(tx pv)
	[ "$(grep -c . <<<"$l")" = 1 ] && ! grep -q "^$1 " <<<"$l" &&
		[ "$(fld client "$l")" = "$2" ] && grep -q " movable=proven$" <<<"$l"
}

chk_proven() {
	need_up || return 1
	local id key mark mv0 rc err id2 light busy
	id=$(tx pv | awk '{ print $1 }')
	key=$(fld client "$(tx pv)")
	[ -n "$id" ] && [ -n "$key" ] || { why "no nbd2 connection on m1"; return 1; }
	mark=$(kmsg_mark movable-proven)
	cfs_set "$M1/drain" "$id" || return 1
	wait_until 30 back_proven "$id" "$key" ||
		{ why "nbd2 not back as client=$key movable=proven: $(tx pv)"; return 1; }
	dmesg_has_since "$mark" "client=$key\) came back after a drain" ||
		{ why "no dmesg line for the client's return"; return 1; }
	id2=$(tx pv | awk '{ print $1 }')
	log "nbd2: connection $id drained, back as $id2 (client=$key, proven)"
	mv0=$(stat_of moves)
	bg_fio busy2 /dev/nbd2 30 --rw=randrw --iodepth=8 --size=16M --verify=crc32c \
		--verify_backlog=64 --verify_fatal=1
	busy=$FIO_PID
	bg_fio light0b /dev/nbd0 30 --rw=randread --iodepth=1 --rate_iops=5
	light=$FIO_PID
	manager_on || return 1
	wait_until 30 eval '[ "$(stat_of moves)" -gt $mv0 ] && conn_gone $id2' ||
		{ why "the manager did not move nbd2's connection $id2: $(grep ^balance "$M1/stats")"; return 1; }
	log "moves $mv0 -> $(stat_of moves): nbd2's $id2 moved"
	fio_wait "$busy" 120
	rc=$?
	fio_wait "$light" 60
	cfs_set "$M1/balance" 0
	err=$(fio_json_get "$KNBD_OUT/fio-movable-busy2.json" 'j["error"]' 2>/dev/null)
	[ "$rc" = 0 ] && [ "$err" = 0 ] || { why "nbd2's fio across the moves: rc $rc error ${err:-?}"; return 1; }
}

t_run movable_setup setup
t_run movable_identity chk_identity
t_run movable_would_break chk_would_break
t_run movable_all chk_all
t_run movable_proven chk_proven
t_done
