#!/bin/bash
# Partitioned volumes over a group of three members (m1, m2, m3) in one
# kernel, each node in its own network namespace behind a bridge
# (group_lib.sh); clients run in the root namespace.  Volume gv: 256 MiB
# (KNBD_GROUP_MB; with less than 40, group_straddle works in a window of the
# whole volume and group_peer_down on its first 24 extents or fewer),
# 1 MiB extents, "epoch 1; stripe 1 2 3" (extent i is owned by member i%3+1).
#
#   group_up                  three members, six links "up"
#   group_full_volume         nbd-client -C 2 on m1 writes+verifies all 256 MiB
#                             (fio crc32c); identical through m2 and m3
#   group_backing_layout      each backing file holds only its own extents
#                             (holes/zeroes elsewhere, ~1/3 allocated each)
#   group_straddle            raw NBD: requests across extents/members,
#                             unaligned, 32 MiB over all members, pipelined
#                             3-member requests with one reply each, FLUSH
#   group_straddle_stats      forwarded_ios/peer_ios/local_ios on the right members
#   group_link_cut            m3's veth down 15 s under a raw writer on m1
#                             (io_timeout 5): EIO only for m3's extents, served
#                             again after, every acknowledged write reads back
#   group_straddle_other_entries  the same bytes read through m2 and m3
#   group_idle_link_timeout   a piece answered 6 s after it is sent, 10 s into
#                             an idle link, must not trip the 15 s link timeout
#   group_huge_volume         1 TiB volume, 4 MiB extents, on small sparse files
#   group_epoch_mismatch      m3 on a newer epoch: its extents EIO through m1,
#                             the others fine; same epoch everywhere: fine again
#   group_peer_down           m3 disabled under load: its extents EIO quickly,
#                             the others fine; re-enabled: links up, data intact
#   group_teardown            everything removed, knbd unloaded
#
# TCG is slow: the whole file takes several minutes (most of it the 256 MiB
# write+verify and the two full reads); every wait is bounded.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=group_lib.sh
. "$here/group_lib.sh"

VOL=gv
SIZE=$((${KNBD_GROUP_MB:-256} << 20))
EXT=$((1 << 20))
WINDOW=$((SIZE < (40 << 20) ? SIZE : 40 << 20))	# group_straddle's working window
NRD=$((SIZE / EXT < 24 ? SIZE / EXT : 24))		# extents group_peer_down reads
PY=$here/test_group_proto.py
PIDS=()
UP=0	# group set up successfully

cleanup() {
	grp_monitor_stop
	kill_bg "${PIDS[@]}" 2>/dev/null
	grp_teardown >/dev/null 2>&1
}
trap cleanup EXIT

[ -n "${GRP_MONITOR:-}" ] && grp_monitor_start "$KNBD_OUT/group-monitor.txt" 5

# stripe 1 2 3: owner of extent E
owner_of() { echo $(($1 % 3 + 1)); }

# need_up: skip (fail) checks that need the group when setup failed
need_up() {
	[ "$UP" = 1 ] || { why "group not set up"; return 1; }
}

# stats_snap FILE: all counters of gv on all members, "m<i>.<key> value"
stats_snap() {
	local i
	for i in 1 2 3; do
		awk -v m="m$i" '{ print m "." $1, $2 }' "$KNBD_CFS/nodes/m$i/volumes/$VOL/stats"
	done >"$1"
}

# stat_delta BEFORE AFTER KEY: after - before
stat_delta() {
	local a b
	b=$(awk -v k="$3" '$1 == k { print $2 }' "$1")
	a=$(awk -v k="$3" '$1 == k { print $2 }' "$2")
	echo $((${a:-0} - ${b:-0}))
}

# ------------------------------------------------------------------ checks --

chk_up() {
	grp_up || return 1
	grp_vol_add "$VOL" "$SIZE" "$EXT" "epoch 1; stripe 1 2 3" || return 1
	grp_enable_all || return 1
	wait_until 20 grp_links_up || { why "links not all up after 20 s: $(grp_links_summary)"; return 1; }
	local i rt rt1
	rt1=$(cat "$KNBD_CFS/nodes/m1/volumes/$VOL/routing")
	grep -q 'epoch 1' <<<"$rt1" || { why "m1 routing does not show epoch 1: $rt1"; return 1; }
	for i in 2 3; do
		rt=$(cat "$KNBD_CFS/nodes/m$i/volumes/$VOL/routing")
		[ "$rt" = "$rt1" ] || { why "m$i routing '$rt' differs from m1's '$rt1'"; return 1; }
	done
	log "links: $(grp_links_summary)"
	UP=1
}

chk_full_volume() {
	need_up || return 1
	local out sz rc wb rb err mb mc pb pc
	grp_attach /dev/nbd0 1 "$VOL" 2 || return 1
	sz=$(blockdev --getsize64 /dev/nbd0 2>/dev/null)
	[ "$sz" = "$SIZE" ] || { why "/dev/nbd0 has $sz bytes, want $SIZE"; return 1; }
	out=$KNBD_OUT/group-fio-full.json
	rc=0
	with_timeout 900 fio --name=full --filename=/dev/nbd0 --rw=write --bs=256k --iodepth=16 \
		--ioengine=libaio --direct=1 --size="$SIZE" --verify=crc32c --do_verify=1 \
		--verify_fatal=1 --output-format=json >"$out" 2>&1 || rc=$?
	[ "$rc" = 0 ] || { why "fio write+verify through m1 exited $rc: $(grep -iE 'verify|err|fail' "$out" | head -n 3)"; return 1; }
	err=$(fio_json_get "$out" 'j["error"]')
	wb=$(fio_json_get "$out" 'j["write"]["io_bytes"]')
	rb=$(fio_json_get "$out" 'j["read"]["io_bytes"]')
	log "fio: wrote $wb, verified $rb bytes, error $err ($(fio_json_get "$out" 'int(j["write"]["bw"])') KiB/s write)"
	[ "$err" = 0 ] && [ "$wb" = "$SIZE" ] && [ "$rb" = "$SIZE" ] ||
		{ why "fio: error=$err wrote $wb verified $rb bytes, want $SIZE each"; return 1; }
	# the whole device through m2 and m3 (in parallel: two vCPUs)
	grp_attach /dev/nbd1 2 "$VOL" 1 || return 1
	grp_attach /dev/nbd2 3 "$VOL" 1 || return 1
	DEV_READ_TIMEOUT=600 dev_md5 /dev/nbd1 0 "$SIZE" >"$KNBD_TMP/md5-b" &
	pb=$!
	DEV_READ_TIMEOUT=600 dev_md5 /dev/nbd2 0 "$SIZE" >"$KNBD_TMP/md5-c" &
	pc=$!
	PIDS+=("$pb" "$pc")
	wait "$pb"
	wait "$pc"
	mb=$(cat "$KNBD_TMP/md5-b")
	mc=$(cat "$KNBD_TMP/md5-c")
	[ -n "$mb" ] || { why "reading all of /dev/nbd1 (through m2) failed"; return 1; }
	[ -n "$mc" ] || { why "reading all of /dev/nbd2 (through m3) failed"; return 1; }
	[ "$mb" = "$mc" ] || { why "md5 through m2 $mb != through m3 $mc"; return 1; }
	echo "$mb" >"$KNBD_TMP/md5-full"
	log "md5 of the volume through m2 and m3: $mb"
}

chk_backing_layout() {
	need_up || return 1
	local out md5 i f alloc pct
	[ -s "$KNBD_TMP/md5-full" ] || { why "no device checksum from group_full_volume"; return 1; }
	# holes/zeroes outside each member's extents, the volume rebuilt from the
	# owners' extents, and 4 KiB spot checks of m1's file against the device
	out=$(with_timeout 300 python3 "$PY" layout --size "$SIZE" --ext "$EXT" --stripe 1,2,3 \
		--device /dev/nbd1 --spot 9 \
		"$KNBD_TMP/grp-m1-$VOL.img" "$KNBD_TMP/grp-m2-$VOL.img" "$KNBD_TMP/grp-m3-$VOL.img" 2>&1) ||
		{ why "layout: $(tail -n 1 <<<"$out")"; return 1; }
	log "layout: $(tr '\n' ' ' <<<"$out")"
	md5=$(awk '$1 == "md5" { print $2 }' <<<"$out")
	[ "$md5" = "$(cat "$KNBD_TMP/md5-full")" ] ||
		{ why "volume rebuilt from the owners' extents has md5 $md5, the device $(cat "$KNBD_TMP/md5-full")"; return 1; }
	grep -q '^written_extents 1=86 2=85 3=85$' <<<"$out" ||
		{ why "not every owned extent holds data: $(grep written <<<"$out")"; return 1; }
	for i in 1 2 3; do
		f=$KNBD_TMP/grp-m$i-$VOL.img
		alloc=$(($(stat -c '%b * %B' "$f")))
		pct=$((alloc * 100 / SIZE))
		log "m$i: $alloc bytes allocated ($pct% of the volume)"
		[ "$pct" -ge 25 ] && [ "$pct" -le 42 ] ||
			{ why "m$i backing has $alloc bytes allocated = $pct% of the data, want 25..42%"; return 1; }
	done
	nbd_detach /dev/nbd1 || return 1
	nbd_detach /dev/nbd2 || return 1
}

chk_straddle() {
	need_up || return 1
	local out rc=0
	stats_snap "$KNBD_TMP/st-before"
	with_timeout 600 python3 "$PY" straddle "$GRP_NET.1" "$GRP_PORT" "$VOL" --size "$SIZE" \
		--ext "$EXT" --stripe 1,2,3 --window "$WINDOW" --model "$KNBD_TMP/model.bin" \
		>"$KNBD_OUT/group-straddle.txt" 2>&1 || rc=$?
	stats_snap "$KNBD_TMP/st-after"
	[ "$rc" = 0 ] || { why "straddle (rc $rc): $(tail -n 1 "$KNBD_OUT/group-straddle.txt")"; return 1; }
	log "straddle: $(grep -c '^ok' "$KNBD_OUT/group-straddle.txt") steps ok"
}

chk_straddle_stats() {
	need_up || return 1
	[ -s "$KNBD_TMP/st-after" ] || { why "no stats from group_straddle"; return 1; }
	local b=$KNBD_TMP/st-before a=$KNBD_TMP/st-after fa la pa pb pc fb fc i
	fa=$(stat_delta "$b" "$a" m1.forwarded_ios)
	la=$(stat_delta "$b" "$a" m1.local_ios)
	pa=$(stat_delta "$b" "$a" m1.peer_ios)
	pb=$(stat_delta "$b" "$a" m2.peer_ios)
	pc=$(stat_delta "$b" "$a" m3.peer_ios)
	fb=$(stat_delta "$b" "$a" m2.forwarded_ios)
	fc=$(stat_delta "$b" "$a" m3.forwarded_ios)
	log "deltas: m1 forwarded=$fa local=$la peer=$pa; m2 peer=$pb forwarded=$fb; m3 peer=$pc forwarded=$fc"
	[ "$fa" -gt 50 ] || { why "m1 forwarded_ios grew by $fa (the entry member should forward many pieces)"; return 1; }
	[ "$la" -gt 20 ] || { why "m1 local_ios grew by $la"; return 1; }
	[ "$pa" = 0 ] || { why "m1 peer_ios grew by $pa (nobody forwarded to it)"; return 1; }
	[ "$pb" -gt 20 ] && [ "$pc" -gt 20 ] || { why "peer_ios grew by $pb on m2 and $pc on m3"; return 1; }
	[ "$fb" = 0 ] && [ "$fc" = 0 ] || { why "forwarded_ios grew on m2 ($fb) / m3 ($fc) without clients there"; return 1; }
	[ "$fa" = $((pb + pc)) ] ||
		{ why "m1 forwarded $fa pieces but m2+m3 served $((pb + pc)) ($pb+$pc)"; return 1; }
	for i in 1 2 3; do
		[ "$(stat_delta "$b" "$a" "m$i.epoch_mismatches")" = 0 ] || { why "m$i epoch_mismatches grew"; return 1; }
	done
	for i in 2 3; do
		[ "$(stat_delta "$b" "$a" "m$i.errors")" = 0 ] || { why "m$i errors grew by $(stat_delta "$b" "$a" "m$i.errors")"; return 1; }
	done
}

chk_straddle_other_entries() {
	need_up || return 1
	[ -s "$KNBD_TMP/model.bin" ] || { why "no model from group_straddle"; return 1; }
	local i out
	for i in 2 3; do
		out=$(with_timeout 300 python3 "$PY" compare "$GRP_NET.$i" "$GRP_PORT" "$VOL" \
			--ext "$EXT" --model "$KNBD_TMP/model.bin" 2>&1) ||
			{ why "through m$i: $(tail -n 1 <<<"$out")"; return 1; }
	done
}

# A forwarded piece answered 6 s after it was sent (netem on m2's bridge
# port), sent ~10-13 s after the link's last reply: the 15 s I/O timeout of
# a link must count from the piece, not from the start of the link's idle
# receive wait (else the link is dropped and the piece fails with EIO).
chk_idle_link_timeout() {
	need_up || return 1
	local mark rc=0 c0 c1 t0 dt
	modprobe sch_netem 2>/dev/null
	read -r _ c0 < <(grep '^connects ' "$KNBD_CFS/nodes/m1/peers/m2/state")
	# extent 1 is m2's: m1's link to m2 restarts its receive wait when this
	# (undelayed) reply arrives
	DEV_READ_TIMEOUT=60 dev_read /dev/nbd0 $((1 * EXT)) 65536 ||
		{ why "read of extent 1 (m2) failed before the delay"; return 1; }
	t0=$SECONDS
	tc qdisc add dev knbdtv2 root netem delay 6000ms 2>/dev/null ||
		{ why "cannot add a netem qdisc on knbdtv2"; return 1; }
	mark=$(kmsg_mark group-idle-link)
	dt=$((10 - (SECONDS - t0)))
	[ "$dt" -gt 0 ] && sleep "$dt"
	# extent 4 is m2's too: sent ~10 s after the last reply, answered 6 s later
	t0=$SECONDS
	DEV_READ_TIMEOUT=60 dev_read /dev/nbd0 $((4 * EXT)) 65536 || rc=1
	dt=$((SECONDS - t0))
	tc qdisc del dev knbdtv2 root 2>/dev/null
	read -r _ c1 < <(grep '^connects ' "$KNBD_CFS/nodes/m1/peers/m2/state")
	log "delayed read: rc $rc after ${dt}s; m1->m2 connects $c0 -> $c1"
	if [ "$rc" != 0 ] || dmesg_has_since "$mark" 'link down'; then
		why "read of extent 4 (m2; reply 6 s after the send, sent ~10 s after the link's last reply)" \
			"failed after ${dt}s (rc $rc, m1->m2 connects $c0 -> $c1): the 15 s link timeout counted from the" \
			"idle receive wait, not from the piece: $(dmesg_since "$mark" | grep -E 'link down|failed' | head -n 2 | tr '\n' ' ')"
		return 1
	fi
	[ "$dt" -ge 5 ] || { why "the delayed read took only ${dt}s: netem delay not in effect?"; return 1; }
	wait_until 15 grp_links_up || { why "links not all up after the delay was removed: $(grp_links_summary)"; return 1; }
}

chk_huge_volume() {
	need_up || return 1
	local big=big es=$((4 << 20)) tib=$((1 << 40)) len=$((12 << 20)) r off i f alloc sz md e o
	local -a offs=(0 $(((512 << 30) - es)) $((tib - len)))
	grp_vol_add "$big" 1T 4M "epoch 1; stripe 1 2 3" || return 1
	grp_attach /dev/nbd3 1 "$big" 2 || return 1
	sz=$(blockdev --getsize64 /dev/nbd3 2>/dev/null)
	[ "$sz" = "$tib" ] || { why "/dev/nbd3 has $sz bytes, want 1 TiB"; return 1; }
	for r in 0 1 2; do
		off=${offs[$r]}
		head -c "$len" /dev/urandom >"$KNBD_TMP/big-$r" || { why "no random data"; return 1; }
		dev_write /dev/nbd3 "$off" "$KNBD_TMP/big-$r" || { why "write of 12 MiB at $off failed"; return 1; }
	done
	grp_attach /dev/nbd4 2 "$big" 1 || return 1
	for r in 0 1 2; do
		off=${offs[$r]}
		md=$(md5sum <"$KNBD_TMP/big-$r" | cut -d' ' -f1)
		[ "$(dev_md5 /dev/nbd3 "$off" "$len")" = "$md" ] || { why "12 MiB at $off read back wrong through m1"; return 1; }
		[ "$(dev_md5 /dev/nbd4 "$off" "$len")" = "$md" ] || { why "12 MiB at $off read back wrong through m2"; return 1; }
		# each of the three extents sits in its owner's file only
		for i in 0 1 2; do
			e=$(((off + i * es) / es))
			o=$(owner_of "$e")
			want=$(file_4k "$KNBD_TMP/big-$r" $((i * es + 4096)) | md5sum)
			got=$(file_4k "$KNBD_TMP/grp-m$o-$big.img" $((e * es + 4096)) | md5sum)
			[ "$got" = "$want" ] || { why "extent $e: m$o's file does not hold its data"; return 1; }
		done
	done
	for i in 1 2 3; do
		f=$KNBD_TMP/grp-m$i-$big.img
		alloc=$(($(stat -c %b "$f") * $(stat -c %B "$f")))
		log "m$i big: apparent $(stat -c %s "$f"), allocated $alloc"
		[ "$alloc" -ge $((11 << 20)) ] && [ "$alloc" -le $((20 << 20)) ] ||
			{ why "m$i backing of the 1 TiB volume has $alloc bytes allocated, want ~12 MiB"; return 1; }
	done
	nbd_detach /dev/nbd3 || return 1
	nbd_detach /dev/nbd4 || return 1
}

chk_epoch_mismatch() {
	need_up || return 1
	local mark r e t0 dt m0 m1 m2 ma_before ma_after
	DEV_READ_TIMEOUT=60
	m0=$(dev_md5 /dev/nbd0 0 65536)
	m1=$(dev_md5 /dev/nbd0 $((1 * EXT)) 65536)
	m2=$(dev_md5 /dev/nbd0 $((2 * EXT)) 65536)
	[ -n "$m0" ] && [ -n "$m1" ] && [ -n "$m2" ] || { why "reads of extents 0-2 fail before the epoch change"; return 1; }
	mark=$(kmsg_mark group-epoch)
	ma_before=$(grp_stat 1 "$VOL" epoch_mismatches)
	r=$(grp_set_routing 3 "$VOL" "epoch 2; stripe 1 2 3")
	[ "$r" = OK ] || { why "routing epoch 2 on m3: $r"; return 1; }
	grep -q 'epoch 2' "$KNBD_CFS/nodes/m3/volumes/$VOL/routing" || { why "m3 routing does not show epoch 2"; return 1; }
	# m3's extents through m1: EIO, promptly
	for e in 2 5; do
		t0=$SECONDS
		if dev_read /dev/nbd0 $((e * EXT)) 65536; then
			why "read of extent $e (m3, newer epoch) through m1 succeeded"
			return 1
		fi
		dt=$((SECONDS - t0))
		[ "$dt" -lt 30 ] || { why "failing read of extent $e took ${dt}s"; return 1; }
	done
	# m1's own and m2's extents: fine, same data
	[ "$(dev_md5 /dev/nbd0 0 65536)" = "$m0" ] || { why "local extent 0 unreadable/changed during the mismatch"; return 1; }
	[ "$(dev_md5 /dev/nbd0 $((1 * EXT)) 65536)" = "$m1" ] || { why "extent 1 (m2, same epoch) unreadable/changed during the mismatch"; return 1; }
	dmesg_has_since "$mark" 'refusing|not forwarding' || { why "no 'refusing'/'not forwarding' in dmesg"; return 1; }
	ma_after=$(grp_stat 1 "$VOL" epoch_mismatches)
	[ "$ma_after" -gt "$ma_before" ] || { why "m1 epoch_mismatches did not grow ($ma_before -> $ma_after)"; return 1; }
	# an older epoch is refused
	r=$(grp_set_routing 3 "$VOL" "epoch 1; stripe 1 2 3")
	[ "$r" = EINVAL ] || { why "writing epoch 1 over epoch 2 on m3 gave $r, want EINVAL"; return 1; }
	# the same table everywhere: fine again
	for e in 1 2; do
		r=$(grp_set_routing "$e" "$VOL" "epoch 2; stripe 1 2 3")
		[ "$r" = OK ] || { why "routing epoch 2 on m$e: $r"; return 1; }
	done
	[ "$(dev_md5 /dev/nbd0 $((2 * EXT)) 65536)" = "$m2" ] || { why "extent 2 (m3) still failing/changed after all members moved to epoch 2"; return 1; }
	[ "$(dev_md5 /dev/nbd0 $((5 * EXT)) 65536)" != "" ] || { why "extent 5 (m3) still failing after all members moved to epoch 2"; return 1; }
	[ "$(dev_md5 /dev/nbd0 0 65536)" = "$m0" ] || { why "extent 0 changed"; return 1; }
}

# background reader for group_peer_down: 64 KiB direct reads over extents
# 0..NRD-1 until FILE.stop exists (or 120 s); one line per read: extent owner rc ms
peer_down_reader() {
	local f=$1 n=0 e t0 t1 rc end=$((SECONDS + 120))
	while [ ! -e "$f.stop" ] && [ "$SECONDS" -lt "$end" ]; do
		e=$((n % NRD))
		t0=${EPOCHREALTIME/./}
		timeout 40 dd if=/dev/nbd0 of=/dev/null bs=65536 count=1 skip=$((e * EXT + (n % 8) * 65536)) \
			iflag=direct,skip_bytes status=none 2>/dev/null
		rc=$?
		t1=${EPOCHREALTIME/./}
		echo "$e $((e % 3 + 1)) $rc $(((t1 - t0) / 1000))" >>"$f"
		n=$((n + 1))
	done
}

chk_peer_down() {
	need_up || return 1
	local ref rd=$KNBD_TMP/reader.txt t0 dt pid mark nok nbad slow cfail
	DEV_READ_TIMEOUT=120
	ref=$(dev_md5 /dev/nbd0 0 $((NRD * EXT)))
	[ -n "$ref" ] || { why "reading the first $NRD MiB failed before the test"; return 1; }
	rm -f "$rd" "$rd.stop"
	peer_down_reader "$rd" &
	pid=$!
	PIDS+=("$pid")
	wait_until 60 test -s "$rd" || { why "background reader made no progress"; return 1; }
	sleep 2
	mark=$(kmsg_mark group-peer-down)
	t0=$SECONDS
	grp_node_disable 3 || return 1
	log "m3 disabled in $((SECONDS - t0))s"
	wait_until 10 peer_not_up 1 3 || { why "m1's link to m3 still up 10 s after m3 was disabled"; return 1; }
	# m3's extents fail quickly, the others work
	t0=$SECONDS
	if DEV_READ_TIMEOUT=60 dev_read /dev/nbd0 $((2 * EXT)) 65536; then
		why "read of extent 2 (m3, disabled) through m1 succeeded"
		return 1
	fi
	dt=$((SECONDS - t0))
	[ "$dt" -le 15 ] || { why "read of extent 2 with m3 down took ${dt}s to fail"; return 1; }
	dev_read /dev/nbd0 0 65536 || { why "read of extent 0 (m1) failed while m3 is down"; return 1; }
	dev_read /dev/nbd0 $((1 * EXT)) 65536 || { why "read of extent 1 (m2) failed while m3 is down"; return 1; }
	sleep 3
	# back: links up again within ~10 s
	t0=$SECONDS
	grp_node_enable 3 || return 1
	wait_until 15 grp_links_up || { why "links not all up 15 s after re-enabling m3: $(grp_links_summary)"; return 1; }
	log "all links up $((SECONDS - t0))s after re-enabling m3"
	sleep 2
	touch "$rd.stop"
	with_timeout 90 wait_pid_gone "$pid" || { why "background reader hung (a read did not return)"; return 1; }
	nok=$(awk '$3 == 0' "$rd" | wc -l)
	nbad=$(awk '$2 != 3 && $3 != 0' "$rd" | wc -l)
	cfail=$(awk '$2 == 3 && $3 != 0' "$rd" | wc -l)
	slow=$(awk '$4 > 30000' "$rd" | wc -l)
	log "reader: $(wc -l <"$rd") reads, $nok ok, $cfail failed on m3's extents, $nbad failed elsewhere, $slow over 30 s"
	cp "$rd" "$KNBD_OUT/group-peer-down-reader.txt" 2>/dev/null
	[ "$nbad" = 0 ] || { why "$nbad reads of m1/m2 extents failed while m3 went away"; return 1; }
	[ "$slow" = 0 ] || { why "$slow reads took over 30 s"; return 1; }
	[ "$cfail" -gt 0 ] || { why "the background reader saw no failure on m3's extents while m3 was down"; return 1; }
	[ "$(dev_md5 /dev/nbd0 0 $((NRD * EXT)))" = "$ref" ] || { why "first $NRD MiB differ (or fail) after m3 came back"; return 1; }
}

peer_not_up() { [ "$(grp_peer_state "$1" "$2")" != up ]; }

# Member 3's network cut (its veth down, not a disable) for 15 s under a
# raw client on m1 writing a block in each of 12 extents round robin, with
# m1's io_timeout at 5 s: only m3's extents fail (EIO), they serve again
# once the link is back, and every block holds its last acknowledged write.
chk_link_cut() {
	need_up || return 1
	local out rc=0 t0=$(cfs_get "$KNBD_CFS/nodes/m1/io_timeout")
	cfs_set "$KNBD_CFS/nodes/m1/io_timeout" 5 || return 1
	out=$(with_timeout 300 python3 "$PY" linkcut "$GRP_NET.1" "$GRP_PORT" "$VOL" --ext "$EXT" \
		--stripe 1,2,3 --cut-member 3 --cut-secs 15 \
		--cut "ip -n knbdtg3 link set knbdte3 down" --restore "ip -n knbdtg3 link set knbdte3 up" 2>&1) || rc=$?
	ip -n knbdtg3 link set knbdte3 up 2>/dev/null
	cfs_set "$KNBD_CFS/nodes/m1/io_timeout" "${t0:-30}" || return 1
	log "$out"
	[ "$rc" = 0 ] || { why "linkcut: $(tail -n 1 <<<"$out")"; return 1; }
	wait_until 30 grp_links_up || { why "links not all up after the cut: $(grp_links_summary)"; return 1; }
}

wait_pid_gone() {
	while kill -0 "$1" 2>/dev/null; do sleep 0.2; done
}

chk_teardown() {
	local rc=0
	grp_teardown || rc=1
	UP=0
	[ "$rc" = 0 ] || { why "teardown failed (see log)"; return 1; }
	! knbd_loaded || { why "knbd still loaded"; return 1; }
}

t_run group_up chk_up
t_run group_full_volume chk_full_volume
t_run group_backing_layout chk_backing_layout
t_run group_straddle chk_straddle
t_run group_straddle_stats chk_straddle_stats
t_run group_straddle_other_entries chk_straddle_other_entries
t_run group_idle_link_timeout chk_idle_link_timeout
t_run group_huge_volume chk_huge_volume
t_run group_epoch_mismatch chk_epoch_mismatch
t_run group_peer_down chk_peer_down
t_run group_link_cut chk_link_cut
t_run group_teardown chk_teardown
t_done
