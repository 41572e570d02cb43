#!/bin/bash
# The patched nbd.ko (patches/nbd, `make nbd-patched`, Documentation/nbd-patch.md)
# against the stock one: nbd-client -C 2 -t 10 to nbd_reset_server.py, which
# resets one connection (RST) with reads in flight while the other answers.
# Stock: those reads complete only at the request timeout; patched: at once,
# with the right data. The patched module on single-connection devices (no
# helper: EIO at the timeout, as stock; knbd-reconnect -D: the read waits for
# the reconnect), and fio crc32c verify through knbd. Leaves the nbd.ko that
# was loaded before (stock in a default run).
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

SPORT=10899			# nbd_reset_server.py
KPORT=10809			# knbd
N=np
SIZE=$((64 << 20))
TRAP_OFF=$((16 << 20))
TRAP_LEN=$((1 << 20))
DEV=/dev/nbd0
TMO=10				# nbd-client -t of the two-connection device
TMO1=5				# -t of the single-connection device without a helper
# 8 reads at once, 64 KiB apart (no merging), all in the trap range
OFFS=$(seq -s, "$TRAP_OFF" 65536 $((TRAP_OFF + 7 * 65536)))
SLOG=$KNBD_TMP/reset-server.log
ARM=$KNBD_TMP/reset-server.arm
HELPER=${KNBD_RECONNECT:-$KNBD_REPO/tools/knbd-reconnect}
HLOG=$KNBD_OUT/nbdpatch-helper.log
RES=$KNBD_OUT/nbdpatch.txt	# measured numbers
SPID='' HPID='' SUM='' T_NAME=''
NBD_START=$(nbd_which)
FIO_COMMON=(--name=verify --rw=randwrite --bssplit=4k/30:16k/30:64k/20:128k/20
	--iodepth=16 --ioengine=libaio --direct=1 --verify=crc32c --verify_fatal=1
	--randseed=4242 --group_reporting)

# lib.sh's _nap sends this shell's stderr to /dev/null for good the first
# time (see test_reconnect.sh): open its descriptor with stderr put back
exec {_err_fd}>&2
_nap 0
exec 2>&"$_err_fd" {_err_fd}>&-

stop_server() {
	[ -n "$SPID" ] || return 0
	kill -TERM "$SPID" 2>/dev/null
	wait "$SPID" 2>/dev/null
	SPID=''
}

stop_helper() {
	[ -n "$HPID" ] || return 0
	kill -TERM "$HPID" 2>/dev/null
	wait_until 10 pid_gone "$HPID" || kill -KILL "$HPID" 2>/dev/null
	wait "$HPID" 2>/dev/null
	HPID=''
}

# what a failed check may have left: the next one starts without it
fresh() {
	stop_helper
	nbd_detach "$DEV" >/dev/null 2>&1
	stop_server
}

cleanup() {
	stop_helper
	nbd_detach "$DEV" >/dev/null 2>&1
	stop_server
	knbd_unload >/dev/null 2>&1
	case $NBD_START in stock | patched) nbd_use "$NBD_START" >/dev/null 2>&1 ;; esac
}
trap cleanup EXIT

# start_server [ARGS...]: nbd_reset_server.py serve on SPORT, armed by $ARM
start_server() {
	rm -f "$ARM"
	python3 "$here/nbd_reset_server.py" serve "$SPORT" "$SIZE" "$TRAP_OFF" "$TRAP_LEN" \
		--arm-file "$ARM" "$@" >"$SLOG" 2>&1 &
	SPID=$!
	# the first Python start of a cold TCG guest can take 20 s
	wait_until 90 grep -q READY "$SLOG" || { why "reset server did not start: $(tr '\n' '|' <"$SLOG")"; return 1; }
}

# read_trapped OFFS LIMIT: arm the trap, read OFFS at once through DEV
# (bounded); sets SUM to the reader's summary of the reads the server held
# (nbd_reset_server.py read --server-log), the raw results in reads-*.json
read_trapped() {
	local out
	touch "$ARM"
	out=$(with_timeout "$2" python3 "$here/nbd_reset_server.py" read "$DEV" "$1" \
		--json "$KNBD_OUT/reads-$T_NAME.json" --server-log "$SLOG" 2>&1) ||
		{ why "reader failed or hung: $(head -c 300 <<<"$out")"; return 1; }
	SUM=$(tail -n 1 <<<"$out")
	log "    $T_NAME: $SUM"
	echo "$T_NAME: $SUM" >>"$RES"
	[ "$(field reset "$SUM")" = 1 ] || { why "the server reset no connection: $SUM; $(tr '\n' '|' <"$SLOG")"; return 1; }
}

# field NAME LINE: the value of NAME=VALUE in LINE
field() { [[ " $2 " =~ \ $1=([^ ]*)\  ]] && echo "${BASH_REMATCH[1]}"; }

chk_modules() {
	fresh
	nbd_use patched || return 1
	[ "$(nbd_which)" = patched ] || { why "nbd_which says $(nbd_which) after nbd_use patched"; return 1; }
	local t vm_new vm_stock
	t=$(cat /sys/module/nbd/taint)
	[[ $t == *O* ]] || { why "patched nbd.ko's taint is '$t', want O (out of tree)"; return 1; }
	vm_new=$(modinfo -F vermagic "$KNBD_NBD_PATCHED_KO")
	vm_stock=$(modinfo -F vermagic "/lib/modules/$(uname -r)/kernel/drivers/block/nbd.ko")
	[ "$vm_new" = "$vm_stock" ] || { why "vermagic '$vm_new' != stock '$vm_stock'"; return 1; }
	nbd_use stock || return 1
	[ "$(nbd_which)" = stock ] || { why "nbd_which says $(nbd_which) after nbd_use stock"; return 1; }
	t=$(cat /sys/module/nbd/taint)
	[[ $t != *O* ]] || { why "stock nbd.ko's taint is '$t'"; return 1; }
	# in use: refused with a reason, the module stays
	start_server || return 1
	nbd_attach "$DEV" x 1 "$SPORT" -t "$TMO" || return 1
	if nbd_use patched; then
		why "nbd_use patched worked with $DEV attached"
		return 1
	fi
	[[ $T_WHY == *"in use"* ]] || { why "nbd_use with $DEV attached: '$T_WHY', want 'in use'"; return 1; }
	T_WHY=''
	nbd_detach "$DEV" || return 1
	stop_server
	[ "$(nbd_which)" = stock ] || { why "nbd_which says $(nbd_which) after the refused nbd_use"; return 1; }
}

# chk_requeue stock|patched: two connections, one reset with reads in flight
chk_requeue() {
	local mode=$1 s held lat after mark
	fresh
	nbd_use "$mode" || return 1
	start_server || return 1
	nbd_attach "$DEV" x 2 "$SPORT" -t "$TMO" || return 1
	mark=$(kmsg_mark "requeue-$mode")
	T_NAME=requeue_$mode
	read_trapped "$OFFS" 60 || return 1
	s=$SUM
	held=$(field held "$s") lat=$(field lat_max "$s") after=$(field after_reset_max "$s")
	[ "$held" -ge 1 ] || { why "no read of ours was held by the reset: $s"; return 1; }
	[ "$(field ok "$s")" = "$held" ] && [ "$(field errs "$s")" = none ] ||
		{ why "held reads did not all return the right data: $s"; return 1; }
	[ "$(field others_ok "$s")" = "$(field others "$s")" ] || { why "reads on the live connection failed: $s"; return 1; }
	if [ "$mode" = stock ]; then
		# the requeue waits for the request timeout
		awk -v l="$lat" -v t="$TMO" 'BEGIN { exit !(l >= t - 1) }' ||
			{ why "stock: held reads completed after ${lat}s, before the ${TMO}s timeout: $s"; return 1; }
	else
		awk -v a="$after" 'BEGIN { exit !(a < 1.0) }' ||
			{ why "patched: held reads completed ${after}s after the reset, want < 1 s: $s"; return 1; }
		dmesg_has_since "$mark" "requeued [0-9]+ requests" ||
			{ why "no 'requeued N requests' in dmesg"; return 1; }
	fi
	nbd_detach "$DEV" || return 1
	stop_server
}

# single connection, no helper: the read errors out at the timeout, as stock
chk_single_eio() {
	local s lat
	fresh
	nbd_use patched || return 1
	start_server || return 1
	nbd_attach "$DEV" x 1 "$SPORT" -t "$TMO1" || return 1
	T_NAME=single_eio
	read_trapped "$TRAP_OFF" 60 || return 1
	s=$SUM
	lat=$(field lat_max "$s")
	[ "$(field held "$s")" = 1 ] || { why "the read was not held: $s"; return 1; }
	[ "$(field errs "$s")" = EIO ] || { why "want EIO for the read of a dead single connection: $s"; return 1; }
	awk -v l="$lat" -v t="$TMO1" 'BEGIN { exit !(l >= t - 1) }' ||
		{ why "EIO after ${lat}s, want at the ${TMO1}s timeout as stock: $s"; return 1; }
	nbd_detach "$DEV" || return 1
	stop_server
}

# single connection, knbd-reconnect -D 30: the read waits for the reconnect
# (the server accepts again only 2 s after the reset), then completes
chk_single_reconnect() {
	local s lat after
	fresh
	nbd_use patched || return 1
	start_server --pause-ms 2000 || return 1
	nbd_attach "$DEV" x 1 "$SPORT" -t "$TMO" || return 1
	"$HELPER" -d "$DEV" -H 127.0.0.1 -p "$SPORT" -N x -D 30 2>"$HLOG" &
	HPID=$!
	wait_until 20 grep -q 'dead-connection timeout set' "$HLOG" ||
		{ why "helper did not set the dead-connection timeout: $(tail -n 3 "$HLOG" | tr '\n' '|')"; return 1; }
	T_NAME=single_reconnect
	read_trapped "$TRAP_OFF" 60 || return 1
	s=$SUM
	lat=$(field lat_max "$s") after=$(field after_reset_max "$s")
	[ "$(field held "$s")" = 1 ] && [ "$(field ok "$s")" = 1 ] ||
		{ why "the read did not return the right data: $s"; return 1; }
	awk -v a="$after" 'BEGIN { exit !(a >= 1.5) }' ||
		{ why "completed ${after}s after the reset, before the server accepted again (2 s): $s"; return 1; }
	awk -v l="$lat" -v t="$TMO" 'BEGIN { exit !(l < t - 1) }' ||
		{ why "completed after ${lat}s: waited for the ${TMO}s timeout: $s"; return 1; }
	grep -q 'reconnected #' "$HLOG" || { why "the helper did not reconnect: $(tail -n 3 "$HLOG" | tr '\n' '|')"; return 1; }
	stop_helper
	nbd_detach "$DEV" || return 1
	stop_server
}

# no regression through knbd: fio crc32c write+verify on the patched module
chk_fio_knbd() {
	local out rc
	fresh
	nbd_use patched || return 1
	knbd_load || return 1
	knbd_simple "$N" v "$SIZE" "$KPORT" || return 1
	nbd_attach "$DEV" v 2 "$KPORT" -t 30 || return 1
	out=$(with_timeout 240 fio "${FIO_COMMON[@]}" --filename="$DEV" --size=$((32 << 20)) --do_verify=1 2>&1)
	rc=$?
	echo "$out" >"$KNBD_OUT/fio-nbdpatch.txt"
	[ "$rc" -eq 0 ] || { why "fio write+verify exited $rc: $(grep -iE 'verify|err=|error' <<<"$out" | head -n 3)"; return 1; }
	grep -q 'err= 0' <<<"$out" || { why "fio reported errors: $(grep 'err=' <<<"$out")"; return 1; }
	nbd_detach "$DEV" || return 1
	knbd_unload
}

chk_restore() {
	case $NBD_START in
	stock | patched) nbd_use "$NBD_START" || return 1 ;;
	*) nbd_use stock || return 1 ;;
	esac
	log "    nbd.ko: $(nbd_which) (was $NBD_START)"
}

echo "# requeue_*: nbd-client -C 2 -t $TMO; single_eio: -C 1 -t $TMO1; single_reconnect: -C 1 -t $TMO," \
	"knbd-reconnect -D 30, the server accepts again 2 s after the reset" >"$RES"
t_run nbp_modules chk_modules
t_run nbp_requeue_patched chk_requeue patched
t_run nbp_single_eio chk_single_eio
t_run nbp_single_reconnect chk_single_reconnect
t_run nbp_fio_knbd chk_fio_knbd
t_run nbp_requeue_stock chk_requeue stock
t_run nbp_restore chk_restore
t_done
