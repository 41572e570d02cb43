#!/bin/bash
# Backing stores that fail: device-mapper targets and a full filesystem under
# a volume of one node (127.0.0.1:10830), driven by qemu-io (QEMU's NBD
# client).  What a failing backing must give: NBD errors for exactly the
# requests it failed, the volume and connection still serving the rest, the
# volume's error counter, and teardown as usual (no crash, no hang; kmemleak
# on the debug kernel).
#
#   fault_dm_error     8 MiB linear + 8 MiB error (dm): writes and reads in the
#                      error half fail with EIO, one across the boundary too;
#                      the linear half reads back what was written, on the
#                      same connection, before and after
#   fault_dm_flakey    dm flakey (up 1 s, down 1 s): 4 KiB writes for ~5 s,
#                      both successes and EIO; then the table is swapped to
#                      linear under the enabled volume: written data reads back
#   fault_enospc       a 32 MiB sparse file on a 4 MiB tmpfs: writes past the
#                      space fail with ENOSPC, what fit reads back
#   fault_close_waits  a client's WRITE held 2 s in the backing (dm delay) when
#                      its volume is disabled: the client sees the close (no
#                      reply) only once the WRITE is in the backing, as a
#                      client that resends at once (patched nbd.ko) must not
#                      have the old WRITE land after its new one
#   fault_teardown     volumes disabled and removed, dm devices removable
#                      (knbd holds nothing), module unloaded
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

N=faults
PORT=10830
U=nbd://127.0.0.1:$PORT
LOOP=''
SMALL=$KNBD_TMP/small

cleanup() {
	local v
	for v in err flk full dly; do
		echo 0 >"$KNBD_CFS/nodes/$N/volumes/$v/enable" 2>/dev/null
		rmdir "$KNBD_CFS/nodes/$N/volumes/$v" 2>/dev/null
	done
	echo 0 >"$KNBD_CFS/nodes/$N/enable" 2>/dev/null
	rmdir "$KNBD_CFS/nodes/$N" 2>/dev/null
	dmsetup remove knbdt-err 2>/dev/null
	dmsetup remove knbdt-flk 2>/dev/null
	dmsetup remove knbdt-dly 2>/dev/null
	[ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null
	umount "$SMALL" 2>/dev/null
}
trap cleanup EXIT

# qio EXPORT CMDS...: qemu-io on one connection; output on stdout, never fails
qio() {
	local e=$1
	shift
	with_timeout 120 qemu-io -f raw "$U/$e" "$@" 2>&1
}

vol_errors() { awk '$1 == "errors" { print $2 }' "$KNBD_CFS/nodes/$N/volumes/$1/stats"; }

chk_setup() {
	knbd_load || return 1
	modprobe loop 2>/dev/null
	modprobe dm-mod 2>/dev/null
	modprobe dm-flakey 2>/dev/null
	[ -e /dev/mapper/control ] || { why "no device-mapper"; return 1; }
	knbd_backing "$KNBD_TMP/dm.img" $((16 << 20)) || { why "backing file"; return 1; }
	LOOP=$(losetup -f --show "$KNBD_TMP/dm.img") || { why "losetup"; return 1; }
	knbd_node_create "$N" "$PORT" 127.0.0.1 || return 1
	knbd_node_enable "$N" || return 1
}

chk_dm_error() {
	[ -n "$LOOP" ] || { why "no setup"; return 1; }
	local out e0 e1 n
	printf '0 16384 linear %s 0\n16384 16384 error\n' "$LOOP" | dmsetup create knbdt-err ||
		{ why "dmsetup create (linear + error)"; return 1; }
	dmsetup mknodes knbdt-err	# no udev in the VM
	knbd_vol_create "$N" err /dev/mapper/knbdt-err || return 1
	e0=$(vol_errors err)
	out=$(qio err -c 'write -P 0x5a 0 1m' -c 'read -P 0x5a 0 1m' \
		-c 'write -P 0x11 9m 64k' -c 'read 9m 4k' -c 'write -P 0x22 8128k 128k' \
		-c 'read 8128k 128k' -c 'read -P 0x5a 0 1m' -c 'write -P 0x6b 1m 64k' -c 'read -P 0x6b 1m 64k')
	echo "$out" >"$KNBD_OUT/faults-dm-error.txt"
	n=$(grep -c 'Input/output error' <<<"$out")
	[ "$n" = 4 ] || { why "$n of the 4 requests on the error half failed with EIO: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"; return 1; }
	[ "$(grep -cE '^(wrote|read) [0-9]' <<<"$out")" = 5 ] ||
		{ why "the 5 requests on the linear half did not all succeed: $(grep -iE 'fail|error|mismatch' <<<"$out" | head -n 2)"; return 1; }
	! grep -q 'mismatch' <<<"$out" || { why "pattern mismatch on the linear half"; return 1; }
	e1=$(vol_errors err)
	[ "$((e1 - e0))" -ge 4 ] || { why "volume errors counter went $e0 -> $e1"; return 1; }
	log "  EIO for the 4 requests on the error half, 5 served on the linear half; errors $e0 -> $e1"
}

chk_dm_flakey() {
	[ -n "$LOOP" ] || { why "no setup"; return 1; }
	local out ok bad args=() i
	printf '0 32768 flakey %s 0 1 1\n' "$LOOP" | dmsetup create knbdt-flk ||
		{ why "dmsetup create flakey"; return 1; }
	dmsetup mknodes knbdt-flk
	knbd_vol_create "$N" flk /dev/mapper/knbdt-flk || return 1
	for ((i = 0; i < 50; i++)); do
		args+=(-c "write -P 0x33 $((i * 4))k 4k" -c 'sleep 100')
	done
	out=$(qio flk "${args[@]}")
	echo "$out" >"$KNBD_OUT/faults-dm-flakey.txt"
	ok=$(grep -c '^wrote ' <<<"$out")
	bad=$(grep -c 'Input/output error' <<<"$out")
	log "  flakey: $ok writes served, $bad failed with EIO"
	[ "$ok" -gt 0 ] && [ "$bad" -gt 0 ] && [ "$((ok + bad))" = 50 ] ||
		{ why "flakey: $ok ok + $bad EIO of 50 writes: $(grep -viE '^(wrote|[0-9])' <<<"$out" | head -n 2)"; return 1; }
	# the device heals under the enabled volume: what is written now reads back
	printf '0 32768 linear %s 0\n' "$LOOP" | dmsetup reload knbdt-flk && dmsetup resume knbdt-flk ||
		{ why "dmsetup reload/resume linear"; return 1; }
	out=$(qio flk -c 'write -P 0x44 0 256k' -c 'read -P 0x44 0 256k')
	grep -qiE 'fail|error|mismatch' <<<"$out" && { why "after healing: $(tr '\n' ' ' <<<"$out")"; return 1; }
	return 0
}

chk_enospc() {
	local out n
	mkdir -p "$SMALL" && mount -t tmpfs -o size=4m knbdt-small "$SMALL" || { why "mount a 4 MiB tmpfs"; return 1; }
	truncate -s 32m "$SMALL/full.img" || { why "truncate"; return 1; }
	knbd_vol_create "$N" full "$SMALL/full.img" || return 1
	out=$(qio full -c 'write -P 0x77 0 2m' -c 'write -P 0x78 2m 1m' -c 'write -P 0x79 3m 1m' \
		-c 'write -P 0x7a 4m 1m' -c 'write -P 0x7b 5m 1m' -c 'write -P 0x7c 6m 1m' \
		-c 'flush' -c 'read -P 0x77 0 2m')
	echo "$out" >"$KNBD_OUT/faults-enospc.txt"
	n=$(grep -c 'No space left on device' <<<"$out")
	[ "$n" -ge 1 ] || { why "no write failed with ENOSPC on a full filesystem: $(tr '\n' ' ' <<<"$out" | cut -c1-300)"; return 1; }
	grep -q 'Input/output error' <<<"$out" && { why "EIO instead of ENOSPC: $(grep -m1 error <<<"$out")"; return 1; }
	[ "$(tail -n 3 <<<"$out" | grep -c '^read [0-9]')" = 1 ] && ! grep -q mismatch <<<"$out" ||
		{ why "the first 2 MiB do not read back: $(tail -n 3 <<<"$out" | tr '\n' ' ')"; return 1; }
	log "  $n writes failed with ENOSPC, the first 2 MiB read back"
}

chk_close_waits() {
	[ -n "$LOOP" ] || { why "no setup"; return 1; }
	local out=$KNBD_OUT/faults-close-waits.txt pid line
	modprobe dm-delay 2>/dev/null
	# the last 4 MiB of the loop device, writes held 2 s, reads not
	printf '0 8192 delay %s 24576 0 %s 24576 2000\n' "$LOOP" "$LOOP" | dmsetup create knbdt-dly ||
		{ why "dmsetup create delay (dm-delay)"; return 1; }
	dmsetup mknodes knbdt-dly
	dd if=/dev/zero of=/dev/mapper/knbdt-dly bs=64k count=1 oflag=direct status=none ||
		{ why "zeroing the delayed device"; return 1; }
	knbd_vol_create "$N" dly /dev/mapper/knbdt-dly || return 1
	python3 "$here/nbd_probe.py" write-close 127.0.0.1 "$PORT" dly /dev/mapper/knbdt-dly 60 >"$out" 2>&1 &
	pid=$!
	wait_until 30 grep -q '^SENT' "$out" || { kill "$pid"; why "no WRITE sent: $(tail -n 1 "$out")"; return 1; }
	_nap 0.3
	with_timeout 60 sh -c "echo 0 > '$KNBD_CFS/nodes/$N/volumes/dly/enable'" ||
		{ kill "$pid"; why "disabling dly failed or hung"; return 1; }
	wait "$pid" || { why "the client: $(tail -n 1 "$out")"; return 1; }
	line=$(grep '^CLOSED' "$out")
	log "  $line"
	case $line in
	*" 0 reply bytes, DATA in DEV") ;;
	*" 0 reply bytes, "*) why "the client saw the close before its WRITE reached the backing: $line"; return 1 ;;
	*) why "the WRITE was answered before the close (not in flight at it): $line"; return 1 ;;
	esac
}

chk_teardown() {
	local v
	for v in err flk full dly; do
		[ -d "$KNBD_CFS/nodes/$N/volumes/$v" ] || continue
		with_timeout 30 sh -c "echo 0 > '$KNBD_CFS/nodes/$N/volumes/$v/enable'" ||
			{ why "disable $v failed or hung"; return 1; }
		rmdir "$KNBD_CFS/nodes/$N/volumes/$v" || { why "rmdir $v"; return 1; }
	done
	dmsetup remove knbdt-err && dmsetup remove knbdt-flk && dmsetup remove knbdt-dly ||
		{ why "a dm device is still held"; return 1; }
	knbd_node_disable "$N" && rmdir "$KNBD_CFS/nodes/$N" || { why "node teardown"; return 1; }
	losetup -d "$LOOP" && LOOP=''
	umount "$SMALL" 2>/dev/null
	knbd_unload || { why "rmmod"; return 1; }
}

t_run fault_setup chk_setup
t_run fault_dm_error chk_dm_error
t_run fault_dm_flakey chk_dm_flakey
t_run fault_enospc chk_enospc
t_run fault_close_waits chk_close_waits
t_run fault_teardown chk_teardown
t_done
