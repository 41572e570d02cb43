#!/bin/bash
# Nodes live in the network namespace of the process that enables them:
# a node enabled inside a test namespace listens there only, two nodes with
# the same port coexist in different namespaces, nbd-client reaches a node
# over a veth pair (test addresses 192.0.2.0/24 only), and deleting a
# namespace under an enabled node with a client must not crash anything.
# Runs last by default (a crash here would end the VM run).
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

NS=knbdt1
PORT=10820
PIDS=()

cleanup() {
	kill_bg "${PIDS[@]}" 2>/dev/null
	nbd_detach /dev/nbd0 >/dev/null 2>&1
	knbd_unload >/dev/null 2>&1
	ip netns del "$NS" 2>/dev/null
	ip link del knbdv0 2>/dev/null
}
trap cleanup EXIT

in_ns() { nsenter --net="/run/netns/$NS" "$@"; }

chk_setup() {
	knbd_load || return 1
	ip netns add "$NS" || { why "ip netns add"; return 1; }
	ip -n "$NS" link set lo up || { why "lo up in $NS"; return 1; }
	modprobe veth 2>/dev/null	# no module autoload from inside the VM's chroot
	ip link add knbdv0 type veth peer name knbdv1 || { why "cannot create a veth pair"; return 1; }
	ip link set knbdv1 netns "$NS" || { why "veth into $NS"; return 1; }
	ip addr add 192.0.2.1/24 dev knbdv0 && ip link set knbdv0 up || { why "knbdv0 address"; return 1; }
	ip -n "$NS" addr add 192.0.2.2/24 dev knbdv1 && ip -n "$NS" link set knbdv1 up || { why "knbdv1 address"; return 1; }
	knbd_backing "$KNBD_TMP/ns.img" $((32 << 20)) || return 1
	knbd_backing "$KNBD_TMP/root.img" $((8 << 20)) || return 1
	knbd_node_create inns "$PORT" 0.0.0.0 || return 1
	knbd_vol_create inns v "$KNBD_TMP/ns.img" || return 1
	in_ns sh -c "echo 1 > '$(knbd_node_dir inns)/enable'" || { why "enable from inside $NS failed"; return 1; }
	knbd_node_create inroot "$PORT" 0.0.0.0 || return 1
	knbd_vol_create inroot r "$KNBD_TMP/root.img" || return 1
	knbd_node_enable inroot || { why "same port in the root namespace refused (namespaces not separated?)"; return 1; }
}

chk_listen_in_netns() {
	local out
	out=$(in_ns timeout 60 nbdinfo --size "nbd://127.0.0.1:$PORT/v" 2>&1) || { why "nbdinfo inside $NS: $out"; return 1; }
	[ "$out" = $((32 << 20)) ] || { why "size inside $NS: '$out'"; return 1; }
	out=$(with_timeout 60 nbdinfo --size "nbd://127.0.0.1:$PORT/r" 2>&1) || { why "root-namespace node: $out"; return 1; }
	[ "$out" = $((8 << 20)) ] || { why "root node size '$out'"; return 1; }
	# each namespace sees only its own node's exports
	if with_timeout 60 nbdinfo --size "nbd://127.0.0.1:$PORT/v" >/dev/null 2>&1; then
		why "the namespaced node's export is reachable on the root namespace's 127.0.0.1"
		return 1
	fi
	out=$(with_timeout 60 nbdinfo --size "nbd://192.0.2.2:$PORT/v" 2>&1) || { why "over veth to 192.0.2.2: $out"; return 1; }
}

chk_nbd_client_over_veth() {
	local out
	out=$(with_timeout 60 nbd-client 192.0.2.2 "$PORT" /dev/nbd0 -N v -C 2 -t 10 2>&1) || { why "nbd-client over veth: $out"; return 1; }
	wait_until 20 nbd_connected /dev/nbd0 || { why "/dev/nbd0 not connected"; return 1; }
	wait_until 10 test "$(clients_count inns v)" -eq 2 || { why "clients shows $(clients_count inns v) connections"; return 1; }
	grep -q 192.0.2.1 "$(knbd_node_dir inns)/clients" || { why "clients does not show peer 192.0.2.1: $(cat "$(knbd_node_dir inns)/clients")"; return 1; }
	out=$(with_timeout 240 fio --name=ns --filename=/dev/nbd0 --rw=randwrite --bssplit=4k/50:64k/50 \
		--iodepth=8 --ioengine=libaio --direct=1 --size=16M --verify=crc32c --verify_fatal=1 --do_verify=1 2>&1) ||
		{ why "fio over veth: $(grep -iE 'verify|err=' <<<"$out" | head -n 3)"; return 1; }
	nbd_detach /dev/nbd0 || return 1
}

chk_delete_netns_under_node() {
	probe_hold_ns() {
		python3 "$KNBD_TESTS_DIR/nbd_probe.py" hold 192.0.2.2 "$PORT" v 120 >"$KNBD_TMP/nsh.txt" 2>&1 &
		PIDS+=($!)
		wait_until 30 grep -q READY "$KNBD_TMP/nsh.txt"
	}
	probe_hold_ns || { why "raw client over veth not ready: $(cat "$KNBD_TMP/nsh.txt")"; return 1; }
	ip netns del "$NS" || { why "ip netns del"; return 1; }
	sleep 3
	# the node in the dead namespace can still be disabled and removed
	local out
	out=$(with_timeout 30 sh -c "echo 0 > '$(knbd_node_dir inns)/enable'" 2>&1) || { why "disable node of a deleted namespace: ${out:-timeout}"; return 1; }
	with_timeout 30 rmdir "$(knbd_vol_dir inns v)" || { why "rmdir volume of a deleted namespace"; return 1; }
	with_timeout 30 rmdir "$(knbd_node_dir inns)" || { why "rmdir node of a deleted namespace"; return 1; }
	# the root-namespace node is unaffected
	out=$(with_timeout 60 nbdinfo --size "nbd://127.0.0.1:$PORT/r" 2>&1)
	[ "$out" = $((8 << 20)) ] || { why "root node after namespace deletion: '$out'"; return 1; }
	kill_bg "${PIDS[@]}"
	PIDS=()
	# enable a node in a namespace, delete the namespace, then only rmmod-path cleanup
	ip netns add "$NS" && ip -n "$NS" link set lo up || { why "netns re-add"; return 1; }
	knbd_node_create inns2 $((PORT + 1)) 127.0.0.1 || return 1
	knbd_vol_create inns2 v "$KNBD_TMP/ns.img" || return 1
	in_ns sh -c "echo 1 > '$(knbd_node_dir inns2)/enable'" || { why "enable inns2 inside $NS"; return 1; }
	in_ns timeout 60 nbdinfo --size "nbd://127.0.0.1:$((PORT + 1))/v" >/dev/null 2>&1 || { why "inns2 not serving in $NS"; return 1; }
	ip netns del "$NS"
	sleep 3
	knbd_unload || return 1
}

t_run ns_setup chk_setup
t_run ns_listen_in_netns chk_listen_in_netns
t_run ns_nbd_client_over_veth chk_nbd_client_over_veth
t_run ns_delete_netns_under_node chk_delete_netns_under_node
t_run ns_teardown knbd_unload
t_done
