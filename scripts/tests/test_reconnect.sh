#!/bin/bash
# nbd.ko keeps working when the server closes one of its connections, and
# tools/knbd-reconnect restores the lost connection: one knbd node on
# 127.0.0.1, /dev/nbd0 attached with nbd-client -C 2 (netlink), connections
# killed from the server side (ss -K on the server's socket) while fio
# write+verify (crc32c) runs.
#   - without the helper: the device keeps working on the remaining connection
#   - the helper's handshake check (-c) and a refused export (clean failure,
#     retries, SIGTERM exits 0)
#   - the helper with -r restores the connection that is already dead
#   - three kills of one connection with the helper running, then both
#     connections at once (-D: I/O waits for the reconnect instead of failing)
# The helper binary is built on the host (make tools) before the VM run.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

N=rc
PORT=10809
SIZE=$((64 << 20))
FIO_SIZE=$((32 << 20))
DEV=/dev/nbd0
TMO=10			# nbd-client -t: requests of a dead connection wait this long
HELPER=${KNBD_RECONNECT:-$KNBD_REPO/tools/knbd-reconnect}
HLOG=$KNBD_OUT/reconnect-helper.log
HPID=''
STALLS=''

# lib.sh's _nap opens its descriptor with "exec {fd}<> <(:) 2>/dev/null",
# which also sends this shell's stderr to /dev/null for good: open it here,
# with stderr put back afterwards, so that log lines stay visible
exec {_err_fd}>&2
_nap 0
exec 2>&"$_err_fd" {_err_fd}>&-

stop_helper() {
	[ -n "$HPID" ] || return 0
	kill -TERM "$HPID" 2>/dev/null
	wait_until 10 pid_gone "$HPID" || kill -KILL "$HPID" 2>/dev/null
	wait "$HPID" 2>/dev/null
	HELPER_RC=$?
	HPID=''
	return 0
}

cleanup() {
	stop_helper
	nbd_detach "$DEV" >/dev/null 2>&1
	knbd_unload >/dev/null 2>&1
}
trap cleanup EXIT

clients_file() { echo "$(knbd_node_dir "$N")/clients"; }

# connections of export v in transmission state
live_conns() { awk '$3 == "v" && /state=transmission/' "$(clients_file)" 2>/dev/null | wc -l; }

# client ports of those connections, one a line
conn_ports() {
	awk '$3 == "v" && /state=transmission/ { n = split($2, a, ":"); print a[n] }' "$(clients_file)" 2>/dev/null
}

clients_oneline() { tr '\n' '|' <"$(clients_file)" 2>/dev/null; }

# server-side sockets of our port (from client port $1, or all)
server_socks() {
	ss -Htn state established "( sport = :$PORT${1:+ and dport = :$1} )" 2>/dev/null | grep -c .
}

# kill_conn CPORT: destroy the server's socket of the connection from client
# port CPORT (tcp_abort: the client gets a RST). ss falls back to
# /proc/net/tcp, printing but killing nothing, without tcp_diag: check.
kill_conn() {
	local out
	out=$(ss -K -tn state established "( sport = :$PORT and dport = :$1 )" 2>&1) ||
		{ why "ss -K failed: $out"; return 1; }
	grep -q ":$1\b" <<<"$out" || { why "ss -K did not find the connection from port $1: $out"; return 1; }
	[ "$(server_socks "$1")" -eq 0 ] || { why "ss -K did not kill the connection from port $1"; return 1; }
	log "    killed the server side of the connection from client port $1"
}

# the port is gone from the clients listing
port_gone() { ! conn_ports | grep -qx "$1"; }

helper_lines() { grep -c -- "$1" "$HLOG" 2>/dev/null || true; }

# predicates for wait_until (it re-runs a command, it does not re-expand $(...))
live_is() { [ "$(live_conns)" -eq "$1" ]; }
conns_is() { [ "$(clients_count "$N" v)" -eq "$1" ]; }
hlines_ge() { [ "$(helper_lines "$1")" -ge "$2" ]; }
wbytes_above() { [ "$(vol_stat "$N" v write_bytes)" -gt "$1" ]; }
# every LINK_DEAD since (EV0, RC0) answered by a reconnect, and at least MIN
restored_since() {
	local ev rc
	ev=$(($(helper_lines 'LINK_DEAD event') - $1))
	rc=$(($(helper_lines 'reconnected #') - $2))
	[ "$ev" -ge "$3" ] && [ "$rc" -ge "$ev" ]
}

# start_helper ARGS...: run the helper in the background, wait until it watches
start_helper() {
	local before
	before=$(helper_lines 'watching nbd0')
	echo "---- $(date +%T) start: $*" >>"$HLOG"
	"$HELPER" -d "$DEV" -H 127.0.0.1 -p "$PORT" "$@" 2>>"$HLOG" &
	HPID=$!
	wait_until 20 hlines_ge 'watching nbd0' $((before + 1)) ||
		{ why "helper did not start: $(tail -n 3 "$HLOG" | tr '\n' '|')"; return 1; }
}

# fio_start NAME: one fio with two jobs on the device: "verify", a crc32c
# write+verify of the first FIO_SIZE bytes, throttled so that it runs across
# the kill; "reader", random 64 KiB reads of the next FIO_SIZE bytes at queue
# depth 8 for 20 s, one clone pinned to each CPU: nbd.ko maps the CPUs onto
# its hardware queues, one a connection, so every connection, the killed one
# too, has requests in flight (they stall until nbd.ko's timeout requeues
# them). FIO_PID; output in $KNBD_OUT/fio-reconnect-NAME.json
fio_start() {
	local ncpu
	ncpu=$(nproc)
	[ "$ncpu" -le 8 ] || ncpu=8
	FIO_OUT=$KNBD_OUT/fio-reconnect-$1.json
	setsid fio --filename="$DEV" --ioengine=libaio --direct=1 \
		--output-format=json --output="$FIO_OUT" \
		--name=verify --rw=randwrite --bssplit=4k/40:16k/30:64k/30 \
		--size="$FIO_SIZE" --iodepth=16 --verify=crc32c --verify_fatal=1 \
		--do_verify=1 --randseed="$RANDOM" --rate=4m \
		--name=reader --rw=randread --bs=64k --offset="$FIO_SIZE" --size="$FIO_SIZE" \
		--iodepth=8 --time_based --runtime=20 --numjobs="$ncpu" \
		--cpus_allowed=0-$((ncpu - 1)) --cpus_allowed_policy=split >/dev/null 2>&1 &
	FIO_PID=$!
}

# fio_finish: wait for it (bounded), check status and errors; FIO_MAX: the
# worst completion latency (= how long requests stalled across the kill)
fio_finish() {
	local rc=0 res
	# shellcheck disable=SC2016
	with_timeout 300 bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 0.5; done' _ "$FIO_PID"
	if kill -0 "$FIO_PID" 2>/dev/null; then
		kill -KILL -- "-$FIO_PID" 2>/dev/null
		why "fio still running after 300 s"
		return 1
	fi
	wait "$FIO_PID" || rc=$?
	res=$(python3 - "$FIO_OUT" <<'EOF' 2>&1
import json, sys
t = open(sys.argv[1]).read()
d = json.loads(t[t.index('{'):])
err, mx, out = 0, 0.0, []
for j in d["jobs"]:
    m = max(j["read"]["clat_ns"]["max"], j["write"]["clat_ns"]["max"]) / 1e9
    err = max(err, j["error"])
    mx = max(mx, m)
    out.append("%s: max %.2fs read %dKiB write %dKiB" % (j["jobname"], m,
               j["read"]["io_kbytes"], j["write"]["io_kbytes"]))
print("err=%d max_clat=%.2fs (%s)" % (err, mx, "; ".join(out)))
EOF
)
	log "    fio: rc=$rc $res"
	[ "$rc" -eq 0 ] || { why "fio exited $rc ($res)"; return 1; }
	grep -q '^err=0 ' <<<"$res" || { why "fio reported errors: $res"; return 1; }
	FIO_MAX=$(sed -n 's/.*max_clat=\([0-9.]*\)s.*/\1/p' <<<"$res")
	STALLS="$STALLS $FIO_MAX"
}

# wait until fio has moved data through the device
fio_running() {
	local w0
	w0=$(vol_stat "$N" v write_bytes)
	wait_until 60 wbytes_above $((w0 + (1 << 20)))
}

chk_setup() {
	[ -x "$HELPER" ] || { why "$HELPER missing: build it on the host first (make tools)"; return 1; }
	command -v ss >/dev/null || { why "ss (iproute2) missing"; return 1; }
	# ss -K needs sock_diag for TCP (not auto-loaded in the guest)
	modprobe tcp_diag 2>/dev/null
	[ -d /sys/module/tcp_diag ] || { why "cannot load tcp_diag (needed by ss -K)"; return 1; }
	knbd_load || return 1
	knbd_simple "$N" v "$SIZE" "$PORT" || return 1
	: >"$HLOG"
	nbd_attach "$DEV" v 2 "$PORT" -t "$TMO" || return 1
	wait_until 10 live_is 2 ||
		{ why "clients shows $(live_conns) connections, want 2: $(clients_oneline)"; return 1; }
}

chk_usage() {
	local out rc=0
	out=$("$HELPER" -h 2>&1) || rc=$?
	if [ "$rc" -ne 0 ] || ! grep -q 'usage:' <<<"$out"; then
		why "-h: rc=$rc $out"
		return 1
	fi
	rc=0
	out=$("$HELPER" 2>&1) || rc=$?
	[ "$rc" -eq 2 ] || { why "no arguments: exit $rc, want 2"; return 1; }
	rc=0
	out=$("$HELPER" -d nosuchdev -H 127.0.0.1 2>&1) || rc=$?
	[ "$rc" -eq 2 ] || { why "bad device: exit $rc, want 2"; return 1; }
}

# the helper's handshake alone (-c): good export, size checked against nbd0
chk_handshake() {
	local out rc=0
	out=$(with_timeout 20 "$HELPER" -c -H 127.0.0.1 -p "$PORT" -N v -d "$DEV" 2>&1) || rc=$?
	[ "$rc" -eq 0 ] || { why "-c -N v: exit $rc: $out"; return 1; }
	grep -q "export 'v' size $SIZE " <<<"$out" || { why "-c -N v printed: $out"; return 1; }
	rc=0
	out=$(with_timeout 20 "$HELPER" -c -H 127.0.0.1 -p "$PORT" -N nosuchexport 2>&1) || rc=$?
	[ "$rc" -eq 1 ] || { why "-c on an unknown export: exit $rc: $out"; return 1; }
	grep -q "server refused export 'nosuchexport': NBD_REP_ERR_" <<<"$out" ||
		{ why "-c on an unknown export printed: $out"; return 1; }
	rc=0
	out=$(with_timeout 20 "$HELPER" -c -H 127.0.0.1 -p 1 -N v 2>&1) || rc=$?
	if [ "$rc" -ne 1 ] || ! grep -q 'Connection refused' <<<"$out"; then
		why "-c on a closed port: exit $rc: $out"
		return 1
	fi
}

# -C 2 without the helper: one connection dies, the device goes on on the other
chk_kill_no_helper() {
	local p
	p=$(conn_ports | head -n 1)
	[ -n "$p" ] || { why "no connection listed: $(clients_oneline)"; return 1; }
	fio_start nohelper
	fio_running || { why "fio moved no data"; kill -KILL -- "-$FIO_PID" 2>/dev/null; return 1; }
	kill_conn "$p" || { kill -KILL -- "-$FIO_PID" 2>/dev/null; return 1; }
	fio_finish || return 1
	log "    device stalled at most ${FIO_MAX}s across the kill (nbd-client -t $TMO)"
	wait_until 20 port_gone "$p" || { why "connection from $p still listed: $(clients_oneline)"; return 1; }
	[ "$(live_conns)" -eq 1 ] || { why "want 1 live connection, clients: $(clients_oneline)"; return 1; }
	# still usable afterwards
	dd if="$DEV" of=/dev/null bs=64k count=64 iflag=direct status=none ||
		{ why "reads fail on the remaining connection"; return 1; }
}

# a refused export: clean failures, retries with backoff, nothing handed over,
# SIGTERM exits 0
chk_helper_bad_export() {
	start_helper -N nosuchexport -r || return 1
	wait_until 30 hlines_ge 'server refused export' 1 ||
		{ why "no refusal logged: $(tail -n 3 "$HLOG" | tr '\n' '|')"; stop_helper; return 1; }
	_nap 2
	[ "$(live_conns)" -eq 1 ] || { why "connections changed: $(clients_oneline)"; stop_helper; return 1; }
	stop_helper
	[ "$HELPER_RC" -eq 0 ] || { why "helper exited $HELPER_RC on SIGTERM"; return 1; }
	grep -q 'exiting on SIGTERM' "$HLOG" || { why "no exit summary in the helper log"; return 1; }
}

# -r: the connection killed above is restored at startup
chk_helper_startup() {
	start_helper -N v -r -D 30 || return 1
	wait_until 30 hlines_ge 'reconnected #1' 1 ||
		{ why "no reconnect at startup: $(tail -n 3 "$HLOG" | tr '\n' '|')"; return 1; }
	wait_until 20 live_is 2 ||
		{ why "clients shows $(live_conns) live connections after -r, want 2: $(clients_oneline)"; return 1; }
	wait_until 20 grep -q 'no dead connection left' "$HLOG" ||
		{ why "the helper did not notice that nothing is dead any more"; return 1; }
	grep -q 'dead-connection timeout set to 30s' "$HLOG" || { why "-D 30 not applied"; return 1; }
	# the probe connection nbd.ko did not take is gone again
	wait_until 20 conns_is 2 ||
		{ why "clients lists $(clients_count "$N" v) connections, want 2: $(clients_oneline)"; return 1; }
}

# kill_with_helper K: kill one connection under fio; the helper restores it
chk_kill_with_helper() {
	local k=$1 p ev0 rc0 ms extra
	if [ -z "$HPID" ] || pid_gone "$HPID"; then
		why "helper not running: $(tail -n 3 "$HLOG" | tr '\n' '|')"
		return 1
	fi
	ev0=$(helper_lines 'LINK_DEAD event')
	rc0=$(helper_lines 'reconnected #')
	p=$(conn_ports | sed -n "$(((k % 2) + 1))p")
	[ -n "$p" ] || { why "no connection to kill: $(clients_oneline)"; return 1; }
	fio_start "kill$k"
	fio_running || { why "fio moved no data"; kill -KILL -- "-$FIO_PID" 2>/dev/null; return 1; }
	kill_conn "$p" || { kill -KILL -- "-$FIO_PID" 2>/dev/null; return 1; }
	# one event for the kill (a request timing out on a slow machine would
	# add one more: also to be restored)
	if ! wait_until 30 restored_since "$ev0" "$rc0" 1; then
		why "after the kill: $(($(helper_lines 'LINK_DEAD event') - ev0)) LINK_DEAD events, $(($(helper_lines 'reconnected #') - rc0)) reconnects logged: $(tail -n 3 "$HLOG" | tr '\n' '|')"
		kill -KILL -- "-$FIO_PID" 2>/dev/null
		return 1
	fi
	ms=$(grep 'reconnected #' "$HLOG" | sed -n "$((rc0 + 1))s/.* \([0-9]*\) ms after the event.*/\1/p")
	if ! wait_until 20 live_is 2; then
		why "clients shows $(live_conns) live connections, want 2: $(clients_oneline)"
		kill -KILL -- "-$FIO_PID" 2>/dev/null
		return 1
	fi
	port_gone "$p" || { why "killed connection $p still listed as live"; return 1; }
	fio_finish || return 1
	if ! wait_until 30 restored_since "$ev0" "$rc0" 1 || ! wait_until 20 live_is 2; then
		why "not all connections restored after fio: $(clients_oneline)"
		return 1
	fi
	extra=$(($(helper_lines 'LINK_DEAD event') - ev0 - 1))
	if [ "$extra" -gt 0 ]; then
		extra="; $extra more LINK_DEAD (request timeouts)"
	else
		extra=''
	fi
	log "    kill $k: reconnected ${ms} ms after LINK_DEAD; fio max completion ${FIO_MAX}s$extra"
	if grep -q 'reconnected #.*unconfirmed' "$HLOG"; then
		why "a reconnect was not confirmed"
		return 1
	fi
}

# both connections at once: two events, two reconnects; with -D 30 the I/O
# issued meanwhile waits instead of failing
chk_kill_all_with_helper() {
	local ev0 rc0 out n p ports left
	ev0=$(helper_lines 'LINK_DEAD event')
	rc0=$(helper_lines 'reconnected #')
	ports=$(conn_ports | tr '\n' ' ')
	fio_start killall
	fio_running || { why "fio moved no data"; kill -KILL -- "-$FIO_PID" 2>/dev/null; return 1; }
	out=$(ss -K -tn state established "( sport = :$PORT )" 2>&1)
	n=$(grep -c ":$PORT\b" <<<"$out")
	log "    killed $n server-side connections"
	left=0
	for p in $ports; do
		left=$((left + $(server_socks "$p")))
	done
	if [ "$n" -ne 2 ] || [ "$left" -ne 0 ]; then
		why "ss -K killed $n connections, want 2 ($left of $ports left): $out"
		kill -KILL -- "-$FIO_PID" 2>/dev/null
		return 1
	fi
	if ! wait_until 30 restored_since "$ev0" "$rc0" 2; then
		why "after killing both: $(($(helper_lines 'LINK_DEAD event') - ev0)) LINK_DEAD events, $(($(helper_lines 'reconnected #') - rc0)) reconnects logged: $(tail -n 4 "$HLOG" | tr '\n' '|')"
		kill -KILL -- "-$FIO_PID" 2>/dev/null
		return 1
	fi
	if ! wait_until 20 live_is 2; then
		why "clients shows $(live_conns) live connections, want 2: $(clients_oneline)"
		kill -KILL -- "-$FIO_PID" 2>/dev/null
		return 1
	fi
	fio_finish || return 1
	log "    kill all: fio max completion ${FIO_MAX}s"
}

chk_data_intact() {
	local a b
	a=$(md5_of "$DEV" "$SIZE")
	b=$(md5_of "$KNBD_TMP/$N-v.img" "$SIZE")
	[ "$a" = "$b" ] || { why "device md5 $a != backing md5 $b"; return 1; }
}

chk_helper_stop() {
	stop_helper
	[ "${HELPER_RC:-1}" -eq 0 ] || { why "helper exited $HELPER_RC on SIGTERM"; return 1; }
	log "    helper: $(grep 'exiting' "$HLOG" | tail -n 1 | sed 's/.*: exiting/exiting/')"
	log "    worst completion latency per fio run (s):$STALLS"
}

chk_teardown() {
	nbd_detach "$DEV" || return 1
	knbd_unload
}

t_run rc_setup chk_setup
if [ "$T_NFAIL" -gt 0 ]; then
	t_done
	exit 1
fi
t_run rc_usage chk_usage
t_run rc_handshake chk_handshake
t_run rc_kill_no_helper chk_kill_no_helper
t_run rc_helper_bad_export chk_helper_bad_export
t_run rc_helper_startup chk_helper_startup
for k in 1 2 3; do
	t_run "rc_kill_with_helper_$k" chk_kill_with_helper "$k"
done
t_run rc_kill_all_with_helper chk_kill_all_with_helper
t_run rc_data_intact chk_data_intact
t_run rc_helper_stop chk_helper_stop
t_run rc_teardown chk_teardown
t_done
