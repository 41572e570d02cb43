#!/bin/bash
# knbd with the kernel's own NBD client (nbd.ko through nbd-client, netlink,
# multi-connection): fio write+verify, data survives detach/re-attach and is
# in the backing file, connection listing, read-only volumes, flush/discard
# reach the server, and large writes into a huge-page tmpfs backing.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

N=nc
PORT=10809
SIZE=$((64 << 20))
RO_SIZE=$((16 << 20))
HUGE_SIZE=$((64 << 20))
DEV=/dev/nbd0
RODEV=/dev/nbd1
HDEV=/dev/nbd2
FIO_COMMON=(--name=verify --rw=randwrite --bssplit=4k/30:16k/30:64k/20:128k/20
	--iodepth=16 --ioengine=libaio --direct=1 --verify=crc32c --verify_fatal=1
	--randseed=4242 --group_reporting)

cleanup() {
	nbd_detach "$DEV" >/dev/null 2>&1
	nbd_detach "$RODEV" >/dev/null 2>&1
	nbd_detach "$HDEV" >/dev/null 2>&1
	knbd_unload >/dev/null 2>&1
	mountpoint -q "$KNBD_TMP/huge" && umount "$KNBD_TMP/huge"
}
trap cleanup EXIT

chk_setup() {
	knbd_load || return 1
	knbd_backing "$KNBD_TMP/v.img" "$SIZE" || return 1
	knbd_backing "$KNBD_TMP/ro.img" "$RO_SIZE" random || return 1
	knbd_node_create "$N" "$PORT" || return 1
	knbd_vol_create "$N" v "$KNBD_TMP/v.img" "description=nbd-client test" || return 1
	knbd_vol_create "$N" ro "$KNBD_TMP/ro.img" readonly=1 || return 1
	knbd_node_enable "$N" || return 1
}

chk_attach_multiconn() {
	nbd_attach "$DEV" v 4 "$PORT" -t 30 || return 1
	local bytes=$(($(nbd_size "$DEV") * 512))
	[ "$bytes" -eq "$SIZE" ] || { why "$DEV is $bytes bytes, want $SIZE"; return 1; }
	if ! wait_until_sh 10 '[ "$(clients_count "$N" v)" -eq 4 ]'; then
		why "clients shows $(clients_count "$N" v) connections for v, want 4: $(tr '\n' '|' <"$(knbd_node_dir "$N")/clients")"
		return 1
	fi
	# every line names the export and a loopback peer
	local bad
	bad=$(awk '$3 == "v" && $2 !~ /127\.0\.0\.1/' "$(knbd_node_dir "$N")/clients")
	[ -z "$bad" ] || { why "clients lines with a wrong peer: $bad"; return 1; }
}

chk_fio_verify() {
	local out s0 s1
	s0=$(vol_stat "$N" v write_bytes)
	out=$(with_timeout 240 fio "${FIO_COMMON[@]}" --filename="$DEV" --size="$SIZE" --do_verify=1 2>&1)
	local rc=$?
	echo "$out" >"$KNBD_OUT/fio-nbd_client-verify.txt"
	[ "$rc" -eq 0 ] || { why "fio write+verify exited $rc: $(grep -iE 'verify|err=|error' <<<"$out" | head -n 3)"; return 1; }
	grep -q 'err= 0' <<<"$out" || { why "fio reported errors: $(grep 'err=' <<<"$out")"; return 1; }
	s1=$(vol_stat "$N" v write_bytes)
	[ -n "$s0" ] && [ -n "$s1" ] || { why "stats has no write_bytes"; return 1; }
	[ $((s1 - s0)) -ge "$SIZE" ] || { why "stats write_bytes grew by $((s1 - s0)), want >= $SIZE"; return 1; }
}

chk_readback_after_reattach() {
	nbd_detach "$DEV" || return 1
	wait_until_sh 10 '[ "$(clients_count "$N" v)" -eq 0 ]' ||
		{ why "clients still lists $(clients_count "$N" v) connections after detach"; return 1; }
	nbd_attach "$DEV" v 2 "$PORT" -t 30 || return 1
	# device content (no page cache: direct I/O) == backing file
	local a b
	a=$(md5_of "$DEV" "$SIZE")
	b=$(md5_of "$KNBD_TMP/v.img" "$SIZE")
	[ "$a" = "$b" ] || { why "device md5 $a != backing file md5 $b"; return 1; }
	local out
	out=$(with_timeout 240 fio "${FIO_COMMON[@]}" --filename="$DEV" --size="$SIZE" --verify_only 2>&1)
	local rc=$?
	echo "$out" >"$KNBD_OUT/fio-nbd_client-verify_only.txt"
	[ "$rc" -eq 0 ] || { why "fio verify_only after re-attach exited $rc: $(grep -iE 'verify|err=' <<<"$out" | head -n 3)"; return 1; }
}

chk_flush() {
	local f0 f1 out
	f0=$(vol_stat "$N" v flushes)
	out=$(dd if=/dev/urandom of="$DEV" bs=4k count=4 seek=10 oflag=direct conv=fsync 2>&1) ||
		{ why "dd conv=fsync: $out"; return 1; }
	with_timeout 30 blockdev --flushbufs "$DEV" || { why "blockdev --flushbufs failed"; return 1; }
	f1=$(vol_stat "$N" v flushes)
	[ -n "$f1" ] && [ "$f1" -gt "${f0:-0}" ] || { why "stats flushes $f0 -> $f1: FLUSH did not reach the server"; return 1; }
}

chk_discard() {
	local t0 t1 out
	t0=$(vol_stat "$N" v trims)
	out=$(with_timeout 60 blkdiscard -o $((1 << 20)) -l $((4 << 20)) "$DEV" 2>&1) || { why "blkdiscard: $out"; return 1; }
	t1=$(vol_stat "$N" v trims)
	[ -n "$t1" ] && [ "$t1" -gt "${t0:-0}" ] || { why "stats trims $t0 -> $t1: TRIM did not reach the server"; return 1; }
	# data next to the discarded range is intact
	local a b
	a=$(dd if="$DEV" bs=1M skip=5 count=4 iflag=direct status=none | md5sum)
	b=$(dd if="$KNBD_TMP/v.img" bs=1M skip=5 count=4 status=none | md5sum)
	[ "$a" = "$b" ] || { why "device and backing differ after discard"; return 1; }
	# whole-device discard (one big NBD_CMD_TRIM)
	out=$(with_timeout 60 blkdiscard "$DEV" 2>&1) || { why "blkdiscard whole device: $out"; return 1; }
}

chk_detach_clients_gone() {
	nbd_detach "$DEV" || return 1
	wait_until_sh 10 '[ "$(clients_count "$N" v)" -eq 0 ]' ||
		{ why "clients still lists $(clients_count "$N" v) connections after detach"; return 1; }
}

chk_readonly() {
	nbd_attach "$RODEV" ro 2 "$PORT" -t 30 || return 1
	local ro out
	ro=$(blockdev --getro "$RODEV")
	[ "$ro" = 1 ] || { why "$RODEV not read-only (getro=$ro): READ_ONLY flag not sent?"; return 1; }
	local w0 w1
	w0=$(vol_stat "$N" ro writes)
	if out=$(dd if=/dev/zero of="$RODEV" bs=4k count=1 oflag=direct 2>&1); then
		why "direct write to the read-only device succeeded"
		return 1
	fi
	grep -qE 'Operation not permitted|Input/output error|Read-only' <<<"$out" ||
		{ why "write failed with an unexpected error: $out"; return 1; }
	local a b
	a=$(md5_of "$RODEV" "$RO_SIZE")
	b=$(md5_of "$KNBD_TMP/ro.img" "$RO_SIZE")
	[ "$a" = "$b" ] || { why "read-only device md5 $a != backing $b"; return 1; }
	w1=$(vol_stat "$N" ro writes)
	[ "$w0" = "$w1" ] || { why "writes counter of the read-only volume moved ($w0 -> $w1)"; return 1; }
	nbd_detach "$RODEV" || return 1
}

chk_thp_large_writes() {
	# tmpfs with huge=always: the backing's page cache uses compound pages
	mkdir -p "$KNBD_TMP/huge"
	mount -t tmpfs -o size=256M,huge=always tmpfs "$KNBD_TMP/huge" || { why "cannot mount huge tmpfs"; return 1; }
	knbd_backing "$KNBD_TMP/huge/h.img" "$HUGE_SIZE" || return 1
	knbd_vol_create "$N" h "$KNBD_TMP/huge/h.img" || return 1
	nbd_attach "$HDEV" h 2 "$PORT" -t 30 || return 1
	local out rc
	out=$(with_timeout 240 fio --name=big --filename="$HDEV" --rw=randwrite \
		--bssplit=1m/40:2m/30:4m/30 --iodepth=4 --ioengine=libaio --direct=1 \
		--verify=crc32c --verify_fatal=1 --do_verify=1 --size="$HUGE_SIZE" --randseed=99 2>&1)
	rc=$?
	echo "$out" >"$KNBD_OUT/fio-nbd_client-thp.txt"
	[ "$rc" -eq 0 ] || { why "fio 1-4 MiB write+verify exited $rc: $(grep -iE 'verify|err=' <<<"$out" | head -n 3)"; return 1; }
	local a b
	a=$(md5_of "$HDEV" "$HUGE_SIZE")
	b=$(md5_of "$KNBD_TMP/huge/h.img" "$HUGE_SIZE")
	[ "$a" = "$b" ] || { why "device md5 != huge-page backing md5"; return 1; }
	# buffered 8 MiB writes (page cache of the nbd device) + fsync
	out=$(dd if=/dev/urandom of="$HDEV" bs=8M count=4 conv=fsync 2>&1) || { why "buffered dd: $out"; return 1; }
	echo 1 >/proc/sys/vm/drop_caches 2>/dev/null
	a=$(md5_of "$HDEV" $((32 << 20)))
	b=$(md5_of "$KNBD_TMP/huge/h.img" $((32 << 20)))
	[ "$a" = "$b" ] || { why "after buffered writes: device md5 != backing md5"; return 1; }
	grep -q AnonHugePages /proc/meminfo && log "    $(grep -E 'ShmemHugePages|AnonHugePages' /proc/meminfo | tr -s ' ' | tr '\n' ' ')"
	nbd_detach "$HDEV" || return 1
}

chk_teardown() {
	knbd_unload || return 1
	if mountpoint -q "$KNBD_TMP/huge"; then
		umount "$KNBD_TMP/huge" || { why "umount huge tmpfs"; return 1; }
	fi
}

t_run nbdc_setup chk_setup
t_run nbdc_attach_multiconn chk_attach_multiconn
t_run nbdc_fio_verify chk_fio_verify
t_run nbdc_readback_after_reattach chk_readback_after_reattach
t_run nbdc_flush chk_flush
t_run nbdc_discard chk_discard
t_run nbdc_detach chk_detach_clients_gone
t_run nbdc_readonly chk_readonly
t_run nbdc_thp_large_writes chk_thp_large_writes
t_run nbdc_teardown chk_teardown
t_done
