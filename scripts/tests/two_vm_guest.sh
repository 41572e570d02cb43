#!/bin/bash
# Guest side of scripts/tests/two-vm.sh: one member of a two-member knbd group,
# each member in its own VM, joined by a virtio-net NIC on a QEMU socket
# netdev (scripts/vm-run.sh --net). Run as
#
#   two_vm_guest.sh A|B [--size BYTES] [--budget SECS]
#
#   A: member 1, 192.0.2.1/24, configfs node m1, peer m2 at 192.0.2.2
#   B: member 2, 192.0.2.2/24, configfs node m2, peer m1 at 192.0.2.1
#
# Both: node in the root namespace (clients :10809, members :10810, group 7),
# volume gv (--size, default 256 MiB, 1 MiB extents, "epoch 1; stripe 1 2":
# even extents on member 1, odd ones on member 2) on an empty sparse file
# /tmp/knbd-two-vm/gv-m<i>.img.
#
#   two_vm_net_<r>        NIC found by $KNBD_NET_MAC, address, peer answers ping
#   two_vm_group_up_<r>   node + peer + volume configured, link to the peer "up"
#   two_vm_write_b        B: nbd-client to its own member, fio write + crc32c
#                         verify over the whole volume
#   two_vm_readback_b     B: fio verify_only over the whole volume
#   two_vm_readback_a     A (after B says "written"): nbd-client to its own
#                         member, fio verify_only over the whole volume
#   two_vm_stats_<r>      volume stats: local, forwarded and peer pieces (B's
#                         peer pieces come from A's read back), no errors
#   two_vm_backing_<r>    du: about half the volume in the backing, data only
#                         in this member's extents (SEEK_DATA), every one written
#   two_vm_teardown_<r>   detach, remove the configuration, rmmod knbd
#
# The two guests coordinate only over the virtual network: B sends
# "written ok|fail" to 192.0.2.1:7000 once it has written and read back; A
# sends "read ok|fail" to 192.0.2.2:7000 once it has read back, and B checks
# its peer pieces after that. Every wait is bounded by --budget (default
# 400 s from the start of this script; 40 s of it kept for the teardown), so a
# broken peer makes checks fail, never hang.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

# lib.sh's _nap opens its pipe fd with "exec {fd}<> <(:) 2>/dev/null", which
# would send this shell's stderr (log, why) to /dev/null for good: open it
# once here with stderr saved and restored (as group_lib.sh does).
if [ -z "${_KNBD_NAP_FD:-}" ]; then
	exec {_tv_stderr}>&2
	_nap 0
	exec 2>&"$_tv_stderr" {_tv_stderr}>&-
fi

ROLE=${1:-}
shift || true
SIZE=$((256 << 20))
BUDGET=400
while [ $# -gt 0 ]; do
	case $1 in
	--size) SIZE=$2; shift 2 ;;
	--budget) BUDGET=$2; shift 2 ;;
	*) echo "two_vm_guest: unknown argument $1" >&2; exit 2 ;;
	esac
done
case $ROLE in
A) ME=1 PEER=2 r=a ;;
B) ME=2 PEER=1 r=b ;;
*) echo "usage: two_vm_guest.sh A|B [--size BYTES] [--budget SECS]" >&2; exit 2 ;;
esac

NET=192.0.2
MY_IP=$NET.$ME
PEER_IP=$NET.$PEER
SIG_PORT=7000
VOL=gv
EXT=$((1 << 20))
GROUP_ID=7
DEV=/dev/nbd0
DIR=/tmp/knbd-two-vm
BACKING=$DIR/$VOL-m$ME.img
NODE=$KNBD_CFS/nodes/m$ME
VDIR=$NODE/volumes/$VOL
END=$((SECONDS + BUDGET))
RESERVE=40	# seconds of the budget kept for stats, backing and teardown
IFACE=''
UP=0		# group configured and link up
SIG_PID=''	# background listener for the peer's message
SIG_FILE=$DIR/peer-message
FIO=(--name=twovm --filename="$DEV" --rw=write --bs=256k --iodepth=16 --ioengine=libaio
	--direct=1 --size="$SIZE" --verify=crc32c --verify_fatal=1 --verify_state_save=0
	--output-format=json)

mkdir -p "$DIR"
: >"$KNBD_RESULTS"
log "two_vm_guest: role $ROLE (member $ME, $MY_IP), volume $SIZE bytes, budget ${BUDGET}s, NIC ${KNBD_NET_MAC:-?}"

# left CAP: seconds to give a wait: CAP, at most what the budget leaves
# (minus the reserve), at least 1
left() {
	local l=$((END - RESERVE - SECONDS))
	((l < $1)) || l=$1
	((l >= 1)) || l=1
	echo "$l"
}

# Tiny TCP messenger on 192.0.2.0/24 (the only channel between the guests).
#   wait HOST PORT SECS       accept until one peer sends a line, ack it, print it
#   send HOST PORT MSG SECS   connect (retrying) and send MSG, until acked
SIG_PY='
import socket, sys, time
cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
end = time.monotonic() + float(sys.argv[-1])
if cmd == "wait":
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(4)
    while time.monotonic() < end:
        s.settimeout(max(0.1, end - time.monotonic()))
        try:
            c, _ = s.accept()
        except socket.timeout:
            break
        try:
            c.settimeout(10)
            data = b""
            while not data.endswith(b"\n"):
                d = c.recv(256)
                if not d:
                    break
                data += d
            if data.endswith(b"\n"):
                c.sendall(b"ack\n")
                print(data.decode(errors="replace").strip(), flush=True)
                sys.exit(0)
        except OSError:
            pass
        finally:
            c.close()
    sys.exit(1)
msg = sys.argv[4]
while time.monotonic() < end:
    try:
        with socket.create_connection((host, port), timeout=5) as c:
            c.settimeout(10)
            c.sendall(msg.encode() + b"\n")
            if c.recv(16).startswith(b"ack"):
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit(1)
'

# sig_listen SECS: background listener on our address; the message lands in
# SIG_FILE (one line, written at once)
sig_listen() {
	rm -f "$SIG_FILE"
	python3 -c "$SIG_PY" wait "$MY_IP" "$SIG_PORT" "$1" >"$SIG_FILE" 2>/dev/null &
	SIG_PID=$!
}

# sig_send MSG SECS: tell the peer (bounded); 1 if it never took the message
sig_send() {
	log "telling $PEER_IP: $1"
	python3 -c "$SIG_PY" send "$PEER_IP" "$SIG_PORT" "$1" "$2" 2>/dev/null ||
		{ log "could not tell $PEER_IP '$1' within $2 s"; return 1; }
}

# sig_wait SECS: wait for the peer's message; prints it, 1 on timeout
sig_wait() {
	wait_until "$1" test -s "$SIG_FILE" || return 1
	cat "$SIG_FILE"
}

stat_of() { vol_stat_f "$VDIR/stats" "$1"; }
vol_stat_f() {
	local k v
	while read -r k v; do
		[ "$k" = "$2" ] && { echo "$v"; return 0; }
	done <"$1" 2>/dev/null
	echo ''
}

link_up() {
	local k='' v=''
	read -r k v <"$NODE/peers/m$PEER/state" 2>/dev/null
	[ "$k $v" = "state up" ]
}

need_up() { [ "$UP" = 1 ] || { why "group not set up"; return 1; }; }

fio_json() { # FILE PYEXPR with j = the first job
	python3 - "$1" "$2" <<'PY' 2>/dev/null
import json, sys
t = open(sys.argv[1]).read()
j = json.loads(t[t.index("{"):])["jobs"][0]
print(eval(sys.argv[2]))
PY
}

# run_fio NAME SECS ARGS...: fio on $DEV, JSON in $KNBD_OUT/fio-NAME.json;
# checks the error and the byte counts (write and/or read = SIZE)
run_fio() {
	local name=$1 secs=$2 out rc=0 err wb rb
	shift 2
	out=$KNBD_OUT/fio-$name.json
	with_timeout "$secs" fio "${FIO[@]}" "$@" >"$out" 2>&1 || rc=$?
	[ "$rc" = 0 ] || { why "fio $name exited $rc: $(grep -iE 'verify|err|fail|bad' "$out" | head -n 3 | tr '\n' ' ')"; return 1; }
	err=$(fio_json "$out" 'j["error"]')
	wb=$(fio_json "$out" 'j["write"]["io_bytes"]')
	rb=$(fio_json "$out" 'j["read"]["io_bytes"]')
	log "fio $name $*: write $wb, read+verify $rb bytes, error $err" \
		"($(fio_json "$out" 'int(j["write"]["bw"])') KiB/s write, $(fio_json "$out" 'int(j["read"]["bw"])') KiB/s read)"
	[ "$err" = 0 ] || { why "fio $name: error $err"; return 1; }
	case " $* " in
	*" --verify_only "*) [ "$rb" = "$SIZE" ] || { why "fio $name verified $rb bytes, want $SIZE"; return 1; } ;;
	*) [ "$wb" = "$SIZE" ] && [ "$rb" = "$SIZE" ] ||
		{ why "fio $name wrote $wb and verified $rb bytes, want $SIZE each"; return 1; } ;;
	esac
}

attach() {
	local out
	out=$(with_timeout "$(left 90)" nbd-client "$MY_IP" 10809 "$DEV" -N "$VOL" -C 2 -t 60 2>&1) ||
		{ why "nbd-client $MY_IP $DEV -N $VOL failed: $(tail -n 3 <<<"$out" | tr '\n' ' ')"; return 1; }
	wait_until 20 nbd_connected "$DEV" || { why "$DEV has size 0 after nbd-client"; return 1; }
	local sz
	sz=$(blockdev --getsize64 "$DEV" 2>/dev/null)
	[ "$sz" = "$SIZE" ] || { why "$DEV has $sz bytes, want $SIZE"; return 1; }
}

# ------------------------------------------------------------------ checks --

# find_iface: IFACE = the interface with MAC $KNBD_NET_MAC (eth0 or ens*)
find_iface() {
	local d a
	for d in /sys/class/net/*; do
		read -r a <"$d/address" 2>/dev/null || continue
		[ "$a" = "$KNBD_NET_MAC" ] && { IFACE=${d##*/}; return 0; }
	done
	return 1
}

# ping1: one ping of the peer (no iputils on the host root: busybox's)
ping1() { busybox ping -c 1 -W 1 -q "$PEER_IP" >/dev/null 2>&1; }

chk_net() {
	modprobe virtio_net 2>/dev/null
	[ -n "${KNBD_NET_MAC:-}" ] || { why "no KNBD_NET_MAC: VM started without --net"; return 1; }
	wait_until 20 find_iface ||
		{ why "no interface with MAC $KNBD_NET_MAC: $(cd /sys/class/net && echo *)"; return 1; }
	log "NIC $IFACE ($KNBD_NET_MAC)"
	ip addr add "$MY_IP/24" dev "$IFACE" && ip link set "$IFACE" up ||
		{ why "cannot configure $MY_IP on $IFACE"; return 1; }
	sig_listen "$((END - SECONDS))"
	# the other VM may still be booting: wait for it
	wait_until "$(left 150)" ping1 || { why "$PEER_IP does not answer ping on $IFACE"; return 1; }
	log "$PEER_IP answers: $(busybox ping -c 3 -q "$PEER_IP" 2>/dev/null | tail -n 1)"
}

chk_group_up() {
	[ -n "$IFACE" ] || { why "no network"; return 1; }
	knbd_load || return 1
	: >"$BACKING" || { why "cannot create $BACKING"; return 1; }
	mkdir "$NODE" || { why "mkdir $NODE"; return 1; }
	cfs_set "$NODE/node_id" "$ME" || return 1
	cfs_set "$NODE/group_id" "$GROUP_ID" || return 1
	# both VMs run this script: the same (test-only) group key
	cfs_set "$NODE/group_key" 6b6e62642074776f2d766d2067726f7570206b6579212121 || return 1
	cfs_set "$NODE/listen_addr" "$MY_IP" || return 1
	cfs_set "$NODE/listen_port" 10809 || return 1
	cfs_set "$NODE/peer_port" 10810 || return 1
	mkdir "$NODE/peers/m$PEER" || { why "mkdir peers/m$PEER"; return 1; }
	cfs_set "$NODE/peers/m$PEER/addr" "$PEER_IP" || return 1
	cfs_set "$NODE/peers/m$PEER/port" 10810 || return 1
	cfs_set "$NODE/peers/m$PEER/node_id" "$PEER" || return 1
	mkdir "$VDIR" || { why "mkdir $VDIR"; return 1; }
	cfs_set "$VDIR/backing_path" "$BACKING" || return 1
	cfs_set "$VDIR/size" "$SIZE" || return 1
	cfs_set "$VDIR/extent_size" "$EXT" || return 1
	cfs_set "$VDIR/routing" "epoch 1; stripe 1 2" || return 1
	cfs_set "$VDIR/enable" 1 || return 1
	cfs_set "$NODE/enable" 1 || return 1
	log "routing: $(tr '\n' ' ' <"$VDIR/routing")"
	wait_until "$(left 90)" link_up ||
		{ why "link to m$PEER ($PEER_IP:10810) not up: $(tr '\n' ' ' <"$NODE/peers/m$PEER/state")"; return 1; }
	log "link to m$PEER: $(tr '\n' ' ' <"$NODE/peers/m$PEER/state")"
	UP=1
}

WROTE=0
chk_write_b() {
	need_up || return 1
	attach || return 1
	run_fio write "$(left 240)" --do_verify=1 || return 1
	WROTE=1
}

READ_OK=0
chk_readback_b() {
	[ "$WROTE" = 1 ] || { why "nothing written"; return 1; }
	run_fio readback "$(left 180)" --verify_only || return 1
	READ_OK=1
}

chk_readback_a() {
	local m
	need_up || return 1
	m=$(sig_wait "$(left 330)") || { why "no word from B within the budget (did it write?)"; return 1; }
	log "B says: $m"
	[ "$m" = "written ok" ] || { why "B did not write the volume: '$m'"; return 1; }
	cp "$VDIR/stats" "$DIR/stats-before-read"
	attach || return 1
	run_fio readback "$(left 180)" --verify_only || return 1
	READ_OK=1
}

# stats_check: this member served local, forwarded and peer pieces, no errors
# (at least one piece per owned extent each: SIZE / EXT / 2)
chk_stats() {
	need_up || return 1
	local f=$VDIR/stats k v m min=$((SIZE / EXT / 2)) s=''
	[ "$ROLE" = B ] && { m=$(sig_wait "$(left 300)") || m='(nothing)'; log "A says: $m"; }
	for k in local_ios forwarded_ios peer_ios errors epoch_mismatches; do
		v=$(vol_stat_f "$f" "$k")
		s="$s $k=$v"
		case $k in
		errors | epoch_mismatches) [ "$v" = 0 ] || { why "stats:$s ($k should be 0)"; return 1; } ;;
		*) [ -n "$v" ] && [ "$v" -ge "$min" ] || { why "stats:$s ($k should be >= $min)"; return 1; } ;;
		esac
	done
	log "stats:$s; link: $(tr '\n' ' ' <"$NODE/peers/m$PEER/state")"
	if [ "$ROLE" = A ] && [ -f "$DIR/stats-before-read" ]; then
		v=$(vol_stat_f "$DIR/stats-before-read" peer_ios)
		[ "${v:-0}" -ge "$min" ] || { why "only $v peer pieces served for B's writes, want >= $min"; return 1; }
	fi
}

chk_backing() {
	need_up || return 1
	local kb pct out
	kb=$(du -k "$BACKING" | cut -f1)
	pct=$((kb * 1024 * 100 / SIZE))
	log "du: $kb KiB in $BACKING ($pct% of the volume)"
	[ "$pct" -ge 45 ] && [ "$pct" -le 55 ] ||
		{ why "$BACKING holds $kb KiB = $pct% of the volume, want about half (45..55%)"; return 1; }
	out=$(python3 - "$BACKING" "$SIZE" "$EXT" "$ME" <<'PY' 2>&1
import os, sys
f, size, ext, me = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
fd = os.open(f, os.O_RDONLY)
end = os.fstat(fd).st_size
pos, mine, foreign = 0, set(), set()
while pos < end:
    try:
        d = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:
        break
    h = os.lseek(fd, d, os.SEEK_HOLE)
    for e in range(d // ext, (h - 1) // ext + 1):
        (mine if e % 2 == me - 1 else foreign).add(e)
    pos = h
want = {e for e in range(size // ext) if e % 2 == me - 1}
print("data in %d of %d own extents, %d foreign extents%s" % (len(mine & want), len(want),
      len(foreign), (" (e.g. %s)" % sorted(foreign)[:5]) if foreign else ""))
sys.exit(0 if mine == want and not foreign else 1)
PY
	) || { why "layout of $BACKING: $out"; return 1; }
	log "layout: $out"
}

chk_teardown() {
	local rc=0 out
	[ "$(nbd_size "$DEV")" = 0 ] && [ ! -e "/sys/block/${DEV##*/}/pid" ] || nbd_detach "$DEV" || rc=1
	if [ -d "$NODE" ]; then
		with_timeout 60 sh -c "echo 0 > '$NODE/enable'" || { why "disabling m$ME failed or hung"; rc=1; }
		[ -d "$VDIR" ] && { with_timeout 30 rmdir "$VDIR" || { why "rmdir $VDIR"; rc=1; }; }
		[ -d "$NODE/peers/m$PEER" ] && { rmdir "$NODE/peers/m$PEER" || { why "rmdir peer"; rc=1; }; }
		rmdir "$NODE" || { why "rmdir $NODE"; rc=1; }
	fi
	if knbd_loaded; then
		out=$(with_timeout 60 rmmod knbd 2>&1) || { why "rmmod knbd: $out"; rc=1; }
	fi
	rm -f "$BACKING"
	return $rc
}

cleanup() {
	[ -n "$SIG_PID" ] && kill "$SIG_PID" 2>/dev/null
	[ "$TORN_DOWN" = 1 ] || chk_teardown >/dev/null 2>&1
}
TORN_DOWN=0
trap cleanup EXIT

t_run "two_vm_net_$r" chk_net
t_run "two_vm_group_up_$r" chk_group_up
if [ "$ROLE" = B ]; then
	t_run two_vm_write_b chk_write_b
	t_run two_vm_readback_b chk_readback_b
	nbd_detach "$DEV" >/dev/null 2>&1
	if [ "$WROTE" = 1 ] && [ "$READ_OK" = 1 ]; then
		sig_send "written ok" "$(left 120)"
	else
		sig_send "written fail" "$(left 30)"
	fi
else
	t_run two_vm_readback_a chk_readback_a
	nbd_detach "$DEV" >/dev/null 2>&1
	if [ "$READ_OK" = 1 ]; then
		sig_send "read ok" "$(left 60)"
	else
		sig_send "read fail" "$(left 30)"
	fi
fi
t_run "two_vm_stats_$r" chk_stats
t_run "two_vm_backing_$r" chk_backing
t_run "two_vm_teardown_$r" chk_teardown
TORN_DOWN=1
t_done
