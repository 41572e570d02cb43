#!/bin/bash
# Client access control: a volume's allowed_hosts (IPv4/IPv6 CIDR), the
# node's list switch and max_conns_per_host.  One node listens on :: (dual
# stack: IPv4 clients arrive IPv4-mapped) and clients pick their source
# address (acl_probe.py binds 127.0.0.2, 127.0.0.3, 2001:db8::5 added to lo)
# so that allowed and refused hosts differ; nbdinfo and nbd-client check
# what a stock client sees.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

N=acl
PORT=10830
V6=2001:db8::5
# With a non-loopback IPv6 address only, getaddrinfo(AI_ADDRCONFIG) in
# nbd-client refuses IPv4 names: give IPv4 one as well.
V4=192.0.2.77
NODE=$(knbd_node_dir "$N")

cleanup() {
	nbd_detach /dev/nbd0 >/dev/null 2>&1
	knbd_unload >/dev/null 2>&1
	ip -6 addr del "$V6/128" dev lo 2>/dev/null
	ip addr del "$V4/32" dev lo 2>/dev/null
}
trap cleanup EXIT

# probe CMD SRC ARGS...: acl_probe.py against the node, its one-line verdict on stdout
probe() {
	local cmd=$1 src=$2 host=127.0.0.1
	shift 2
	case $src in *:*) host=::1 ;; esac
	# a source on lo reaches ::1 as itself; 2001:db8::5 talks to itself
	[ "$src" = "$V6" ] && host=$V6
	with_timeout 60 python3 "$here/acl_probe.py" "$cmd" "$src" "$host" "$PORT" "$@" 2>&1 | tail -n 1
}

# expect_probe WANT CMD SRC ARGS...: the verdict must be WANT
expect_probe() {
	local want=$1 got
	shift
	got=$(probe "$@")
	[ "$got" = "$want" ] || { why "$*: got '$got', want '$want'"; return 1; }
}

chk_setup() {
	knbd_load || return 1
	ip link set lo up
	ip -6 addr add "$V6/128" dev lo nodad 2>/dev/null
	ip -6 addr show dev lo | grep -q "$V6" || { why "cannot add $V6 to lo"; return 1; }
	ip addr add "$V4/32" dev lo 2>/dev/null
	ip addr show dev lo | grep -q "$V4" || { why "cannot add $V4 to lo"; return 1; }
	knbd_node_create "$N" "$PORT" :: || return 1
	knbd_backing "$KNBD_TMP/open.img" $((4 << 20)) || return 1
	knbd_backing "$KNBD_TMP/v4only.img" $((8 << 20)) || return 1
	knbd_backing "$KNBD_TMP/six.img" $((12 << 20)) || return 1
	knbd_vol_create "$N" open "$KNBD_TMP/open.img" || return 1
	knbd_vol_create "$N" v4only "$KNBD_TMP/v4only.img" allowed_hosts=127.0.0.2 || return 1
	knbd_vol_create "$N" six "$KNBD_TMP/six.img" allowed_hosts=2001:db8::/32 || return 1
	knbd_node_enable "$N" || return 1
}

chk_configfs() {
	local v r
	v=$(knbd_vol_dir "$N" open)
	[ -z "$(cfs_get "$v/allowed_hosts")" ] || { why "default allowed_hosts '$(cfs_get "$v/allowed_hosts")', want empty"; return 1; }
	[ "$(cfs_get "$NODE/list")" = 1 ] || { why "default list '$(cfs_get "$NODE/list")', want 1"; return 1; }
	[ "$(cfs_get "$NODE/max_conns_per_host")" = 0 ] || { why "default max_conns_per_host '$(cfs_get "$NODE/max_conns_per_host")', want 0"; return 1; }
	# any separator, bare hosts, IPv6 in any form: read back one canonical entry a line
	cfs_set "$v/allowed_hosts" "192.0.2.0/24, 10.0.0.1 2001:DB8:0::/32,::1" || return 1
	r=$(cfs_get "$v/allowed_hosts")
	[ "$r" = $'192.0.2.0/24\n10.0.0.1/32\n2001:db8::/32\n::1/128' ] || { why "allowed_hosts reads back '$r'"; return 1; }
	# bad lists: EINVAL, a reason in dmesg, the list in force unchanged
	local bad reason
	while IFS='|' read -r bad reason; do
		r=$(cfs_try "$v/allowed_hosts" "$bad")
		[ "$r" = EINVAL ] || { why "allowed_hosts '$bad': $r, want EINVAL"; return 1; }
		wait_until 5 dmesg_has_since "$KMSG_MARK" "open: allowed_hosts: $reason" ||
			{ why "no dmesg reason '$reason' for '$bad'"; return 1; }
	done <<-EOF
		not-an-address|not an IPv4 or IPv6 address
		192.0.2.0/33|IPv4 prefix length must be 0..32
		2001:db8::/129|IPv6 prefix length must be 0..128
		192.0.2.1/24|address has bits set past the prefix length
		010.0.0.1|not an IPv4 or IPv6 address
		192.0.2.0/024|prefix length must be a decimal number
		1::2::3|not an IPv4 or IPv6 address
		$(seq -s ' ' -f '10.0.0.%g' 1 65)|too many entries
	EOF
	r=$(cfs_get "$v/allowed_hosts")
	[ "$r" = $'192.0.2.0/24\n10.0.0.1/32\n2001:db8::/32\n::1/128' ] || { why "a refused write changed allowed_hosts to '$r'"; return 1; }
	# 64 entries are fine
	cfs_set "$v/allowed_hosts" "$(seq -s ' ' -f '10.0.1.%g' 1 64)" || return 1
	r=$(cfs_get "$v/allowed_hosts" | grep -c /32)
	[ "$r" = 64 ] || { why "64 entries read back as $r"; return 1; }
	# empty: any host again
	cfs_set "$v/allowed_hosts" "" || return 1
	[ -z "$(cfs_get "$v/allowed_hosts")" ] || { why "allowed_hosts not cleared: '$(cfs_get "$v/allowed_hosts")'"; return 1; }
	for bad in 2 ""; do
		r=$(cfs_try "$NODE/list" "$bad")
		[ "$r" = EINVAL ] || { why "list '$bad': $r, want EINVAL"; return 1; }
	done
	for bad in -1 65537 abc 0x10 ""; do
		r=$(cfs_try "$NODE/max_conns_per_host" "$bad")
		[ "$r" = EINVAL ] || { why "max_conns_per_host '$bad': $r, want EINVAL"; return 1; }
	done
	dmesg_has_since "$KMSG_MARK" "max_conns_per_host must be 0\.\." || { why "no dmesg reason for a bad max_conns_per_host"; return 1; }
	[ "$(cfs_get "$NODE/max_conns_per_host")" = 0 ] || { why "a refused write changed max_conns_per_host"; return 1; }
}

# An allowed host is served: GO (and a READ), INFO, old-style EXPORT_NAME;
# it comes from 127.0.0.2 to a :: listener, so as ::ffff:127.0.0.2 against
# the IPv4 entry 127.0.0.2.
chk_allowed_served() {
	expect_probe ACK go 127.0.0.2 v4only || return 1
	expect_probe ACK info 127.0.0.2 v4only || return 1
	expect_probe "SIZE $((8 << 20))" export-name 127.0.0.2 v4only || return 1
	# no list: everyone
	expect_probe ACK go 127.0.0.1 open || return 1
	expect_probe ACK go ::1 open || return 1
}

chk_refused_policy() {
	local out
	expect_probe ERR_POLICY go 127.0.0.1 v4only || return 1
	expect_probe ERR_POLICY info 127.0.0.3 v4only || return 1
	expect_probe ERR_POLICY go ::1 v4only || return 1
	# EXPORT_NAME has no error reply: the connection is closed
	expect_probe CLOSED export-name 127.0.0.1 v4only || return 1
	# an unknown export is still unknown, not a policy matter
	expect_probe ERR_UNKNOWN go 127.0.0.1 no-such-volume || return 1
	wait_until 5 dmesg_has_since "$KMSG_MARK" "node $N/v4only: client .*127\.0\.0\.1.* not in allowed_hosts" ||
		{ why "no dmesg line naming $N/v4only and the refused address"; return 1; }
	# stock clients: nbdinfo and nbd-client fail, the allowed volume next to it works
	if out=$(with_timeout 60 nbdinfo --size "nbd://127.0.0.1:$PORT/v4only" 2>&1); then
		why "nbdinfo from 127.0.0.1 got v4only: $out"
		return 1
	fi
	kmsg_mark_set nbd_client_refused
	if out=$(with_timeout 60 nbd-client 127.0.0.1 "$PORT" /dev/nbd0 -N v4only 2>&1); then
		nbd_detach /dev/nbd0
		why "nbd-client from 127.0.0.1 attached v4only"
		return 1
	fi
	# refused by the list, not by anything on the way
	wait_until 5 dmesg_has_since "$KMSG_MARK" "node $N/v4only: client .*127\.0\.0\.1.* not in allowed_hosts" ||
		{ why "nbd-client failed without reaching the list: $out"; return 1; }
	log "  nbd-client refused: $(tail -n 1 <<<"$out")"
	out=$(with_timeout 60 nbdinfo --size "nbd://127.0.0.1:$PORT/open" 2>&1) || { why "nbdinfo open: $out"; return 1; }
	[ "$out" = $((4 << 20)) ] || { why "nbdinfo open size '$out'"; return 1; }
}

# LIST shows each client only the volumes it may use.
chk_list_hidden() {
	local out names
	expect_probe "LIST open" list 127.0.0.1 || return 1
	expect_probe "LIST open,v4only" list 127.0.0.2 || return 1
	expect_probe "LIST open,six" list "$V6" || return 1
	expect_probe "LIST open" list ::1 || return 1
	out=$(with_timeout 60 nbdinfo --list --json "nbd://127.0.0.1:$PORT" 2>&1) || { why "nbdinfo --list: $out"; return 1; }
	names=$(python3 -c 'import json,sys; print(" ".join(sorted(e["export-name"] for e in json.load(sys.stdin)["exports"])))' <<<"$out") ||
		{ why "cannot parse nbdinfo --list --json: $out"; return 1; }
	[ "$names" = open ] || { why "nbdinfo --list from 127.0.0.1 shows '$names', want 'open'"; return 1; }
	out=$(with_timeout 60 nbdinfo --list --json "nbd://[$V6]:$PORT" 2>&1) || { why "nbdinfo --list over IPv6: $out"; return 1; }
	names=$(python3 -c 'import json,sys; print(" ".join(sorted(e["export-name"] for e in json.load(sys.stdin)["exports"])))' <<<"$out") ||
		{ why "cannot parse nbdinfo --list --json: $out"; return 1; }
	[ "$names" = "open six" ] || { why "nbdinfo --list from $V6 shows '$names', want 'open six'"; return 1; }
}

# IPv6: 2001:db8::/32 lets 2001:db8::5 in and keeps ::1 out.
chk_ipv6() {
	local out
	expect_probe ACK go "$V6" six || return 1
	expect_probe ERR_POLICY go ::1 six || return 1
	expect_probe ERR_POLICY go 127.0.0.2 six || return 1
	out=$(with_timeout 60 nbdinfo --size "nbd://[$V6]:$PORT/six" 2>&1) || { why "nbdinfo from $V6: $out"; return 1; }
	[ "$out" = $((12 << 20)) ] || { why "nbdinfo six size '$out'"; return 1; }
	if out=$(with_timeout 60 nbdinfo --size "nbd://[::1]:$PORT/six" 2>&1); then
		why "nbdinfo from ::1 got six: $out"
		return 1
	fi
	# an IPv6 entry for the IPv4-mapped range lets the IPv4 clients in
	cfs_set "$(knbd_vol_dir "$N" six)/allowed_hosts" "2001:db8::/32 ::ffff:127.0.0.0/126" || return 1
	expect_probe ACK go 127.0.0.2 six || return 1
	expect_probe ERR_POLICY go 127.0.0.5 six || return 1
	cfs_set "$(knbd_vol_dir "$N" six)/allowed_hosts" "2001:db8::/32" || return 1
}

# list=0: LIST refused with ERR_POLICY for everyone; GO unaffected; live.
chk_list_off() {
	local out
	cfs_set "$NODE/list" 0 || return 1
	expect_probe ERR_POLICY list 127.0.0.2 || return 1
	expect_probe ERR_POLICY list "$V6" || return 1
	if out=$(with_timeout 60 nbdinfo --list "nbd://127.0.0.1:$PORT" 2>&1); then
		why "nbdinfo --list succeeded with list=0: $out"
		return 1
	fi
	expect_probe ACK go 127.0.0.2 v4only || return 1
	cfs_set "$NODE/list" 1 || return 1
	expect_probe "LIST open,v4only" list 127.0.0.2 || return 1
}

# max_conns_per_host=2: the third connection from a host is closed at
# accept, other hosts are not affected, a freed slot can be used again.
chk_max_conns_per_host() {
	local out
	cfs_set "$NODE/max_conns_per_host" 2 || return 1
	out=$(probe limit 127.0.0.2 127.0.0.3 2)
	[ "$out" = OK ] || { why "limit 2 from 127.0.0.2: $out"; return 1; }
	wait_until 5 dmesg_has_since "$KMSG_MARK" "node $N: .*127\.0\.0\.2 has max_conns_per_host \(2\)" ||
		{ why "no dmesg line for the refused connection"; return 1; }
	# IPv6 hosts are counted alike
	cfs_set "$NODE/max_conns_per_host" 1 || return 1
	out=$(probe limit ::1 "$V6" 1)
	[ "$out" = OK ] || { why "limit 1 from ::1: $out"; return 1; }
	# 0: no limit
	cfs_set "$NODE/max_conns_per_host" 0 || return 1
	out=$(probe limit 127.0.0.2 127.0.0.3 3)
	[ "$out" = "FAIL: connection 4 from 127.0.0.2 was served (limit 3)" ] ||
		{ why "with max_conns_per_host=0 a 4th connection was not served: $out"; return 1; }
}

# A new list applies to the next handshake; an attached client stays.
chk_live_change() {
	local v
	v=$(knbd_vol_dir "$N" v4only)
	expect_probe "NEW ERR_POLICY OLD READ-OK" live 127.0.0.2 v4only "$v/allowed_hosts" 127.0.0.3 || return 1
	expect_probe ACK go 127.0.0.3 v4only || return 1
	expect_probe "LIST open,v4only" list 127.0.0.3 || return 1
	expect_probe "LIST open" list 127.0.0.2 || return 1
	# emptied while enabled: any host again
	cfs_set "$v/allowed_hosts" "" || return 1
	expect_probe ACK go 127.0.0.1 v4only || return 1
	cfs_set "$v/allowed_hosts" 127.0.0.2 || return 1
	expect_probe ERR_POLICY go 127.0.0.1 v4only || return 1
}

# An allowed nbd.ko client works end to end (nbd-client comes from 127.0.0.1).
chk_nbd_client_allowed() {
	local v out
	v=$(knbd_vol_dir "$N" v4only)
	cfs_set "$v/allowed_hosts" "127.0.0.0/30" || return 1
	nbd_attach /dev/nbd0 v4only 2 "$PORT" || return 1
	out=$(with_timeout 120 fio --name=acl --filename=/dev/nbd0 --rw=randwrite --bs=4k \
		--iodepth=4 --ioengine=libaio --direct=1 --size=2M --verify=crc32c --verify_fatal=1 \
		--do_verify=1 2>&1) || { why "fio through an allowed client: $(grep -iE 'verify|err=' <<<"$out" | head -n 3)"; return 1; }
	nbd_detach /dev/nbd0 || return 1
	cfs_set "$v/allowed_hosts" 127.0.0.2 || return 1
}

# The graceful close that moves a client away (admin drain) still works
# for an allowed client, and the client's next handshake is served.
chk_drain_allowed() {
	local v f=$KNBD_TMP/hold.txt id
	v=$(knbd_vol_dir "$N" v4only)
	cfs_set "$v/allowed_hosts" "127.0.0.1, 127.0.0.2" || return 1
	probe_hold "$f" v4only 60 "$PORT" || return 1
	id=$(awk '$3 == "v4only" && /state=transmission/ { print $1; exit }' "$NODE/clients")
	[ -n "$id" ] || { kill_bg "$PROBE_PID"; why "held connection not in clients: $(cat "$NODE/clients")"; return 1; }
	cfs_set "$NODE/drain" "$id" || { kill_bg "$PROBE_PID"; return 1; }
	probe_closed "$f" "$PROBE_PID" 30 || { kill_bg "$PROBE_PID"; why "drained connection not closed: $(cat "$f")"; return 1; }
	grep -q ERROR-REPLY "$f" && { why "the drained client got an error reply: $(cat "$f")"; return 1; }
	expect_probe ACK go 127.0.0.1 v4only || return 1
	cfs_set "$v/allowed_hosts" 127.0.0.2 || return 1
}

t_run acl_setup chk_setup
if [ "$T_NFAIL" -eq 0 ]; then
	t_run acl_configfs chk_configfs
	t_run acl_allowed_served chk_allowed_served
	t_run acl_refused_policy chk_refused_policy
	t_run acl_list_hidden chk_list_hidden
	t_run acl_ipv6 chk_ipv6
	t_run acl_list_off chk_list_off
	t_run acl_max_conns_per_host chk_max_conns_per_host
	t_run acl_live_change chk_live_change
	t_run acl_nbd_client_allowed chk_nbd_client_allowed
	t_run acl_drain_allowed chk_drain_allowed
fi
t_run acl_teardown knbd_unload
t_done
