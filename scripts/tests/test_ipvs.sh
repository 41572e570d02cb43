#!/bin/bash
# Client allocation over a group address: the IPVS scheduler ip_vs_knbd
# (drivers/knbd/ip_vs_knbd.c) and IPVS round robin in front of three members
# (group_lib.sh; the virtual service 192.0.2.100:10809 in the root namespace,
# NAT: ipvs_lib.sh).  Volume gv (64 MiB, 1 MiB extents, stripe 1 2 3) on
# every member; volume lv on m1 only (to make m1 busy).  The connection
# manager (balance) is off: this file tests where new connections go.
#
#   ipvs_module               ip_vs_knbd loads (after knbd), registers
#                             scheduler "knbd" (ipvsadm -A -s knbd works),
#                             pins knbd, unloads, reloads; without it
#                             "-s knbd" fails
#   ipvs_group_up             three members, links up, balance off
#   ipvs_rr_spread            -s rr: nbd-client -C 6 through the VIP lands
#                             2/2/2, 8 MiB written and read back through it
#   ipvs_knbd_burst           -s knbd, all members idle: the same burst of 6
#                             connections lands 2/2/2, I/O works
#   ipvs_knbd_avoids_busy     m1 busy (fio on a client attached to m1
#                             directly): 4 new connections through the VIP,
#                             none on m1, both m2 and m3 used
#   ipvs_knbd_spreads_equal   fio stopped, loads equal (idle): 6 new
#                             connections land 2/2/2
#   ipvs_unknown_fallback     real servers no knbd node knows: alone, they
#                             get least-connection (2/2) and a log line;
#                             next to a known member, they get nothing
#   ipvs_rmmod_in_use         rmmod ip_vs_knbd refused while a service uses
#                             it; works after ipvsadm -E -s rr or -D
#   ipvs_teardown             everything removed, modules unloaded
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=group_lib.sh
. "$here/group_lib.sh"
# shellcheck source=ipvs_lib.sh
. "$here/ipvs_lib.sh"

VOL=gv
SIZE=$((64 << 20))
EXT=$((1 << 20))
LVOL=lv			# on m1 only
PIDS=()
UP=0
FIO_PID=''

cleanup() {
	kill_bg "${PIDS[@]}" 2>/dev/null
	ipvs_holder_stop
	ipvs_extra_down
	ipvs_down
	grp_teardown >/dev/null 2>&1
}
trap cleanup EXIT

need_up() { [ "$UP" = 1 ] || { why "group not set up"; return 1; }; }

# node_load I: member I's own load figure (weighted ops/s), from its stats
node_load() {
	local l=''
	read -r _ _ _ l _ <"$KNBD_CFS/nodes/m$1/stats" 2>/dev/null
	echo "${l:-?}"
}
loads() { echo "m1 $(node_load 1) m2 $(node_load 2) m3 $(node_load 3)"; }
# load_ge I X / load_lt I X: compare member I's load with X
load_ge() { awk -v a="$(node_load "$1")" -v b="$2" 'BEGIN { exit !(a != "?" && a + 0 >= b + 0) }'; }
load_lt() { awk -v a="$(node_load "$1")" -v b="$2" 'BEGIN { exit !(a != "?" && a + 0 < b + 0) }'; }

# vip_attach DEV VOL CONNS: nbd-client through the group address
vip_attach() {
	local out
	out=$(with_timeout 120 nbd-client "$IPVS_VIP" "$IPVS_PORT" "$1" -N "$2" -C "$3" \
		-t "$GRP_NBD_TIMEOUT" 2>&1) || {
		why "nbd-client $IPVS_VIP $1 -N $2 -C $3 failed: $(echo "$out" | tail -n 3)"
		return 1
	}
	GRP_DEVS+=("$1")
	wait_until 20 nbd_connected "$1" || { why "$1 has size 0 after nbd-client"; return 1; }
}

# members_clients VOL: "a/b/c" client connections on VOL at m1..m3
members_clients() {
	echo "$(clients_count m1 "$1")/$(clients_count m2 "$1")/$(clients_count m3 "$1")"
}

spread_is() { [ "$(ipvs_spread)" = "$1" ]; }

# io_check DEV: 8 MiB of random data written and read back (direct I/O)
io_check() {
	local f=$KNBD_TMP/ipvs-io.bin want got
	head -c $((8 << 20)) /dev/urandom >"$f" || { why "no random data"; return 1; }
	want=$(md5sum <"$f" | cut -d' ' -f1)
	dev_write "$1" $((3 * EXT)) "$f" || { why "8 MiB write through $1 failed"; return 1; }
	got=$(dev_md5 "$1" $((3 * EXT)) $((8 << 20)))
	[ "$got" = "$want" ] || { why "8 MiB read back through $1: md5 '$got', want $want"; return 1; }
}

# hold_n N MODE [EXPORT]: N connections through the VIP, one after the
# other (GAP s apart); their members, space-separated, in HELD
GAP=0.5
hold_n() {
	local n=$1 k m
	shift
	HELD=''
	for ((k = 0; k < n; k++)); do
		ipvs_hold "$@" || return 1
		m=$(ipvs_conn_member "$IPVS_HOLD_PORT")
		HELD="$HELD $m"
		log "connection $((k + 1)) (client port $IPVS_HOLD_PORT) -> $m; loads $(loads)"
		_nap "$GAP"
	done
	HELD=${HELD# }
}

# count_of X: how many of HELD are X
count_of() { tr ' ' '\n' <<<"$HELD" | grep -cx "$1"; }

# ------------------------------------------------------------------ checks --

chk_module() {
	local out mark
	knbd_load || return 1
	modprobe ip_vs 2>/dev/null || { why "modprobe ip_vs failed"; return 1; }
	[ -f "$IPVS_KO" ] || { why "$IPVS_KO missing (run make first)"; return 1; }
	mark=$(kmsg_mark ipvs-module)
	out=$(insmod "$IPVS_KO" 2>&1) || { why "insmod $IPVS_KO: $out"; return 1; }
	ipvs_knbd_loaded || { why "/sys/module/ip_vs_knbd missing after insmod"; return 1; }
	dmesg_has_since "$mark" 'IPVS: \[knbd\] scheduler registered' || { why "no 'scheduler registered' in dmesg"; return 1; }
	[ -e /sys/module/knbd/holders/ip_vs_knbd ] || { why "ip_vs_knbd does not hold knbd"; return 1; }
	if rmmod knbd 2>/dev/null || ! knbd_loaded; then
		why "rmmod knbd succeeded while ip_vs_knbd uses it"
		return 1
	fi
	out=$(ipvsadm -A -t "$(ipvs_svc)" -s knbd 2>&1) || { why "ipvsadm -A -s knbd: $out"; return 1; }
	ipvsadm -Ln | grep -qE "^TCP +$(ipvs_svc) knbd" || { why "service not listed with knbd: $(ipvsadm -Ln | tr '\n' ' ')"; return 1; }
	ipvsadm -D -t "$(ipvs_svc)" || { why "ipvsadm -D failed"; return 1; }
	ipvs_unload_knbd || return 1
	dmesg_has_since "$mark" 'IPVS: \[knbd\] scheduler unregistered' || { why "no 'scheduler unregistered' in dmesg"; return 1; }
	# without the module there is no such scheduler (it is not in /lib/modules)
	if ipvsadm -A -t "$(ipvs_svc)" -s knbd >/dev/null 2>&1; then
		ipvsadm -D -t "$(ipvs_svc)" 2>/dev/null
		why "ipvsadm -A -s knbd succeeded without ip_vs_knbd loaded"
		return 1
	fi
	out=$(insmod "$IPVS_KO" 2>&1) || { why "second insmod: $out"; return 1; }
	ipvs_unload_knbd || return 1
	knbd_unload || return 1
}

chk_up() {
	local i b=$KNBD_TMP/ipvs-lv.img
	grp_up || return 1
	for ((i = 1; i <= GRP_N; i++)); do
		if [ -e "$KNBD_CFS/nodes/m$i/balance" ]; then
			grp_set "$KNBD_CFS/nodes/m$i/balance" 0 || return 1
		fi
	done
	grp_vol_add "$VOL" "$SIZE" "$EXT" "epoch 1; stripe 1 2 3" || return 1
	knbd_backing "$b" $((256 << 20)) || { why "cannot create $b"; return 1; }
	knbd_vol_create m1 "$LVOL" "$b" || return 1
	grp_enable_all || return 1
	wait_until 30 grp_links_up || { why "links not all up after 30 s: $(grp_links_summary)"; return 1; }
	UP=1
}

chk_rr() {
	need_up || return 1
	ipvs_up rr || return 1
	vip_attach /dev/nbd0 "$VOL" 6 || return 1
	log "rr: IPVS active $(ipvs_spread), members' clients $(members_clients "$VOL")"
	wait_until 10 spread_is 2/2/2 ||
		{ why "rr: 6 connections landed $(ipvs_spread) (IPVS ActiveConn m1/m2/m3), want 2/2/2"; return 1; }
	[ "$(members_clients "$VOL")" = 2/2/2 ] ||
		{ why "rr: members list $(members_clients "$VOL") clients on $VOL, want 2/2/2"; return 1; }
	io_check /dev/nbd0 || return 1
	nbd_detach /dev/nbd0 || return 1
	ipvs_down
}

chk_knbd_burst() {
	need_up || return 1
	ipvs_up knbd || return 1
	vip_attach /dev/nbd0 "$VOL" 6 || return 1
	log "knbd burst: IPVS active $(ipvs_spread), members' clients $(members_clients "$VOL"), loads $(loads)"
	wait_until 10 spread_is 2/2/2 ||
		{ why "knbd, idle members: 6 connections landed $(ipvs_spread), want 2/2/2"; return 1; }
	io_check /dev/nbd0 || return 1
	nbd_detach /dev/nbd0 || return 1
}

chk_knbd_busy() {
	need_up || return 1
	local out=$KNBD_OUT/fio-ipvs-busy.txt n1 n2 n3
	# the service and the holder first: starting things under fio is slow
	ipvs_up knbd || return 1
	ipvs_holder_start || return 1
	grp_attach /dev/nbd1 1 "$LVOL" 2 || return 1
	# about 100 ops/s: plenty against idle members, and leaves the vCPUs
	# some room
	setsid fio --name=busy --filename=/dev/nbd1 --rw=randread --bs=4k --iodepth=2 \
		--rate_iops=100 --ioengine=libaio --direct=1 --size=$((64 << 20)) --time_based \
		--runtime=600 >"$out" 2>&1 &
	FIO_PID=$!
	PIDS+=("$FIO_PID")
	wait_until 60 load_ge 1 20 || { why "m1 load $(node_load 1) after 60 s of fio, want >= 20"; return 1; }
	log "busy: loads $(loads)"
	hold_n 4 nbd "$VOL" || return 1
	n1=$(count_of 1)
	n2=$(count_of 2)
	n3=$(count_of 3)
	log "busy: 4 connections -> $HELD; loads $(loads)"
	load_ge 1 20 || { why "m1 load dropped to $(node_load 1) during the check (fio gone?)"; return 1; }
	[ "$n1" = 0 ] || { why "$n1 of 4 new connections went to the busy m1 ($HELD; loads $(loads))"; return 1; }
	[ "$n2" -ge 1 ] && [ "$n3" -ge 1 ] || { why "connections went to $HELD: not spread over m2 and m3"; return 1; }
}

chk_knbd_equal() {
	need_up || return 1
	local n
	kill_bg "$FIO_PID"
	nbd_detach /dev/nbd1 || return 1
	wait_until 30 load_lt 1 1 || { why "m1 load still $(node_load 1) 30 s after fio stopped"; return 1; }
	ipvs_holder_close_all || return 1
	wait_until 30 spread_is 0/0/0 || { why "IPVS still counts active connections after closing: $(ipvs_spread)"; return 1; }
	log "equal: loads $(loads)"
	hold_n 6 nbd "$VOL" || return 1
	log "equal: 6 connections -> $HELD; IPVS active $(ipvs_spread)"
	for n in 1 2 3; do
		[ "$(count_of "$n")" = 2 ] || { why "idle members, 6 connections landed on $HELD, want 2 on each"; return 1; }
	done
	[ "$(ipvs_spread)" = 2/2/2 ] || { why "IPVS ActiveConn $(ipvs_spread), want 2/2/2"; return 1; }
	ipvs_holder_close_all
	ipvs_holder_stop
	ipvs_down
}

chk_unknown() {
	need_up || return 1
	local mark a=192.0.2.4 b=192.0.2.5 n2
	ipvs_extra_up "$a" "$b" || return 1
	# only unknown real servers: least-connection
	mark=$(kmsg_mark ipvs-unknown)
	ipvs_up knbd "$a" "$b" || return 1
	ipvs_holder_start || return 1
	GAP=0 hold_n 4 tcp || return 1
	log "unknown only: 4 connections -> $HELD"
	[ "$(count_of "$a")" = 2 ] && [ "$(count_of "$b")" = 2 ] ||
		{ why "4 connections to two unknown real servers landed $HELD, want 2 and 2"; return 1; }
	dmesg_has_since "$mark" 'knbd: TCP .* no destination has a known knbd load' ||
		{ why "no 'no destination has a known knbd load' line in dmesg"; return 1; }
	ipvs_holder_close_all || return 1
	# a known member next to an unknown one: unknown is not idle
	ipvs_up knbd 2 "$a" || return 1
	GAP=0 hold_n 3 tcp || return 1
	n2=$(count_of 2)
	log "m2 + unknown: 3 connections -> $HELD; loads $(loads)"
	[ "$n2" = 3 ] || { why "3 connections with m2 (known) and $a (unknown) landed $HELD, want all on m2"; return 1; }
	ipvs_holder_close_all
	ipvs_holder_stop
	ipvs_down
	ipvs_extra_down
}

chk_rmmod() {
	need_up || return 1
	local out
	ipvs_up knbd || return 1
	if rmmod ip_vs_knbd 2>/dev/null || ! ipvs_knbd_loaded; then
		why "rmmod ip_vs_knbd succeeded while a service uses it"
		return 1
	fi
	# another scheduler on the service releases it
	out=$(ipvsadm -E -t "$(ipvs_svc)" -s rr 2>&1) || { why "ipvsadm -E -s rr: $out"; return 1; }
	ipvs_unload_knbd || return 1
	out=$(insmod "$IPVS_KO" 2>&1) || { why "insmod after -E: $out"; return 1; }
	out=$(ipvsadm -E -t "$(ipvs_svc)" -s knbd 2>&1) || { why "ipvsadm -E -s knbd: $out"; return 1; }
	if rmmod ip_vs_knbd 2>/dev/null || ! ipvs_knbd_loaded; then
		why "rmmod ip_vs_knbd succeeded after -E back to knbd"
		return 1
	fi
	# one connection through it still works
	ipvs_holder_start || return 1
	ipvs_hold nbd "$VOL" || return 1
	ipvs_holder_stop
	ipvsadm -D -t "$(ipvs_svc)" || { why "ipvsadm -D failed"; return 1; }
	ipvs_unload_knbd || return 1
	ipvs_down
}

chk_teardown() {
	local rc=0
	ipvs_holder_stop
	ipvs_extra_down
	ipvs_down
	ipvs_unload_knbd || rc=1
	grp_teardown || rc=1
	UP=0
	[ "$rc" = 0 ] || { why "teardown failed (see log)"; return 1; }
	! knbd_loaded || { why "knbd still loaded"; return 1; }
}

t_run ipvs_module chk_module
t_run ipvs_group_up chk_up
t_run ipvs_rr_spread chk_rr
t_run ipvs_knbd_burst chk_knbd_burst
t_run ipvs_knbd_avoids_busy chk_knbd_busy
t_run ipvs_knbd_spreads_equal chk_knbd_equal
t_run ipvs_unknown_fallback chk_unknown
t_run ipvs_rmmod_in_use chk_rmmod
t_run ipvs_teardown chk_teardown
t_done
