#!/bin/bash
# knbd's configfs interface: defaults, value checking (EINVAL with a dmesg
# reason, ENOENT), EBUSY while enabled, size rules, enable/disable cycles,
# disabling or removing things under connected clients, ENOTEMPTY, strict
# parsing (whole booleans, base 10), disable/rmdir under a member stuck
# mid-WRITE, the routing safety rail, rmmod refused while configured, reload.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

PORT=10809
LOOPDEV=''
PIDS=()

cleanup() {
	kill_bg "${PIDS[@]}" 2>/dev/null
	rl_teardown >/dev/null 2>&1
	nbd_detach /dev/nbd0 >/dev/null 2>&1
	nbd_detach /dev/nbd1 >/dev/null 2>&1
	knbd_unload >/dev/null 2>&1
	[ -n "$LOOPDEV" ] && losetup -d "$LOOPDEV" 2>/dev/null
}
trap cleanup EXIT

# expect_errno WANT FILE VALUE [dmesg]: writing VALUE to FILE gives errno WANT
# (OK for success); with "dmesg", a new "knbd" line must explain the refusal.
expect_errno() {
	local want=$1 f=$2 v=$3 got mark
	kmsg_mark_set errno
	mark=$KMSG_MARK
	got=$(cfs_try "$f" "$v")
	if [ "$got" != "$want" ]; then
		why "write '$v' > ${f#"$KNBD_CFS"/}: got $got, want $want"
		return 1
	fi
	if [ "${4:-}" = dmesg ] && ! dmesg_has_since "$mark" 'knbd'; then
		why "write '$v' > ${f#"$KNBD_CFS"/}: $want but no 'knbd: ...' reason in dmesg"
		return 1
	fi
}

# einval_set_or_enable VOLDIR ATTR VALUE: a value that makes the volume invalid
# is refused with EINVAL either when written or at enable (then with a dmesg reason)
einval_set_or_enable() {
	local r
	r=$(cfs_try "$1/$2" "$3")
	[ "$r" = EINVAL ] && return 0
	[ "$r" = OK ] || { why "write '$3' > $2: $r"; return 1; }
	expect_errno EINVAL "$1/enable" 1 dmesg || return 1
	expect_val "$1/enable" 0
}

# expect_fails FILE VALUE: the write must fail (any errno)
expect_fails() {
	local got
	got=$(cfs_try "$1" "$2")
	[ "$got" != OK ] || { why "write '$2' > ${1#"$KNBD_CFS"/} succeeded, want an error"; return 1; }
}

expect_val() {
	local got
	got=$(cfs_get "$1")
	[ "$got" = "$2" ] || { why "${1#"$KNBD_CFS"/} reads '$got', want '$2'"; return 1; }
}

# ensure_base: node c1 on 127.0.0.1:$PORT with volume v1 (backing e.img),
# both enabled; repairs whatever an earlier failed check left behind
ensure_base() {
	local n v b=$KNBD_TMP/e.img
	knbd_loaded || knbd_load || return 1
	n=$(knbd_node_dir c1)
	v=$(knbd_vol_dir c1 v1)
	[ -f "$b" ] || knbd_backing "$b" $((8 << 20)) || return 1
	if [ ! -d "$n" ]; then
		knbd_node_create c1 "$PORT" 127.0.0.1 || return 1
	fi
	if [ "$(cfs_get "$n/listen_port")" != "$PORT" ] || [ "$(cfs_get "$n/listen_addr")" != 127.0.0.1 ]; then
		cfs_set "$n/enable" 0 || return 1
		cfs_set "$n/listen_addr" 127.0.0.1 || return 1
		cfs_set "$n/listen_port" "$PORT" || return 1
	fi
	[ -d "$v" ] || mkdir "$v" || { why "mkdir v1"; return 1; }
	if [ "$(cfs_get "$v/enable")" != 1 ]; then
		cfs_set "$v/backing_path" "$b" || return 1
		cfs_set "$v/size" 0 || return 1
		cfs_set "$v/block_size" 512 || return 1
		cfs_set "$v/enable" 1 || return 1
	fi
	[ "$(cfs_get "$n/enable")" = 1 ] || cfs_set "$n/enable" 1 || return 1
}

nbd_size_of() { with_timeout 60 nbdinfo --size "nbd://127.0.0.1:${2:-$PORT}/$1" 2>&1; }

chk_load() {
	knbd_load || return 1
	[ -d "$KNBD_CFS/nodes" ] || { why "$KNBD_CFS/nodes missing"; return 1; }
}

chk_defaults() {
	local n v
	n=$(knbd_node_dir c1)
	mkdir "$n" || { why "mkdir node"; return 1; }
	for f in listen_addr listen_port max_connections enable clients volumes; do
		[ -e "$n/$f" ] || { why "node lacks $f"; return 1; }
	done
	expect_val "$n/listen_addr" 0.0.0.0 || return 1
	expect_val "$n/listen_port" 10809 || return 1
	expect_val "$n/max_connections" 64 || return 1
	expect_val "$n/enable" 0 || return 1
	expect_val "$n/clients" "" || return 1
	if [ -e "$n/peer_port" ]; then
		cfs_set "$n/peer_port" 0 || return 1	# see knbd_node_create
	fi
	v=$(knbd_vol_dir c1 v1)
	mkdir "$v" || { why "mkdir volume"; return 1; }
	for f in backing_path size block_size readonly description enable stats; do
		[ -e "$v/$f" ] || { why "volume lacks $f"; return 1; }
	done
	expect_val "$v/size" 0 || return 1
	expect_val "$v/block_size" 512 || return 1
	expect_val "$v/readonly" 0 || return 1
	expect_val "$v/enable" 0 || return 1
	local k
	for k in reads writes read_bytes write_bytes flushes trims write_zeroes errors; do
		[ "$(vol_stat c1 v1 "$k")" = 0 ] || { why "stats '$k' is '$(vol_stat c1 v1 "$k")', want 0"; return 1; }
	done
	# a write that is read back (trailing newline stripped)
	cfs_set "$v/description" "hello world" || return 1
	expect_val "$v/description" "hello world" || return 1
	# stats and clients are read-only
	expect_fails "$v/stats" 1 || return 1
	expect_fails "$n/clients" x || return 1
}

chk_node_bad_values() {
	local n
	n=$(knbd_node_dir c1)
	expect_errno EINVAL "$n/listen_port" abc dmesg || return 1
	expect_errno EINVAL "$n/listen_port" 0 || return 1
	expect_errno EINVAL "$n/listen_port" 65536 || return 1
	expect_errno EINVAL "$n/listen_port" -1 || return 1
	expect_errno EINVAL "$n/listen_port" "" || return 1
	expect_val "$n/listen_port" 10809 || return 1
	expect_errno OK "$n/listen_port" 65535 || return 1
	expect_val "$n/listen_port" 65535 || return 1
	expect_errno EINVAL "$n/listen_addr" 999.1.1.1 dmesg || return 1
	expect_errno EINVAL "$n/listen_addr" hello || return 1
	expect_errno EINVAL "$n/listen_addr" 1.2.3 || return 1
	expect_errno EINVAL "$n/listen_addr" "::g" || return 1
	expect_val "$n/listen_addr" 0.0.0.0 || return 1
	expect_errno OK "$n/listen_addr" ::1 || return 1
	expect_val "$n/listen_addr" ::1 || return 1
	expect_errno OK "$n/listen_addr" 127.0.0.1 || return 1
	expect_val "$n/listen_addr" 127.0.0.1 || return 1
	expect_errno EINVAL "$n/max_connections" abc dmesg || return 1
	expect_errno EINVAL "$n/enable" abc || return 1
	expect_val "$n/enable" 0 || return 1
	expect_errno OK "$n/listen_port" "$PORT" || return 1
}

chk_vol_bad_values() {
	local v
	v=$(knbd_vol_dir c1 v1)
	expect_errno EINVAL "$v/block_size" 3 dmesg || return 1
	expect_errno EINVAL "$v/block_size" 0 || return 1
	expect_errno EINVAL "$v/block_size" 1000 || return 1
	expect_errno EINVAL "$v/block_size" 8192 || return 1
	expect_errno EINVAL "$v/block_size" abc || return 1
	expect_val "$v/block_size" 512 || return 1
	expect_errno OK "$v/block_size" 1 || return 1
	expect_errno OK "$v/block_size" 4096 || return 1
	expect_val "$v/block_size" 4096 || return 1
	expect_errno OK "$v/block_size" 512 || return 1
	expect_errno EINVAL "$v/size" abc dmesg || return 1
	expect_errno EINVAL "$v/size" -5 || return 1
	expect_errno EINVAL "$v/readonly" abc || return 1
	expect_errno EINVAL "$v/enable" 7 || return 1
	expect_val "$v/size" 0 || return 1
}

chk_enable_errors() {
	local v b=$KNBD_TMP/e.img
	knbd_backing "$b" $((8 << 20)) || return 1
	v=$(knbd_vol_dir c1 v1)
	# no backing_path
	expect_errno EINVAL "$v/enable" 1 dmesg || return 1
	expect_val "$v/enable" 0 || return 1
	# missing file: ENOENT when set or at enable
	local r
	r=$(cfs_try "$v/backing_path" /nonexistent/knbd.img)
	if [ "$r" = OK ]; then
		expect_errno ENOENT "$v/enable" 1 dmesg || return 1
	elif [ "$r" != ENOENT ]; then
		why "backing_path of a missing file: $r, want ENOENT (now or at enable)"
		return 1
	fi
	expect_val "$v/enable" 0 || return 1
	# a directory is not a valid backing
	r=$(cfs_try "$v/backing_path" "$KNBD_TMP")
	if [ "$r" = OK ]; then
		expect_fails "$v/enable" 1 || { why "enable with a directory as backing succeeded"; return 1; }
	fi
	expect_val "$v/enable" 0 || return 1
	# size not a multiple of block_size
	cfs_set "$v/backing_path" "$b" || return 1
	einval_set_or_enable "$v" size 1000 || return 1
	cfs_set "$v/size" 0 || return 1
	cfs_set "$v/block_size" 4096 || return 1
	einval_set_or_enable "$v" size $((1 << 20 | 512)) || return 1
	cfs_set "$v/size" 0 || return 1
	cfs_set "$v/block_size" 512 || return 1
	# a backing file whose size is not a multiple of block_size (size 0 = file
	# size): refused, or exported rounded down to a whole block
	truncate -s $((8 << 20 | 100)) "$b"
	r=$(cfs_try "$v/enable" 1)
	if [ "$r" = OK ]; then
		knbd_node_enable c1 || return 1
		local sz
		sz=$(nbd_size_of v1)
		cfs_set "$v/enable" 0 || return 1
		knbd_node_disable c1 || return 1
		[ "$sz" = $((8 << 20)) ] || { why "backing of 8 MiB+100 bytes exported as '$sz' bytes, want EINVAL or $((8 << 20))"; return 1; }
	elif [ "$r" != EINVAL ]; then
		why "enable with a backing of 8 MiB+100 bytes: $r, want EINVAL (or rounding down)"
		return 1
	fi
	truncate -s $((8 << 20)) "$b"
	# size larger than a block device
	knbd_backing "$KNBD_TMP/loop.img" $((8 << 20)) || return 1
	modprobe loop 2>/dev/null
	LOOPDEV=$(losetup -f --show "$KNBD_TMP/loop.img" 2>&1) || { why "losetup failed: $LOOPDEV"; LOOPDEV=''; return 1; }
	mkdir "$(knbd_vol_dir c1 blk)" || { why "mkdir blk"; return 1; }
	cfs_set "$(knbd_vol_dir c1 blk)/backing_path" "$LOOPDEV" || return 1
	cfs_set "$(knbd_vol_dir c1 blk)/size" $((16 << 20)) || return 1
	expect_errno EINVAL "$(knbd_vol_dir c1 blk)/enable" 1 dmesg || return 1
	expect_val "$(knbd_vol_dir c1 blk)/enable" 0 || return 1
	# ... and a valid block device export works (size 0 = device size)
	cfs_set "$(knbd_vol_dir c1 blk)/size" 0 || return 1
	cfs_set "$(knbd_vol_dir c1 blk)/enable" 1 || return 1
	cfs_set "$v/enable" 1 || return 1
	knbd_node_enable c1 || return 1
	local s
	s=$(nbd_size_of blk)
	[ "$s" = $((8 << 20)) ] || { why "block device export size '$s', want $((8 << 20))"; return 1; }
	local out
	out=$(with_timeout 60 qemu-io -f raw "nbd://127.0.0.1:$PORT/blk" -c 'write -P 0x42 4096 8192' 2>&1) || { why "write to blk export: $out"; return 1; }
	cmp -s <(dd if="$LOOPDEV" bs=4096 skip=1 count=2 iflag=direct status=none) <(head -c 8192 /dev/zero | tr '\0' 'B') ||
		{ why "data written to the block-device export is not on the device"; return 1; }
	s=$(nbd_size_of v1)
	[ "$s" = $((8 << 20)) ] || { why "v1 export size '$s', want $((8 << 20))"; return 1; }
	cfs_set "$(knbd_vol_dir c1 blk)/enable" 0 || return 1
	rmdir "$(knbd_vol_dir c1 blk)" || { why "rmdir blk"; return 1; }
	losetup -d "$LOOPDEV" && LOOPDEV=''
}

chk_ebusy_node() {
	local n
	ensure_base || return 1
	n=$(knbd_node_dir c1)
	expect_val "$n/enable" 1 || return 1
	expect_errno EBUSY "$n/listen_port" 10900 || return 1
	expect_errno EBUSY "$n/listen_addr" 0.0.0.0 || return 1
	expect_errno EBUSY "$n/max_connections" 5 || return 1
	expect_val "$n/listen_port" "$PORT" || return 1
	expect_val "$n/max_connections" 64 || return 1
	# enabled node really listens; disabled node does not
	probe_read v1 || { why "enabled node does not serve v1"; return 1; }
	knbd_node_disable c1 || return 1
	if probe_read v1; then why "disabled node still serves"; return 1; fi
	expect_errno OK "$n/max_connections" 5 || return 1
	expect_errno OK "$n/max_connections" 64 || return 1
	knbd_node_enable c1 || return 1
	probe_read v1 || { why "re-enabled node does not serve v1"; return 1; }
}

chk_ebusy_vol() {
	local v
	ensure_base || return 1
	v=$(knbd_vol_dir c1 v1)
	expect_val "$v/enable" 1 || return 1
	expect_errno EBUSY "$v/backing_path" "$KNBD_TMP/other.img" || return 1
	expect_errno EBUSY "$v/size" 4096 || return 1
	expect_errno EBUSY "$v/block_size" 4096 || return 1
	expect_errno EBUSY "$v/readonly" 1 || return 1
	expect_val "$v/block_size" 512 || return 1
	expect_val "$v/readonly" 0 || return 1
	cfs_set "$v/enable" 0 || return 1
	if probe_read v1; then why "disabled volume still served"; return 1; fi
	expect_errno OK "$v/readonly" 1 || return 1
	expect_errno OK "$v/readonly" 0 || return 1
	cfs_set "$v/enable" 1 || return 1
	probe_read v1 || { why "re-enabled volume not served"; return 1; }
}

chk_size_rules() {
	local v s b=$KNBD_TMP/e.img
	ensure_base || return 1
	v=$(knbd_vol_dir c1 v1)
	cfs_set "$v/enable" 0 || return 1
	cfs_set "$v/size" $((4 << 20)) || return 1
	cfs_set "$v/enable" 1 || return 1
	s=$(nbd_size_of v1)
	[ "$s" = $((4 << 20)) ] || { why "explicit size 4 MiB: export size '$s'"; return 1; }
	# reading beyond the configured size fails even though the file is larger
	if with_timeout 60 qemu-io -r -f raw "nbd://127.0.0.1:$PORT/v1" -c "read $((4 << 20)) 4096" 2>&1 | grep -qE '^read [0-9]+/'; then
		why "read beyond the configured size succeeded"
		return 1
	fi
	# size 0 follows the backing file at enable time
	cfs_set "$v/enable" 0 || return 1
	cfs_set "$v/size" 0 || return 1
	truncate -s $((12 << 20)) "$b"
	cfs_set "$v/enable" 1 || return 1
	s=$(nbd_size_of v1)
	[ "$s" = $((12 << 20)) ] || { why "size 0 after growing the file to 12 MiB: export size '$s'"; return 1; }
}

chk_enable_cycles() {
	local i s n v
	ensure_base || return 1
	local want
	want=$(cfs_get "$(knbd_vol_dir c1 v1)/size")
	[ "$want" != 0 ] || want=$(stat -c %s "$KNBD_TMP/e.img")
	n=$(knbd_node_dir c1)
	v=$(knbd_vol_dir c1 v1)
	for i in 1 2 3 4 5; do
		cfs_set "$v/enable" 0 || return 1
		cfs_set "$v/enable" 1 || return 1
		cfs_set "$n/enable" 0 || return 1
		cfs_set "$n/enable" 1 || return 1
		s=$(nbd_size_of v1)
		[ "$s" = "$want" ] || { why "cycle $i: export size '$s'"; return 1; }
	done
	# fast cycles under a connecting client
	python3 - "$PORT" <<'EOF' &
import socket, sys, time
end = time.time() + 8
while time.time() < end:
    try:
        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
        s.recv(18)
        s.close()
    except OSError:
        time.sleep(0.01)
EOF
	local cpid=$!
	PIDS+=("$cpid")
	for i in $(seq 1 20); do
		cfs_set "$n/enable" 0 || return 1
		cfs_set "$n/enable" 1 || return 1
		cfs_set "$v/enable" 0 || return 1
		cfs_set "$v/enable" 1 || return 1
	done
	wait_until 30 pid_gone "$cpid"
	kill "$cpid" 2>/dev/null
	s=$(nbd_size_of v1)
	[ "$s" = "$want" ] || { why "after fast cycles: export size '$s'"; return 1; }
}

chk_vol_disable_closes_clients() {
	local v2b=$KNBD_TMP/v2.img
	ensure_base || return 1
	knbd_backing "$v2b" $((8 << 20)) || return 1
	knbd_vol_create c1 v2 "$v2b" || return 1
	probe_hold "$KNBD_TMP/h1.txt" v1 60 || return 1
	local p1=$PROBE_PID
	PIDS+=("$p1")
	probe_hold "$KNBD_TMP/h2.txt" v2 60 || return 1
	local p2=$PROBE_PID
	PIDS+=("$p2")
	wait_until_sh 10 '[ "$(clients_count c1)" -ge 2 ]' || { why "clients lists $(clients_count c1) connections, want 2"; return 1; }
	cfs_set "$(knbd_vol_dir c1 v1)/enable" 0 || return 1
	probe_closed "$KNBD_TMP/h1.txt" "$p1" 10 || { why "client of the disabled volume not closed: $(cat "$KNBD_TMP/h1.txt")"; return 1; }
	grep -q CLOSED "$KNBD_TMP/h2.txt" && { why "client of the other volume was closed too"; return 1; }
	wait_until_sh 10 '[ "$(clients_count c1 v1)" -eq 0 ]' || { why "clients still lists v1 connections"; return 1; }
	# rmdir of a volume with a client closes it too
	rmdir "$(knbd_vol_dir c1 v2)" || { why "rmdir v2 with a client failed"; return 1; }
	probe_closed "$KNBD_TMP/h2.txt" "$p2" 10 || { why "client of the removed volume not closed: $(cat "$KNBD_TMP/h2.txt")"; return 1; }
	cfs_set "$(knbd_vol_dir c1 v1)/enable" 1 || return 1
	probe_read v1 || { why "v1 not served after re-enable"; return 1; }
}

chk_rmdir_vol_under_nbd_client() {
	local b=$KNBD_TMP/r.img out
	ensure_base || return 1
	knbd_backing "$b" $((16 << 20)) || return 1
	knbd_vol_create c1 r "$b" || return 1
	nbd_attach /dev/nbd0 r 2 "$PORT" -t 10 || return 1
	dd if=/dev/urandom of=/dev/nbd0 bs=64k count=16 oflag=direct status=none || { why "initial write failed"; return 1; }
	with_timeout 30 rmdir "$(knbd_vol_dir c1 r)" || { why "rmdir of a volume with nbd-client attached failed/hung"; return 1; }
	[ ! -d "$(knbd_vol_dir c1 r)" ] || { why "volume dir still there"; return 1; }
	wait_until_sh 10 '[ "$(clients_count c1 r)" -eq 0 ]' || { why "clients still lists r"; return 1; }
	# I/O now fails (no hang beyond the bounded wait)
	local rc=0
	with_timeout 90 dd if=/dev/nbd0 of=/dev/null bs=4k count=1 skip=100 iflag=direct status=none 2>/dev/null || rc=$?
	[ "$rc" -ne 0 ] || { why "read from the nbd device still succeeds after its volume was removed"; return 1; }
	[ "$rc" -ne 124 ] || { why "read from the nbd device hung for 90 s after rmdir"; return 1; }
	nbd_detach /dev/nbd0 || return 1
}

chk_node_disable_closes_clients() {
	ensure_base || return 1
	nbd_attach /dev/nbd1 v1 2 "$PORT" -t 10 || return 1
	wait_until_sh 10 '[ "$(clients_count c1 v1)" -eq 2 ]' || { why "clients lists $(clients_count c1 v1) v1 connections, want 2"; return 1; }
	python3 "$KNBD_TESTS_DIR/nbd_probe.py" hold-handshake 127.0.0.1 "$PORT" 60 >"$KNBD_TMP/hh.txt" 2>&1 &
	local hp=$!
	PIDS+=("$hp")
	wait_until 20 grep -q READY "$KNBD_TMP/hh.txt" || { why "handshake-phase client not ready: $(cat "$KNBD_TMP/hh.txt")"; return 1; }
	knbd_node_disable c1 || return 1
	wait_until_sh 10 '[ "$(clients_count c1)" -eq 0 ]' || { why "clients not empty after node disable: $(cat "$(knbd_node_dir c1)/clients")"; return 1; }
	probe_closed "$KNBD_TMP/hh.txt" "$hp" 10 || { why "handshake-phase connection not closed by node disable"; return 1; }
	local rc=0
	with_timeout 90 dd if=/dev/nbd1 of=/dev/null bs=4k count=1 skip=7 iflag=direct status=none 2>/dev/null || rc=$?
	[ "$rc" -ne 0 ] || { why "nbd device still reads after node disable"; return 1; }
	[ "$rc" -ne 124 ] || { why "read from the nbd device hung for 90 s after node disable"; return 1; }
	nbd_detach /dev/nbd1 || return 1
	knbd_node_enable c1 || return 1
	nbd_attach /dev/nbd1 v1 2 "$PORT" -t 10 || return 1
	dd if=/dev/nbd1 of=/dev/null bs=4k count=16 iflag=direct status=none || { why "read after re-enable failed"; return 1; }
	nbd_detach /dev/nbd1 || return 1
}

chk_same_port_twice() {
	ensure_base || return 1
	knbd_node_create c2 "$PORT" 127.0.0.1 || return 1
	knbd_backing "$KNBD_TMP/c2.img" $((1 << 20)) || return 1
	knbd_vol_create c2 w "$KNBD_TMP/c2.img" || return 1
	expect_fails "$(knbd_node_dir c2)/enable" 1 || { why "second node on the same address:port enabled"; return 1; }
	expect_val "$(knbd_node_dir c2)/enable" 0 || return 1
	probe_read v1 || { why "first node broken by the failed enable"; return 1; }
	cfs_set "$(knbd_node_dir c2)/listen_port" 10814 || return 1
	knbd_node_enable c2 || return 1
	probe_read w 10814 || { why "second node on another port does not serve"; return 1; }
}

chk_two_nodes_default_settings() {
	# only listen_addr/listen_port set, everything else default: two nodes on
	# one address with different ports must both serve
	local d
	knbd_backing "$KNBD_TMP/d1.img" $((1 << 20)) || return 1
	for d in d1:10815 d2:10816; do
		mkdir "$(knbd_node_dir "${d%%:*}")" || { why "mkdir ${d%%:*}"; return 1; }
		cfs_set "$(knbd_node_dir "${d%%:*}")/listen_addr" 127.0.0.1 || return 1
		cfs_set "$(knbd_node_dir "${d%%:*}")/listen_port" "${d#*:}" || return 1
		knbd_vol_create "${d%%:*}" x "$KNBD_TMP/d1.img" readonly=1 || return 1
	done
	local r1 r2 rc=0
	r1=$(cfs_try "$(knbd_node_dir d1)/enable" 1)
	r2=$(cfs_try "$(knbd_node_dir d2)/enable" 1)
	if [ "$r1" != OK ] || [ "$r2" != OK ]; then
		why "enabling two default nodes on 127.0.0.1:10815 and :10816: $r1, $r2 $(dmesg | grep -E 'knbd.*(bind|d1|d2)' | tail -n 2 | tr '\n' ' ')"
		rc=1
	elif ! probe_read x 10815 || ! probe_read x 10816; then
		why "two default nodes do not both serve"
		rc=1
	fi
	for d in d1 d2; do
		cfs_set "$(knbd_node_dir $d)/enable" 0
		rmdir "$(knbd_vol_dir $d x)" "$(knbd_node_dir $d)"
	done
	return $rc
}

chk_rmdir_notempty() {
	local out
	if out=$(rmdir "$(knbd_node_dir c2)" 2>&1); then
		why "rmdir of a node with volumes succeeded"
		return 1
	fi
	[ "$(errno_name "$out")" = ENOTEMPTY ] || { why "rmdir node with volumes: $out, want ENOTEMPTY"; return 1; }
	[ -d "$(knbd_node_dir c2)" ] || { why "node vanished"; return 1; }
	rmdir "$(knbd_vol_dir c2 w)" || { why "rmdir volume"; return 1; }
	rmdir "$(knbd_node_dir c2)" || { why "rmdir of the emptied (enabled) node failed"; return 1; }
	if probe_read w 10814; then why "removed node still listens"; return 1; fi
}

chk_rmmod_in_use() {
	local out
	ensure_base || return 1
	if out=$(with_timeout 60 rmmod knbd 2>&1); then
		why "rmmod succeeded with nodes configured"
		return 1
	fi
	grep -qi "in use" <<<"$out" || { why "rmmod refused with '$out', want 'in use'"; return 1; }
	knbd_loaded || { why "module gone"; return 1; }
	probe_read v1 || { why "server broken by the refused rmmod"; return 1; }
	# an empty disabled node also pins the module
	rmdir "$(knbd_vol_dir c1 v1)" || { why "rmdir v1"; return 1; }
	cfs_set "$(knbd_node_dir c1)/enable" 0 || return 1
	if with_timeout 60 rmmod knbd >/dev/null 2>&1; then
		why "rmmod succeeded with an (empty) node configured"
		return 1
	fi
	rmdir "$(knbd_node_dir c1)" || { why "rmdir node"; return 1; }
	out=$(with_timeout 60 rmmod knbd 2>&1) || { why "rmmod after removing the config: $out"; return 1; }
	! knbd_loaded || { why "module still loaded"; return 1; }
}

chk_reload() {
	local i s
	for i in 1 2 3; do
		knbd_load || return 1
		knbd_simple rl v $((4 << 20)) "$PORT" || return 1
		s=$(nbd_size_of v)
		[ "$s" = $((4 << 20)) ] || { why "reload $i: export size '$s'"; return 1; }
		knbd_unload || return 1
		if probe_read v; then why "reload $i: still serving after rmmod"; return 1; fi
	done
}

# The checks below write many values: without a fork per write (a process
# start costs ~0.5 s in the TCG guest), and with the dmesg reasons collected
# in REASONS and looked up once per check (reasons_logged).

# cfs_w FILE VALUE: write VALUE; CFS_R = OK or the errno name
cfs_w() {
	local ef=$KNBD_TMP/.cfs_w out=''
	if { printf '%s\n' "$2" >"$1"; } 2>"$ef"; then
		CFS_R=OK
		return 0
	fi
	IFS= read -r -d '' out <"$ef"
	case $out in
	*"Invalid argument"*) CFS_R=EINVAL ;;
	*"Device or resource busy"*) CFS_R=EBUSY ;;
	*) CFS_R="E?($out)" ;;
	esac
}

# cfs_r FILE: CFS_V = its value, trailing newline stripped
cfs_r() {
	local x=''
	IFS= read -r -d '' x <"$1" 2>/dev/null
	CFS_V=${x%$'\n'}
}

# want FILE VALUE ERRNO [VALUE_AFTER]: the write gives ERRNO, then the
# attribute reads VALUE_AFTER (default: VALUE for OK, else what it was)
want() {
	local f=$1 v=$2 e=$3 before
	cfs_r "$f"
	before=$CFS_V
	cfs_w "$f" "$v"
	[ "$CFS_R" = "$e" ] || { why "write '$v' > ${f#"$KNBD_CFS"/}: $CFS_R, want $e"; return 1; }
	[ "$e" = OK ] && before=$v
	cfs_r "$f"
	[ "$CFS_V" = "${4-$before}" ] ||
		{ why "after write '$v' ($e), ${f#"$KNBD_CFS"/} reads '$CFS_V', want '${4-$before}'"; return 1; }
}

# refused FILE VALUE REGEX: EINVAL, value unchanged, and (reasons_logged)
# a "knbd: REGEX" line, which names node, node/volume or node/peers/peer
refused() {
	want "$1" "$2" EINVAL || return 1
	REASONS+=("$3")
}

# reasons_logged MARK: every REASONS regex has a "knbd: " line since MARK
reasons_logged() {
	local text re
	text=$(dmesg_since "$1" | grep 'knbd: ')
	for re in "${REASONS[@]}"; do
		[[ $text =~ knbd:\ $re ]] || { why "no 'knbd: $re' in dmesg"; return 1; }
	done
}

# booleans take the whole value, numbers are base 10, every refusal says why
chk_parse_strict() {
	local n v p mark
	ensure_base || return 1
	n=$(knbd_node_dir c1)
	v=$(knbd_vol_dir c1 pz)
	mkdir "$v" || { why "mkdir pz"; return 1; }
	REASONS=()
	kmsg_mark_set parse
	mark=$KMSG_MARK
	# enabled node and volume: a bad value must neither disable nor change them
	refused "$n/enable" nonsense 'c1: enable must be 0 or 1' || return 1
	refused "$n/enable" 2 'c1: enable' || return 1
	refused "$n/enable" 10 'c1: enable' || return 1
	refused "$(knbd_vol_dir c1 v1)/enable" nonsense 'c1/v1: enable must be 0 or 1' || return 1
	refused "$n/balance" 10 'c1: balance must be' || return 1
	refused "$v/readonly" 10 'c1/pz: readonly must be' || return 1
	refused "$v/readonly" yes 'c1/pz: readonly' || return 1
	refused "$v/readonly" "" 'c1/pz: readonly' || return 1
	want "$v/readonly" on OK 1 || return 1
	want "$v/readonly" 0 OK || return 1
	refused "$v/enable" nonsense 'c1/pz: enable must be' || return 1
	# base 10 only: no hex, and a leading 0 is not octal (01000 was 512)
	refused "$n/io_timeout" 0x10 'c1: io_timeout must be' || return 1
	refused "$v/block_size" 01000 'c1/pz: block_size must be' || return 1
	refused "$v/size" 0x100000 'c1/pz: size: not a number' || return 1
	refused "$v/size" "1M junk" 'c1/pz: size' || return 1
	refused "$v/extent_size" 0x100000 'c1/pz: extent_size must be' || return 1
	want "$v/size" 1M OK 1048576 || return 1
	want "$v/size" 0010 OK 10 || return 1
	want "$v/size" 0 OK || return 1
	# peers (the node must be disabled to add one)
	knbd_node_disable c1 || return 1
	want "$n/listen_port" 010 OK 10 || return 1
	refused "$n/listen_port" 0x2a 'c1: listen_port must be' || return 1
	want "$n/listen_port" "$PORT" OK || return 1
	want "$n/max_connections" 010 OK 10 || return 1
	want "$n/max_connections" 64 OK || return 1
	p=$n/peers/pp
	mkdir "$p" || { why "mkdir peer pp"; return 1; }
	refused "$p/addr" 111111111111111111111111111111111111111111111111111111111111 \
		'c1/peers/pp: addr longer than' || return 1
	refused "$p/addr" 300.1.1.1 'c1/peers/pp: addr is not' || return 1
	refused "$p/port" 0x10 'c1/peers/pp: port must be' || return 1
	refused "$p/node_id" 0x10 'c1/peers/pp: node_id must be' || return 1
	want "$p/port" 010 OK 10 || return 1
	want "$p/node_id" 010 OK 10 || return 1
	rmdir "$p" "$v" || { why "rmdir pp/pz"; return 1; }
	knbd_node_enable c1 || return 1
	probe_read v1 || { why "v1 not served after the refused writes"; return 1; }
	reasons_logged "$mark"
}

# node rl: 127.0.0.1:10820, member port 10821, node_id 1, one peer (node 2,
# which never answers: port 1), so the member listener runs
RL=$KNBD_CFS/nodes/rl
RL_KEY=00112233445566778899aabbccddeeff	# node rl's group key (the raw member proves it)

# set_ok FILE VALUE: cfs_set without a fork
set_ok() {
	cfs_w "$1" "$2"
	[ "$CFS_R" = OK ] || { why "write '$2' > ${1#"$KNBD_CFS"/}: $CFS_R"; return 1; }
}

rl_setup() {
	knbd_loaded || knbd_load || return 1
	[ -d "$RL" ] && return 0
	KNBD_KEEP_PEER_PORT=1 knbd_node_create rl 10820 127.0.0.1 || return 1
	set_ok "$RL/peer_port" 10821 || return 1
	mkdir "$RL/peers/p2" || { why "mkdir peer p2"; return 1; }
	set_ok "$RL/peers/p2/addr" 127.0.0.1 || return 1
	set_ok "$RL/peers/p2/port" 1 || return 1
	set_ok "$RL/peers/p2/node_id" 2 || return 1
	set_ok "$RL/io_timeout" 60 || return 1
	set_ok "$RL/group_key" "$RL_KEY" || return 1
	knbd_node_enable rl || return 1
}

# rl_teardown: remove node rl whatever state a failed check left it in
rl_teardown() {
	local x
	[ -d "$RL" ] || return 0
	for x in "$RL"/volumes/*/; do
		[ -d "$x" ] || continue
		with_timeout 30 rmdir "$x"
	done
	with_timeout 30 sh -c "echo 0 > '$RL/enable'"
	for x in "$RL"/peers/*/; do
		[ -d "$x" ] && rmdir "$x"
	done
	rmdir "$RL"
}

# rl_vol VOL: an 8 MiB volume of rl, routed to this node alone, enabled
rl_vol() {
	local b=$KNBD_TMP/rl-$1.img d=$RL/volumes/$1
	knbd_backing "$b" $((8 << 20)) || return 1
	mkdir "$d" || { why "mkdir $1"; return 1; }
	set_ok "$d/backing_path" "$b" || return 1
	set_ok "$d/size" 8M || return 1
	set_ok "$d/routing" "epoch 1; stripe 1" || return 1
	set_ok "$d/enable" 1 || return 1
}

# run_stuck OUT ARGS...: the raw member in the background (STUCK_PID), ready
run_stuck() {
	local out=$1
	shift
	rm -f "$KNBD_TMP/go"
	python3 "$KNBD_TESTS_DIR/member_stuck.py" 127.0.0.1 10821 --node-id 2 --key "$RL_KEY" \
		--go "$KNBD_TMP/go" "$@" >"$out" 2>&1 &
	STUCK_PID=$!
	PIDS+=("$STUCK_PID")
	wait_until 60 grep -qE 'STUCK|FAILED' "$out" && grep -q STUCK "$out" ||
		{ why "raw member not stuck: $(cat "$out")"; return 1; }
}

# a member connection stuck mid-WRITE-payload does not hold a volume's
# disable or rmdir (it used to, for io_timeout, in D state under state_lock);
# another volume's member traffic on another connection goes on
chk_member_stuck_disable() {
	local out=$KNBD_TMP/stuck.txt t0 dt mark
	rl_setup || return 1
	rl_vol s1 || return 1
	rl_vol s2 || return 1
	run_stuck "$out" --stuck "s1:$RL/volumes/s1/routing" --other "s2:$RL/volumes/s2/routing" || return 1
	grep -q B_OK1 "$out" || { why "other volume's member I/O failed before: $(cat "$out")"; return 1; }
	kmsg_mark_set stuck-disable
	mark=$KMSG_MARK
	t0=$SECONDS
	with_timeout 30 sh -c "echo 0 > '$RL/volumes/s1/enable'" || { why "disable of s1 failed or hung (30 s) under a stuck member WRITE"; return 1; }
	dt=$((SECONDS - t0))
	[ "$dt" -le 5 ] || { why "disable of s1 took ${dt}s under a stuck member WRITE, want <= 5"; return 1; }
	dmesg_has_since "$mark" 'rl/s1: member 2 .* into a WRITE of the volume being disabled' ||
		{ why "no dmesg line about the member WRITE dropped"; return 1; }
	: >"$KNBD_TMP/go"
	wait_until 30 grep -qE 'A_REPLY|A_CLOSED|FAILED' "$out" || { why "raw member did not finish: $(cat "$out")"; return 1; }
	grep -q B_OK2 "$out" || { why "other volume's member I/O failed after the disable: $(cat "$out")"; return 1; }
	grep -q 'A_REPLY status=1 ' "$out" || { why "stuck WRITE not answered NO_VOLUME on its still open link: $(cat "$out")"; return 1; }
	wait "$STUCK_PID" 2>/dev/null
	# the same with rmdir
	set_ok "$RL/volumes/s1/enable" 1 || return 1
	run_stuck "$out" --stuck "s1:$RL/volumes/s1/routing" || return 1
	t0=$SECONDS
	with_timeout 30 rmdir "$RL/volumes/s1" || { why "rmdir of s1 failed or hung (30 s) under a stuck member WRITE"; return 1; }
	dt=$((SECONDS - t0))
	[ "$dt" -le 5 ] || { why "rmdir of s1 took ${dt}s under a stuck member WRITE, want <= 5"; return 1; }
	: >"$KNBD_TMP/go"
	wait_until 30 grep -qE 'A_REPLY|A_CLOSED|FAILED' "$out" || { why "raw member did not finish after rmdir: $(cat "$out")"; return 1; }
	grep -q 'A_REPLY status=1 ' "$out" || { why "stuck WRITE after rmdir: $(cat "$out")"; return 1; }
	wait "$STUCK_PID" 2>/dev/null
	rmdir "$RL/volumes/s2" || { why "rmdir s2"; return 1; }
}

# route ERRNO ATTR VOL TABLE [REGEX]: write TABLE to VOL's ATTR (routing
# or routing_force); with REGEX, dmesg must explain (reasons_logged)
route() {
	cfs_w "$RL/volumes/$3/$2" "$4"
	[ "$CFS_R" = "$1" ] || { why "'$4' > $3/$2: $CFS_R, want $1"; return 1; }
	[ -z "${5:-}" ] || REASONS+=("$5")
}

# route_is VOL EPOCH [LAYOUT]: the published table
route_is() {
	cfs_r "$RL/volumes/$1/routing"
	[[ $CFS_V == *$'\n'"epoch $2"$'\n'"${3:-}"* ]] || { why "$1 routing is '$CFS_V', want epoch $2 ${3:-}"; return 1; }
}

# the routing safety rail: owner changes of an enabled volume need
# routing_force, unknown members are refused, same owners may take a new epoch
chk_routing_rail() {
	local d=$RL/volumes/ra b=$KNBD_TMP/rl-ra.img mark
	rl_setup || return 1
	knbd_backing "$b" $((8 << 20)) || return 1
	mkdir "$d" || { why "mkdir ra"; return 1; }
	set_ok "$d/backing_path" "$b" || return 1
	set_ok "$d/size" 8M || return 1
	REASONS=()
	kmsg_mark_set rail
	mark=$KMSG_MARK
	# disabled: any table of known members
	route OK routing ra "epoch 1; stripe 1 2" || return 1
	route OK routing ra "epoch 1; stripe 2" || return 1
	route EINVAL routing ra "epoch 2; stripe 1 3" 'rl/ra: routing epoch 2 names member 3, which is neither this node \(1\) nor a configured peer' || return 1
	route EINVAL routing_force ra "epoch 2; 0-3 1; 4-7 9" 'rl/ra: routing epoch 2 names member 9' || return 1
	route_is ra 1 "stripe 2" || return 1
	route OK routing ra "epoch 1; stripe 1" || return 1
	set_ok "$d/enable" 1 || return 1
	# enabled: same owners with a newer epoch
	route OK routing ra "epoch 2; 0-7 1" || return 1
	route_is ra 2 || return 1
	# an owner change is refused, with the first extent that moves
	route EBUSY routing ra "epoch 3; stripe 1 2" \
		'rl/ra: routing epoch 3 refused: it moves 4 extent\(s\) of the enabled volume, first extent 1 \(offset 1048576\) from member 1 to member 2; knbd moves no data, write the table to routing_force' || return 1
	route EBUSY routing ra "epoch 3; 0-6 1; 7 2" 'rl/ra: routing epoch 3 refused: it moves 1 extent\(s\) of the enabled volume, first extent 7 \(offset 7340032\) from member 1 to member 2' || return 1
	route_is ra 2 || return 1
	# unknown members, enabled: refused through both attributes
	route EINVAL routing ra "epoch 3; stripe 1 3" || return 1
	route EINVAL routing_force ra "epoch 3; stripe 1 3" 'rl/ra: routing epoch 3 names member 3' || return 1
	# routing_force publishes it, with a warning
	route OK routing_force ra "epoch 3; stripe 1 2" 'rl/ra: routing_force: epoch 3 moves 4 extent\(s\), first extent 1 .*without moving their data' || return 1
	route_is ra 3 "stripe 1 2" || return 1
	# removing the table would give member 2's extents back to this node
	route EBUSY routing ra "" 'rl/ra: routing removal, epoch 3 refused' || return 1
	route OK routing ra "epoch 4; stripe 1 2" || return 1
	route EINVAL routing ra "epoch 3; stripe 1 2" 'rl/ra: routing epoch 3 is older than the current 4' || return 1
	probe_read ra 10820 || { why "ra not served"; return 1; }
	# a peer removed later: warned about, and enable refuses the stale table
	set_ok "$d/enable" 0 || return 1
	knbd_node_disable rl || return 1
	rmdir "$RL/peers/p2" || { why "rmdir peer p2"; return 1; }
	REASONS+=('rl/ra: routing epoch 4 names member 2 of the removed peer p2')
	want "$d/enable" 1 EINVAL || return 1
	REASONS+=('rl/ra: routing epoch 4 names member 2, which is neither')
	route OK routing ra "epoch 5; stripe 1" || return 1
	set_ok "$d/enable" 1 || return 1
	reasons_logged "$mark"
}

# node rl goes whatever happened: cfg_rmmod_in_use needs it gone
chk_routing_rail_and_teardown() {
	local rc=0
	chk_routing_rail || rc=1
	rl_teardown || { [ $rc = 1 ] || why "cannot remove node rl"; rc=1; }
	return $rc
}

t_run cfg_load chk_load
t_run cfg_defaults chk_defaults
t_run cfg_node_bad_values chk_node_bad_values
t_run cfg_vol_bad_values chk_vol_bad_values
t_run cfg_enable_errors chk_enable_errors
t_run cfg_ebusy_node chk_ebusy_node
t_run cfg_ebusy_vol chk_ebusy_vol
t_run cfg_size_rules chk_size_rules
t_run cfg_enable_cycles chk_enable_cycles
t_run cfg_vol_disable_closes_clients chk_vol_disable_closes_clients
t_run cfg_rmdir_vol_under_nbd_client chk_rmdir_vol_under_nbd_client
t_run cfg_node_disable_closes_clients chk_node_disable_closes_clients
t_run cfg_same_port_twice chk_same_port_twice
t_run cfg_two_nodes_default_settings chk_two_nodes_default_settings
t_run cfg_rmdir_notempty chk_rmdir_notempty
t_run cfg_parse_strict chk_parse_strict
t_run cfg_member_stuck_disable chk_member_stuck_disable
t_run cfg_routing_rail chk_routing_rail_and_teardown
t_run cfg_rmmod_in_use chk_rmmod_in_use
t_run cfg_reload chk_reload
t_done
