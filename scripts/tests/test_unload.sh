#!/bin/bash
# Tear knbd down under load: fio on a 4-connection nbd-client device, a
# qemu-io loop, raw clients in handshake and transmission phase; rmdir the
# config and rmmod while I/O runs. Everything must finish within bounds, the
# kernel must not complain, the clients must see errors (not hangs), and the
# module must load and serve again afterwards.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

N=u
PORT=10809
DEV=/dev/nbd0
A_SIZE=$((64 << 20))
B_SIZE=$((32 << 20))
TEARDOWN_LIMIT=60	# rmdir volumes + node + rmmod, seconds
PIDS=()

cleanup() {
	touch "$KNBD_TMP/stop" 2>/dev/null
	kill_bg "${PIDS[@]}" 2>/dev/null
	nbd_detach "$DEV" >/dev/null 2>&1
	knbd_unload >/dev/null 2>&1
}
trap cleanup EXIT

# back to nothing (after a failed previous check)
reset_state() {
	touch "$KNBD_TMP/stop"
	kill_bg "${PIDS[@]}" 2>/dev/null
	PIDS=()
	nbd_detach "$DEV" >/dev/null 2>&1
	knbd_unload >/dev/null 2>&1
	rm -f "$KNBD_TMP/stop"
}

setup_cfg() {
	reset_state
	knbd_load || return 1
	knbd_backing "$KNBD_TMP/a.img" "$A_SIZE" || return 1
	knbd_backing "$KNBD_TMP/b.img" "$B_SIZE" || return 1
	knbd_node_create "$N" "$PORT" || return 1
	knbd_vol_create "$N" a "$KNBD_TMP/a.img" || return 1
	knbd_vol_create "$N" b "$KNBD_TMP/b.img" || return 1
	knbd_node_enable "$N" || return 1
}

qio_loop() {
	local log=$1 end=$((SECONDS + 600)) i=0
	while [ "$SECONDS" -lt "$end" ] && [ ! -e "$KNBD_TMP/stop" ]; do
		i=$((i + 1))
		local rc=0 t0=$SECONDS
		timeout -k 5 40 qemu-io -f raw "nbd://127.0.0.1:$PORT/b" \
			-c "write -P 0x33 $(((i % 16) << 20)) 1m" -c "read -P 0x33 $(((i % 16) << 20)) 1m" \
			-c 'flush' >"$log.last" 2>&1 || rc=$?
		if [ "$rc" -eq 0 ]; then
			echo "ok $i $((SECONDS - t0))s" >>"$log"
		elif [ "$rc" -ge 124 ]; then
			echo "timeout $i $(date +%T) rc=$rc: $(tr '\n' ' ' <"$log.last" | cut -c1-200)" >>"$log"
		else
			echo "fail $i $(date +%T) rc=$rc: $(tr '\n' ' ' <"$log.last" | cut -c1-200)" >>"$log"
			sleep 0.2
		fi
	done
}

io_moving() {
	local r0 r1 w0 w1
	r0=$(vol_stat "$N" a reads)
	w0=$(vol_stat "$N" a writes)
	sleep 2
	r1=$(vol_stat "$N" a reads)
	w1=$(vol_stat "$N" a writes)
	[ -n "$r1" ] && [ $((r1 + w1)) -gt $((r0 + w0)) ]
}

# teardown_timed: rmdir volumes, node, rmmod; each bounded; sets T_TEARDOWN
teardown_timed() {
	local t0=$SECONDS out v
	for v in a b; do
		out=$(with_timeout 30 rmdir "$(knbd_vol_dir "$N" "$v")" 2>&1) || { why "rmdir volume $v under load: ${out:-timeout}"; return 1; }
	done
	out=$(with_timeout 30 rmdir "$(knbd_node_dir "$N")" 2>&1) || { why "rmdir node under load: ${out:-timeout}"; return 1; }
	out=$(with_timeout 60 rmmod knbd 2>&1) || { why "rmmod under load: ${out:-timeout}"; return 1; }
	! knbd_loaded || { why "knbd still loaded after rmmod"; return 1; }
	T_TEARDOWN=$((SECONDS - t0))
	log "    teardown took ${T_TEARDOWN}s"
	[ "$T_TEARDOWN" -le "$TEARDOWN_LIMIT" ] || { why "teardown took ${T_TEARDOWN}s (> ${TEARDOWN_LIMIT}s)"; return 1; }
}

chk_unload_under_load() {
	rm -f "$KNBD_TMP/stop"
	setup_cfg || return 1
	nbd_attach "$DEV" a 4 "$PORT" -t 10 || return 1
	wait_until 10 test "$(clients_count "$N" a)" -eq 4 || { why "clients shows $(clients_count "$N" a) connections, want 4"; return 1; }
	probe_hold "$KNBD_TMP/hold-b.txt" b 170 || return 1
	local hpid=$PROBE_PID
	PIDS+=("$hpid")
	python3 "$KNBD_TESTS_DIR/nbd_probe.py" hold-handshake 127.0.0.1 "$PORT" 170 >"$KNBD_TMP/hold-hs.txt" 2>&1 &
	local hhpid=$!
	PIDS+=("$hhpid")
	wait_until 120 grep -q READY "$KNBD_TMP/hold-hs.txt" || { why "handshake-phase client not ready"; return 1; }
	# fio: mixed random I/O with verification, for longer than the test needs.  Each
	# job owns half the volume: two writers on the same blocks fail fio's verify
	# (fio warns so) once a fast machine finishes a pass before the teardown.
	setsid fio --name=load --filename="$DEV" --rw=randrw --bssplit=4k/40:64k/40:128k/20 \
		--iodepth=16 --ioengine=libaio --direct=1 --size=$((A_SIZE / 2)) \
		--offset_increment=$((A_SIZE / 2)) --time_based --runtime=150 \
		--verify=crc32c --verify_fatal=0 --numjobs=2 --group_reporting \
		>"$KNBD_OUT/fio-unload.txt" 2>&1 &
	local fpid=$!
	PIDS+=("$fpid")
	qio_loop "$KNBD_TMP/qio.log" &
	local qpid=$!
	PIDS+=("$qpid")
	# I/O really flows before we pull the plug (fio takes over 30 s to start on
	# the KASAN/lockdep debug kernel under TCG)
	wait_until 120 io_moving || { why "no I/O progress on volume a before teardown"; return 1; }
	wait_until 30 grep -q '^ok' "$KNBD_TMP/qio.log" || { why "qemu-io loop never succeeded before teardown: $(head -n 3 "$KNBD_TMP/qio.log" 2>/dev/null)"; return 1; }
	sleep 2
	pid_gone "$fpid" && { why "fio ended before the teardown: $(tail -n 5 "$KNBD_OUT/fio-unload.txt")"; return 1; }
	! grep -q '^verify:' "$KNBD_OUT/fio-unload.txt" ||
		{ why "fio verify failed before the teardown: $(grep -m 2 '^verify:' "$KNBD_OUT/fio-unload.txt")"; return 1; }

	local n0
	n0=$(grep -c '^fail' "$KNBD_TMP/qio.log")
	teardown_timed || return 1

	# the raw clients were disconnected
	probe_closed "$KNBD_TMP/hold-b.txt" "$hpid" 15 || { why "transmission-phase raw client not closed: $(cat "$KNBD_TMP/hold-b.txt")"; return 1; }
	probe_closed "$KNBD_TMP/hold-hs.txt" "$hhpid" 15 || { why "handshake-phase raw client not closed"; return 1; }
	# fio fails (expected) but does not hang: nbd.ko times in-flight requests out after -t 10
	wait_until 90 pid_gone "$fpid" || { why "fio still running 90 s after the teardown (hung I/O?)"; return 1; }
	wait "$fpid"
	local frc=$?
	[ "$frc" -ne 0 ] || log "    note: fio exited 0 after the teardown"
	grep -qE 'err= *[1-9]|error=' "$KNBD_OUT/fio-unload.txt" || { why "fio reported no error although its server went away"; return 1; }
	# the qemu-io loop now fails fast instead of hanging
	if ! wait_until 180 test "$(grep -c '^fail' "$KNBD_TMP/qio.log")" -gt "$n0"; then
		why "qemu-io loop got no failure within 180 s of the teardown (hung?): $(tail -n 3 "$KNBD_TMP/qio.log" | tr '\n' '|') $(ps -eo pid,stat,wchan:20,etime,args | grep '[q]emu-io' | tr '\n' '|')"
		return 1
	fi
	if grep -q '^timeout' "$KNBD_TMP/qio.log"; then
		why "a qemu-io run hung until its 40 s timeout: $(grep '^timeout' "$KNBD_TMP/qio.log" | head -n 2 | tr '\n' '|')"
		return 1
	fi
	touch "$KNBD_TMP/stop"
	wait_until 70 pid_gone "$qpid" || { why "qemu-io loop did not stop"; return 1; }
	# the device can be detached
	nbd_detach "$DEV" || return 1
}

chk_reload_and_serve() {
	setup_cfg || return 1
	nbd_attach "$DEV" a 4 "$PORT" -t 10 || return 1
	local out
	out=$(with_timeout 180 fio --name=again --filename="$DEV" --rw=randwrite --bs=64k --iodepth=8 \
		--ioengine=libaio --direct=1 --size=16M --verify=crc32c --verify_fatal=1 --do_verify=1 2>&1) ||
		{ why "fio after reload: $(grep -iE 'verify|err=' <<<"$out" | head -n 3)"; return 1; }
	out=$(with_timeout 60 qemu-io -f raw "nbd://127.0.0.1:$PORT/b" -c 'write -P 0x44 0 64k' -c 'read -P 0x44 0 64k' 2>&1) ||
		{ why "qemu-io after reload: $out"; return 1; }
	nbd_detach "$DEV" || return 1
	knbd_unload || return 1
}

chk_unload_during_connect_storm() {
	setup_cfg || return 1
	rm -f "$KNBD_TMP/stop"
	# connect/handshake/GO/close as fast as possible from two processes
	local i sp=()
	for i in 1 2; do
		python3 - "$PORT" "$KNBD_TMP/stop" "$i" <<'EOF' >"$KNBD_TMP/storm$i.log" 2>&1 &
import os, socket, struct, sys, time
port, stop, seed = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
end = time.time() + 60
n = ok = 0
while time.time() < end and not os.path.exists(stop):
    n += 1
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=3)
        s.recv(18)
        s.sendall(struct.pack(">I", 3))
        if (n + seed) % 3:
            name = b"a" if n % 2 else b"b"
            s.sendall(struct.pack(">QII", 0x49484156454F5054, 7, 6 + len(name)) +
                      struct.pack(">I", len(name)) + name + b"\0\0")
            s.recv(4096)
            ok += 1
        s.close()
    except OSError:
        time.sleep(0.01)
print("connections", n, "negotiated", ok)
EOF
		sp+=($!)
		PIDS+=($!)
	done
	sleep 3
	teardown_timed || return 1
	touch "$KNBD_TMP/stop"
	for i in "${sp[@]}"; do
		wait_until 30 pid_gone "$i" || { why "connect storm process stuck"; return 1; }
	done
	log "    $(cat "$KNBD_TMP"/storm*.log | tr '\n' ' ')"
	grep -q "negotiated [1-9]" "$KNBD_TMP"/storm*.log || { why "the connect storm never negotiated before the teardown"; return 1; }
	# and once more, a clean load/serve
	setup_cfg || return 1
	probe_read a || { why "not serving after reload"; return 1; }
	knbd_unload || return 1
}

chk_repeat_unload_under_io() {
	local i dpid out
	for i in 1 2 3; do
		rm -f "$KNBD_TMP/stop"
		setup_cfg || return 1
		nbd_attach "$DEV" a 2 "$PORT" -t 5 || return 1
		setsid fio --name=w --filename="$DEV" --rw=randwrite --bs=128k --iodepth=8 --ioengine=libaio \
			--direct=1 --time_based --runtime=60 >/dev/null 2>&1 &
		dpid=$!
		PIDS+=("$dpid")
		sleep 2
		teardown_timed || return 1
		wait_until 60 pid_gone "$dpid" || { why "cycle $i: fio still running 60 s after the teardown"; return 1; }
		nbd_detach "$DEV" || return 1
	done
}

t_run unl_under_load chk_unload_under_load
t_run unl_reload_and_serve chk_reload_and_serve
t_run unl_connect_storm chk_unload_during_connect_storm
t_run unl_repeat_under_io chk_repeat_unload_under_io
t_run unl_final knbd_unload
t_done
