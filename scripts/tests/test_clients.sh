#!/bin/bash
# knbd with userspace NBD clients: nbdinfo (libnbd), qemu-img/qemu-io (QEMU's
# NBD client), nbdcopy (multi-connection libnbd), nbd-client failing cleanly,
# and an IPv6 listener.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

N=cl
PORT=10809
A_SIZE=$((64 << 20))
B_SIZE=$((16 << 20))
G_SIZE=$((8 << 20))
A_DESC="alpha volume for clients"
B_DESC="beta: 4k blocks"
U=nbd://127.0.0.1:$PORT

cleanup() {
	nbd_detach /dev/nbd0 >/dev/null 2>&1
	knbd_unload >/dev/null 2>&1
}
trap cleanup EXIT

# json_get JSON PYEXPR: evaluate PYEXPR with j = parsed JSON, print the result
json_get() {
	python3 -c 'import json, sys; j = json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"
}

chk_setup() {
	knbd_load || return 1
	knbd_backing "$KNBD_TMP/alpha.img" "$A_SIZE" || return 1
	knbd_backing "$KNBD_TMP/beta.img" "$B_SIZE" || return 1
	knbd_backing "$KNBD_TMP/gamma.img" "$G_SIZE" random || return 1
	knbd_backing "$KNBD_TMP/delta.img" "$G_SIZE" || return 1
	knbd_node_create "$N" "$PORT" || return 1
	knbd_vol_create "$N" alpha "$KNBD_TMP/alpha.img" "description=$A_DESC" || return 1
	knbd_vol_create "$N" beta "$KNBD_TMP/beta.img" block_size=4096 "description=$B_DESC" || return 1
	knbd_vol_create "$N" gamma "$KNBD_TMP/gamma.img" readonly=1 || return 1
	knbd_vol_create "$N" delta "$KNBD_TMP/delta.img" enable=0 || return 1
	knbd_node_enable "$N" || return 1
}

chk_nbdinfo_list() {
	local out js names
	out=$(with_timeout 60 nbdinfo --list "nbd://127.0.0.1" 2>&1) || { why "nbdinfo --list: $out"; return 1; }
	echo "$out" >"$KNBD_OUT/nbdinfo-list.txt"
	grep -q 'export="alpha"' <<<"$out" || { why "alpha missing from nbdinfo --list"; return 1; }
	grep -q "description: $A_DESC" <<<"$out" || { why "alpha's description missing from nbdinfo --list"; return 1; }
	js=$(with_timeout 60 nbdinfo --list --json "nbd://127.0.0.1" 2>&1) || { why "nbdinfo --list --json: $js"; return 1; }
	names=$(json_get "$js" '" ".join(sorted(e["export-name"] for e in j["exports"]))') ||
		{ why "cannot parse nbdinfo --list --json"; return 1; }
	[ "$names" = "alpha beta gamma" ] || { why "exports listed: '$names', want 'alpha beta gamma' (delta is disabled)"; return 1; }
	local d
	d=$(json_get "$js" '[e.get("description") for e in j["exports"] if e["export-name"] == "beta"][0]')
	[ "$d" = "$B_DESC" ] || { why "beta description '$d', want '$B_DESC'"; return 1; }
	d=$(json_get "$js" '[e.get("export-size") for e in j["exports"] if e["export-name"] == "gamma"][0]')
	[ "$d" = "$G_SIZE" ] || { why "gamma size in list '$d', want $G_SIZE"; return 1; }
}

chk_nbdinfo_export() {
	local js v
	js=$(with_timeout 60 nbdinfo --json --no-content "$U/alpha" 2>&1) || { why "nbdinfo alpha: $js"; return 1; }
	v=$(json_get "$js" '(lambda e: "%s %s %s %s" % (e["export-size"], e.get("block_size_minimum"), e.get("block_size_preferred"), e.get("block_size_maximum")))(j["exports"][0])')
	[ "$v" = "$A_SIZE 512 4096 33554432" ] || { why "alpha size/block sizes '$v', want '$A_SIZE 512 4096 33554432'"; return 1; }
	v=$(json_get "$js" '" ".join(str(j["exports"][0][k]) for k in ("is_read_only", "can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn"))')
	[ "$v" = "False True True True True True" ] || { why "alpha flags ro/flush/fua/trim/zero/multi_conn = '$v'"; return 1; }
	v=$(json_get "$js" 'j["exports"][0].get("description")')
	[ "$v" = "$A_DESC" ] || { why "alpha description '$v'"; return 1; }
	js=$(with_timeout 60 nbdinfo --json --no-content "$U/beta" 2>&1) || { why "nbdinfo beta: $js"; return 1; }
	v=$(json_get "$js" '(lambda e: "%s %s" % (e["export-size"], e.get("block_size_minimum")))(j["exports"][0])')
	[ "$v" = "$B_SIZE 4096" ] || { why "beta size/min block '$v', want '$B_SIZE 4096'"; return 1; }
	js=$(with_timeout 60 nbdinfo --json --no-content "$U/gamma" 2>&1) || { why "nbdinfo gamma: $js"; return 1; }
	v=$(json_get "$js" 'j["exports"][0]["is_read_only"]')
	[ "$v" = True ] || { why "gamma is_read_only=$v"; return 1; }
	v=$(with_timeout 60 nbdinfo --size "$U/gamma" 2>&1)
	[ "$v" = "$G_SIZE" ] || { why "nbdinfo --size gamma '$v'"; return 1; }
}

chk_qemu_img_info() {
	local js v
	js=$(with_timeout 60 qemu-img info --output=json "$U/alpha" 2>&1) || { why "qemu-img info: $js"; return 1; }
	v=$(json_get "$js" '"%s %s" % (j["format"], j["virtual-size"])')
	[ "$v" = "raw $A_SIZE" ] || { why "qemu-img info says '$v', want 'raw $A_SIZE'"; return 1; }
	js=$(with_timeout 60 qemu-img info --output=json "$U/beta" 2>&1) || { why "qemu-img info beta: $js"; return 1; }
	v=$(json_get "$js" 'j["virtual-size"]')
	[ "$v" = "$B_SIZE" ] || { why "beta virtual-size $v"; return 1; }
}

# bytes BYTE COUNT: COUNT bytes of value BYTE (hex, e.g. ab)
bytes() { head -c "$2" /dev/zero | tr '\0' "\\$(printf '%03o' "0x$1")"; }

# range_is FILE OFFSET LEN BYTE
range_is() {
	cmp -s <(file_range "$1" "$2" "$3") <(bytes "$4" "$3")
}

qio() {
	local out
	out=$(with_timeout 120 qemu-io -f raw "$@" 2>&1)
	local rc=$?
	echo "$out"
	[ "$rc" -eq 0 ] || return 1
	! grep -qiE 'fail|error|mismatch' <<<"$out"
}

chk_qemu_io_pattern() {
	local out w0 t0 f0 b=$KNBD_TMP/alpha.img
	w0=$(vol_stat "$N" alpha write_zeroes)
	t0=$(vol_stat "$N" alpha trims)
	f0=$(vol_stat "$N" alpha flushes)
	out=$(qio "$U/alpha" \
		-c 'write -P 0xab 0 64k' -c 'write -P 0xab 1m 4k' -c 'write -P 0xab 63m 1m' \
		-c 'read -P 0xab 0 64k' -c 'read -P 0xab 1m 4k' -c 'read -P 0xab 63m 1m' \
		-c 'write -P 0x5c 2m 1m' -c 'write -z 2m 512k' -c 'read -P 0 2m 512k' -c 'read -P 0x5c 2621440 512k' \
		-c 'write -P 0x77 4m 1m' -c 'discard 4m 1m' -c 'flush' \
		-c 'write -P 0x3c 8m 256k' -c 'aio_write -P 0x3d 9m 256k' -c 'aio_write -P 0x3e 10m 256k' -c 'aio_flush' \
		-c 'read -P 0x3d 9m 256k' -c 'read -P 0x3e 10m 256k') ||
		{ why "qemu-io: $(tail -n 5 <<<"$out")"; return 1; }
	echo "$out" >"$KNBD_OUT/qemu-io-pattern.txt"
	range_is "$b" 0 65536 ab || { why "backing bytes 0..64k are not 0xab"; return 1; }
	range_is "$b" $((1 << 20)) 4096 ab || { why "backing bytes at 1m are not 0xab"; return 1; }
	range_is "$b" $((63 << 20)) $((1 << 20)) ab || { why "backing last MiB is not 0xab"; return 1; }
	range_is "$b" 65536 4096 00 || { why "backing bytes after 64k changed"; return 1; }
	range_is "$b" $((2 << 20)) 524288 00 || { why "write -z range not zero in the backing"; return 1; }
	range_is "$b" $(((2 << 20) + 524288)) 524288 5c || { why "bytes after the write -z range changed"; return 1; }
	range_is "$b" $((9 << 20)) 262144 3d || { why "aio_write data missing in the backing"; return 1; }
	[ "$(vol_stat "$N" alpha write_zeroes)" -gt "${w0:-0}" ] || { why "write -z did not send WRITE_ZEROES (stats write_zeroes unchanged)"; return 1; }
	[ "$(vol_stat "$N" alpha trims)" -gt "${t0:-0}" ] || { why "discard did not send TRIM (stats trims unchanged)"; return 1; }
	[ "$(vol_stat "$N" alpha flushes)" -gt "${f0:-0}" ] || { why "flush did not send FLUSH (stats flushes unchanged)"; return 1; }
	# a wrong pattern is detected (the checks above can fail)
	if qio "$U/alpha" -c 'read -P 0xac 0 4k' >/dev/null; then
		why "qemu-io read -P with a wrong pattern passed: verification is broken"
		return 1
	fi
}

chk_qemu_io_unaligned_4k() {
	# beta has block_size 4096: qemu must read-modify-write sub-block writes
	local out b=$KNBD_TMP/beta.img
	out=$(qio "$U/beta" -c 'write -P 0x11 100 200' -c 'read -P 0x11 100 200' \
		-c 'read -P 0 0 100' -c 'read -P 0 300 3796' -c 'write -P 0x22 8190 4' -c 'read -P 0x22 8190 4') ||
		{ why "qemu-io on the 4096-block export: $(tail -n 5 <<<"$out")"; return 1; }
	range_is "$b" 100 200 11 || { why "backing bytes 100..300 are not 0x11"; return 1; }
	range_is "$b" 0 100 00 || { why "backing bytes 0..100 changed"; return 1; }
	range_is "$b" 300 3796 00 || { why "backing bytes 300..4096 changed"; return 1; }
	range_is "$b" 8190 4 22 || { why "backing bytes 8190..8194 are not 0x22"; return 1; }
}

chk_qemu_readonly() {
	local out b=$KNBD_TMP/gamma.img
	local m0
	m0=$(md5sum <"$b")
	if out=$(with_timeout 60 qemu-io -f raw "$U/gamma" -c 'write -P 0x99 0 4k' 2>&1) &&
		! grep -qiE 'fail|error|read.only|denied|not permitted' <<<"$out"; then
		why "qemu-io write to the read-only export succeeded: $out"
		return 1
	fi
	[ "$(md5sum <"$b")" = "$m0" ] || { why "read-only backing changed"; return 1; }
	rm -f "$KNBD_TMP/gamma.copy"
	out=$(with_timeout 120 qemu-img convert -f raw -O raw "$U/gamma" "$KNBD_TMP/gamma.copy" 2>&1) ||
		{ why "qemu-img convert from gamma: $out"; return 1; }
	cmp -s "$KNBD_TMP/gamma.copy" "$b" || { why "qemu-img convert copy of gamma differs from its backing"; return 1; }
	rm -f "$KNBD_TMP/gamma.copy"
}

chk_nbdcopy() {
	local src=$KNBD_TMP/src.img out=$KNBD_TMP/out.img o
	rm -f "$src" "$out"
	# random data with a zero run and a sparse hole (nbdcopy zeroes those)
	head -c "$A_SIZE" /dev/urandom >"$src" || return 1
	dd if=/dev/zero of="$src" bs=1M seek=8 count=4 conv=notrunc status=none
	fallocate -p -o $((20 << 20)) -l $((4 << 20)) "$src" 2>/dev/null
	# make the export non-zero where the source is zero
	o=$(qio "$U/alpha" -c 'write -P 0xee 8m 4m' -c 'write -P 0xee 20m 4m') || { why "qemu-io prefill: $o"; return 1; }
	o=$(with_timeout 180 nbdcopy --flush "$src" "$U/alpha" 2>&1) || { why "nbdcopy file -> export: $o"; return 1; }
	cmp -s "$src" "$KNBD_TMP/alpha.img" || { why "backing differs from the source after nbdcopy file -> export: $(cmp "$src" "$KNBD_TMP/alpha.img" 2>&1 | head -n 1)"; return 1; }
	o=$(with_timeout 180 nbdcopy "$U/alpha" "$out" 2>&1) || { why "nbdcopy export -> file: $o"; return 1; }
	cmp -s "$src" "$out" || { why "nbdcopy export -> file copy differs from the source: $(cmp "$src" "$out" 2>&1 | head -n 1)"; return 1; }
	# export -> export (two connections sets at once)
	# export -> export: gamma (8 MiB, read-only) onto the start of alpha
	o=$(with_timeout 180 nbdcopy "$U/gamma" "$U/alpha" 2>&1) || { why "nbdcopy gamma -> alpha: $o"; return 1; }
	cmp -s -n "$G_SIZE" "$KNBD_TMP/gamma.img" "$KNBD_TMP/alpha.img" || { why "alpha's first 8 MiB differ from gamma after nbdcopy"; return 1; }
	cmp -s -i "$G_SIZE" -n $((A_SIZE - G_SIZE)) "$src" "$KNBD_TMP/alpha.img" || { why "nbdcopy gamma -> alpha changed alpha beyond 8 MiB"; return 1; }
	o=$(with_timeout 60 nbdinfo --size "$U/alpha" 2>&1)
	[ "$o" = "$A_SIZE" ] || { why "server not answering after nbdcopy export->export: $o"; return 1; }
	rm -f "$src" "$out"
}

chk_unknown_export() {
	local out
	for e in nosuch delta; do
		if out=$(with_timeout 60 nbdinfo --no-content "$U/$e" 2>&1); then
			why "nbdinfo of unknown export '$e' succeeded: $out"
			return 1
		fi
		[ -n "$out" ] || { why "nbdinfo failed on '$e' without a message"; return 1; }
		if out=$(with_timeout 60 qemu-img info "$U/$e" 2>&1); then
			why "qemu-img info of unknown export '$e' succeeded"
			return 1
		fi
		if out=$(with_timeout 60 nbdcopy "$U/$e" "$KNBD_TMP/x.img" 2>&1); then
			why "nbdcopy from unknown export '$e' succeeded"
			return 1
		fi
		if out=$(with_timeout 60 nbd-client 127.0.0.1 "$PORT" /dev/nbd0 -N "$e" 2>&1); then
			why "nbd-client attached unknown export '$e'"
			nbd_detach /dev/nbd0
			return 1
		fi
		nbd_disconnected /dev/nbd0 || { why "/dev/nbd0 has a size after a failed nbd-client"; return 1; }
	done
	rm -f "$KNBD_TMP/x.img"
	# the server is fine
	out=$(with_timeout 60 nbdinfo --size "$U/alpha" 2>&1)
	[ "$out" = "$A_SIZE" ] || { why "after unknown exports: nbdinfo alpha '$out'"; return 1; }
}

chk_ipv6() {
	local out
	knbd_backing "$KNBD_TMP/v6.img" $((4 << 20)) || return 1
	mkdir "$(knbd_node_dir six)" || { why "mkdir node six"; return 1; }
	cfs_set "$(knbd_node_dir six)/listen_addr" ::1 || return 1
	cfs_set "$(knbd_node_dir six)/listen_port" 10811 || return 1
	knbd_vol_create six v6 "$KNBD_TMP/v6.img" || return 1
	knbd_node_enable six || return 1
	out=$(with_timeout 60 nbdinfo --size "nbd://[::1]:10811/v6" 2>&1) || { why "nbdinfo over IPv6: $out"; return 1; }
	[ "$out" = $((4 << 20)) ] || { why "IPv6 export size '$out'"; return 1; }
	out=$(qio "nbd://[::1]:10811/v6" -c 'write -P 0x66 0 4k' -c 'read -P 0x66 0 4k') || { why "qemu-io over IPv6: $out"; return 1; }
	if with_timeout 30 nbdinfo --size "nbd://127.0.0.1:10811/v6" >/dev/null 2>&1; then
		why "node bound to ::1 also answers on 127.0.0.1"
		return 1
	fi
	grep -q "::1" "$(knbd_node_dir six)/listen_addr" || { why "listen_addr reads back '$(cat "$(knbd_node_dir six)/listen_addr")'"; return 1; }
}

t_run cl_setup chk_setup
t_run cl_nbdinfo_list chk_nbdinfo_list
t_run cl_nbdinfo_export chk_nbdinfo_export
t_run cl_qemu_img_info chk_qemu_img_info
t_run cl_qemu_io_pattern chk_qemu_io_pattern
t_run cl_qemu_io_unaligned_4k chk_qemu_io_unaligned_4k
t_run cl_qemu_readonly chk_qemu_readonly
t_run cl_nbdcopy chk_nbdcopy
t_run cl_unknown_export chk_unknown_export
t_run cl_ipv6 chk_ipv6
t_run cl_teardown knbd_unload
t_done
