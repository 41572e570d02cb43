#!/bin/bash
# NBD wire-protocol checks (test_proto.py) against knbd: one node with a
# read-write, a read-only, a 4096-block and a disabled volume, plus a second
# node with a small max_connections for the connection flood.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

N=proto
FN=flood
PORT=10809
FPORT=10810
FMAX=8
SIZE=$((64 << 20))
RO_SIZE=$((16 << 20))
DESC="knbd proto test volume"

setup() {
	knbd_load || return 1
	knbd_backing "$KNBD_TMP/rw.img" "$SIZE" || return 1
	knbd_backing "$KNBD_TMP/ro.img" "$RO_SIZE" random || return 1
	knbd_backing "$KNBD_TMP/bs4k.img" $((16 << 20)) || return 1
	knbd_backing "$KNBD_TMP/off.img" $((16 << 20)) || return 1
	knbd_backing "$KNBD_TMP/fl.img" $((16 << 20)) || return 1
	knbd_node_create "$N" "$PORT" 127.0.0.1 || return 1
	knbd_vol_create "$N" rw "$KNBD_TMP/rw.img" "description=$DESC" || return 1
	knbd_vol_create "$N" ro "$KNBD_TMP/ro.img" readonly=1 || return 1
	knbd_vol_create "$N" bs4k "$KNBD_TMP/bs4k.img" block_size=4096 || return 1
	knbd_vol_create "$N" off "$KNBD_TMP/off.img" enable=0 || return 1
	knbd_node_enable "$N" || return 1
	knbd_node_create "$FN" "$FPORT" 127.0.0.1 "$FMAX" || return 1
	knbd_vol_create "$FN" fl "$KNBD_TMP/fl.img" || return 1
	knbd_node_enable "$FN" || return 1
}

run_py() {
	with_timeout 900 python3 "$here/test_proto.py" \
		--host 127.0.0.1 --port "$PORT" \
		--export rw --size "$SIZE" --desc "$DESC" --backing "$KNBD_TMP/rw.img" \
		--ro-export ro --ro-size "$RO_SIZE" --ro-backing "$KNBD_TMP/ro.img" \
		--bs-export bs4k --disabled-export off \
		--cfs-node "$(knbd_node_dir "$N")" \
		--flood-port "$FPORT" --flood-max "$FMAX" --flood-export fl \
		--flood-cfs "$(knbd_node_dir "$FN")" \
		--fuzz-iters "${KNBD_FUZZ_ITERS:-1000}" --fuzz-seconds "${KNBD_FUZZ_SECONDS:-90}" \
		--seed "${KNBD_SEED:-12345}" --results "$KNBD_RESULTS" "$@"
}

t_run proto_setup setup
if [ "$T_NFAIL" -eq 0 ]; then
	mark=$(kmsg_mark proto_py)
	run_py "$@"
	rc=$?
	bad=$(dmesg_bad_since "$mark")
	[ -z "$bad" ] || t_fail proto_dmesg "kernel problem in dmesg during test_proto.py: $bad"
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then
		t_fail proto_py "test_proto.py exited with $rc (crashed or timed out)"
	fi
	# the server survived all of it: stock client still works on both nodes
	chk_after() {
		local out
		out=$(with_timeout 60 nbdinfo --size "nbd://127.0.0.1:$PORT/rw" 2>&1) || { why "nbdinfo after proto: $out"; return 1; }
		[ "$out" = "$SIZE" ] || { why "nbdinfo size '$out', want $SIZE"; return 1; }
		out=$(with_timeout 60 nbdinfo --size "nbd://127.0.0.1:$FPORT/fl" 2>&1) || { why "nbdinfo flood node: $out"; return 1; }
	}
	t_run proto_server_alive_after chk_after
fi
t_run proto_teardown knbd_unload
t_done
