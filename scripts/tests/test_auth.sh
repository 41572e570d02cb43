#!/bin/bash
# Member authentication: two members m1 m2 (group_lib.sh, group key set),
# a stranger's namespace knbdtgs at 192.0.2.9 on the same bridge, and the
# member port attacked with test_auth.py.  Volume av: 8 MiB, 1 MiB extents,
# "epoch 1; stripe 1 2" (m1 owns the even extents).
#
#   auth_up               links up with the key; peer_auth says hmac-sha256;
#                         group_key cannot be read back
#   auth_no_key           a node with peers and no key does not enable
#                         (ENOKEY, a reason in dmesg); insecure_peers=1 does;
#                         bad keys refused (EINVAL), a key from a file works
#   auth_member_ok        the right key from m2's address (Python member):
#                         the server proves itself, WRITE + READ round-trip,
#                         the bytes are in m1's backing (positive control)
#   auth_replay           that session's AUTH on a new connection: refused
#   auth_stranger         no key (INSECURE HELLO), from m2's address and from
#                         the stranger's: no answer, closed; dmesg says why
#   auth_wrong_key        a random key from m2's address: the server's MAC does
#                         not check, our AUTH is refused, nothing served; and
#                         frames sent instead of AUTH are not served
#   auth_not_a_peer       the right key from the stranger's address, as member 2;
#                         the right key as an unknown member id; another group:
#                         no answer, closed
#   auth_forged_load      LOAD frames for another member over an authenticated
#                         link close it; m1 never shows the forged figures
#   auth_key_mismatch     m2 with another key: no link comes up either way,
#                         dmesg names the failure; the right key again: up
#   auth_peer_fuzz        seeded hostile member frames before and after
#                         authentication (KNBD_PEER_FUZZ_CASES, default 1000);
#                         no kernel problem, links stay up, a member still served
#   auth_teardown
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
GRP_N=2
# shellcheck source=group_lib.sh
. "$here/group_lib.sh"

PY=$here/test_auth.py
VOL=av
SIZE=$((8 << 20))
EXT=$((1 << 20))
SNS=knbdtgs		# the stranger's namespace (knbdt*: cleaned up by lib.sh too)
SIP=$GRP_NET.9
UP=0
MAC=''

cleanup() {
	ip netns del "$SNS" 2>/dev/null
	ip link del knbdtvs 2>/dev/null
	ip link del knbdtsolo 2>/dev/null
	rmdir "$KNBD_CFS/nodes/solo/peers/p9" "$KNBD_CFS/nodes/solo" 2>/dev/null
	grp_teardown >/dev/null 2>&1
}
trap cleanup EXIT

need_up() { [ "$UP" = 1 ] || { why "group not set up"; return 1; }; }

# py NS ARGS...: test_auth.py in namespace NS (1, 2: members; s: the stranger)
py() {
	local ns=$1
	shift
	local nsname=knbdtg$ns
	[ "$ns" = s ] && nsname=$SNS
	with_timeout 120 nsenter --net="/run/netns/$nsname" python3 "$PY" "$@" --host "$GRP_NET.1" \
		--node-id "${NODE_ID:-2}" --key "${KEY-$GRP_KEY}" --volume "$VOL" \
		--routing "$KNBD_CFS/nodes/m1/volumes/$VOL/routing" --backing "$(grp_backing 1 "$VOL")"
}

# expect_ok OUT: the driver said OK
expect_ok() {
	log "  $1"
	[[ $1 == OK* ]] || { why "${1:-no output}"; return 1; }
}

chk_up() {
	grp_up || return 1
	ip netns add "$SNS" && ip link add knbdtvs type veth peer name knbdtes &&
		ip link set knbdtes netns "$SNS" && ip link set knbdtvs master "$GRP_BR" &&
		ip link set knbdtvs up && ip -n "$SNS" addr add "$SIP/24" dev knbdtes &&
		ip -n "$SNS" link set knbdtes up && ip -n "$SNS" link set lo up ||
		{ why "stranger namespace"; return 1; }
	grp_vol_add "$VOL" "$SIZE" "$EXT" "epoch 1; stripe 1 2" || return 1
	grp_enable_all || return 1
	wait_until 20 grp_links_up || { why "links not up after 20 s: $(grp_links_summary)"; return 1; }
	local mode got
	mode=$(cfs_get "$KNBD_CFS/nodes/m1/peer_auth")
	[ "$mode" = hmac-sha256 ] || { why "peer_auth says '$mode'"; return 1; }
	got=$(cat "$KNBD_CFS/nodes/m1/group_key" 2>/dev/null)
	[[ $got != *"${GRP_KEY:0:16}"* ]] || { why "group_key shows the key"; return 1; }
	log "links: $(grp_links_summary); group_key read back: '${got:-nothing}'"
	UP=1
}

chk_no_key() {
	local d=$KNBD_CFS/nodes/solo r mark kf
	mark=$KMSG_MARK
	knbd_node_create solo 10820 127.0.0.1 || return 1
	cfs_set "$d/peer_port" 10821 || return 1
	mkdir "$d/peers/p9" || { why "mkdir peer"; return 1; }
	cfs_set "$d/peers/p9/addr" 127.0.0.9 && cfs_set "$d/peers/p9/node_id" 9 || return 1
	r=$(cfs_try "$d/enable" 1)
	[ "$r" = ENOKEY ] || { why "enable with a peer and no key: $r, want ENOKEY"; return 1; }
	dmesg_has_since "$mark" "solo: member links need a group_key" ||
		{ why "no reason in dmesg for the refused enable"; return 1; }
	[ "$(cfs_get "$d/peer_auth")" = "none (member links refused)" ] || { why "peer_auth: $(cfs_get "$d/peer_auth")"; return 1; }
	for r in 00 0011 "$(printf 'zz%.0s' {1..16})" "$(printf 'ab%.0s' {1..65})"; do
		[ "$(cfs_try "$d/group_key" "$r")" = EINVAL ] || { why "group_key '$r' accepted"; return 1; }
	done
	[ "$(cfs_try "$d/group_key" /nonexistent/key)" = ENOENT ] || { why "a missing key file not ENOENT"; return 1; }
	kf=$KNBD_TMP/solo.key
	printf '%s\n' "$GRP_KEY" >"$kf"
	cfs_set "$d/group_key" "$kf" || return 1
	[ "$(cfs_get "$d/peer_auth")" = hmac-sha256 ] || { why "key file: peer_auth $(cfs_get "$d/peer_auth")"; return 1; }
	cfs_set "$d/group_key" "" || return 1
	cfs_set "$d/insecure_peers" 1 || return 1
	[ "$(cfs_try "$d/insecure_peers" 2)" = EINVAL ] || { why "insecure_peers 2 accepted"; return 1; }
	cfs_set "$d/enable" 1 || return 1
	[ "$(cfs_get "$d/peer_auth")" = "none (insecure_peers)" ] || { why "peer_auth: $(cfs_get "$d/peer_auth")"; return 1; }
	[ "$(cfs_try "$d/group_key" "$GRP_KEY")" = EBUSY ] || { why "group_key changed while enabled"; return 1; }
	cfs_set "$d/enable" 0 || return 1
	rmdir "$d/peers/p9" "$d" || { why "rmdir solo"; return 1; }
}

chk_member_ok() {
	need_up || return 1
	local out
	out=$(py 2 member-ok --source "$GRP_NET.2" --offset $((2 * EXT + 4096)))
	expect_ok "$out" || return 1
	MAC=${out##* }
}

chk_replay() {
	need_up || return 1
	[ -n "$MAC" ] || { why "no recorded AUTH (auth_member_ok failed)"; return 1; }
	expect_ok "$(py 2 replay "$MAC" --source "$GRP_NET.2")"
}

chk_stranger() {
	need_up || return 1
	local mark=$KMSG_MARK
	expect_ok "$(KEY='' py 2 insecure --source "$GRP_NET.2")" || return 1
	expect_ok "$(KEY='' py s insecure --source "$SIP")" || return 1
	dmesg_has_since "$mark" "member link from .*refused: it has no group key" ||
		{ why "no 'refused: it has no group key' in dmesg"; return 1; }
}

chk_wrong_key() {
	need_up || return 1
	local mark=$KMSG_MARK
	expect_ok "$(py 2 wrong-key --source "$GRP_NET.2")" || return 1
	expect_ok "$(py 2 skip-auth --source "$GRP_NET.2")" || return 1
	dmesg_has_since "$mark" "refused: authentication failed" ||
		{ why "no 'authentication failed' in dmesg"; return 1; }
}

chk_not_a_peer() {
	need_up || return 1
	local mark=$KMSG_MARK
	expect_ok "$(py s no-answer --source "$SIP")" || return 1
	expect_ok "$(NODE_ID=9 py s no-answer --source "$SIP")" || return 1
	expect_ok "$(NODE_ID=5 py 2 no-answer --source "$GRP_NET.2")" || return 1
	expect_ok "$(py 2 no-answer --source "$GRP_NET.2" --group 8)" || return 1
	dmesg_has_since "$mark" "refused: not a configured peer at that address" ||
		{ why "no 'not a configured peer' in dmesg"; return 1; }
	dmesg_has_since "$mark" "refused: another group" || { why "no 'another group' in dmesg"; return 1; }
}

chk_forged_load() {
	need_up || return 1
	local i
	expect_ok "$(py 2 forged-load --source "$GRP_NET.2" --forge-id 1)" || return 1
	expect_ok "$(py 2 forged-load --source "$GRP_NET.2" --forge-id 3)" || return 1
	# and the unauthenticated ones of the other checks: never recorded
	for i in 1 2 3 4 5; do
		! grep -q 'connections 4242' "$KNBD_CFS/nodes/m1/stats" ||
			{ why "m1 shows the forged load: $(grep 4242 "$KNBD_CFS/nodes/m1/stats")"; return 1; }
		_nap 0.2
	done
	grp_links_up || { why "links after the forged loads: $(grp_links_summary)"; return 1; }
}

chk_key_mismatch() {
	need_up || return 1
	local mark=$KMSG_MARK d=$KNBD_CFS/nodes/m2 c0
	grp_node_disable 2 || return 1
	cfs_set "$d/group_key" "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" || return 1
	grp_node_enable 2 || return 1
	sleep 3
	[ "$(grp_peer_state 1 2)" != up ] && [ "$(grp_peer_state 2 1)" != up ] ||
		{ why "a link came up with different keys: $(grp_links_summary)"; return 1; }
	dmesg_has_since "$mark" "failed authentication: not our group key" ||
		{ why "no 'failed authentication' in dmesg"; return 1; }
	grp_node_disable 2 || return 1
	cfs_set "$d/group_key" "$GRP_KEY" || return 1
	grp_node_enable 2 || return 1
	wait_until 20 grp_links_up || { why "links not back with the right key: $(grp_links_summary)"; return 1; }
	c0=$(grep -c 'authenticated from' < <(dmesg_since "$mark"))
	[ "$c0" -ge 2 ] || { why "dmesg shows $c0 authenticated links after the fix"; return 1; }
}

chk_peer_fuzz() {
	need_up || return 1
	local out seed=${KNBD_FUZZ_SEED:-$RANDOM}
	out=$(py 2 fuzz "${KNBD_PEER_FUZZ_CASES:-1000}" "$seed" --source "$GRP_NET.2")
	log "  $out"
	[[ $(head -n 1 <<<"$out") == OK* ]] && [[ $(tail -n 1 <<<"$out") == OK* ]] ||
		{ why "fuzz seed $seed: $(grep FAIL <<<"$out" | head -n 1)"; return 1; }
	wait_until 20 grp_links_up || { why "links after the fuzzing: $(grp_links_summary)"; return 1; }
}

chk_teardown() {
	cleanup
	UP=0
	! knbd_loaded || { why "knbd still loaded"; return 1; }
}

t_run auth_up chk_up
t_run auth_no_key chk_no_key
t_run auth_member_ok chk_member_ok
t_run auth_replay chk_replay
t_run auth_stranger chk_stranger
t_run auth_wrong_key chk_wrong_key
t_run auth_not_a_peer chk_not_a_peer
t_run auth_forged_load chk_forged_load
t_run auth_key_mismatch chk_key_mismatch
t_run auth_peer_fuzz chk_peer_fuzz
t_run auth_teardown chk_teardown
t_done
