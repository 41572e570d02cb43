#!/bin/bash
# Runs inside the demo VM: load knbd, configure a node and a volume through configfs, attach it
# with nbd-client (netlink, 4 connections), run fio jobs, write $KNBD_OUT/summary.txt.
set -euo pipefail
# shellcheck disable=SC1090
. "$1"
REPO=$PWD
MOD=${KNBD_MODULE:-$REPO/knbd.ko}
CFG=/sys/kernel/config/knbd
t0=$SECONDS
step() { printf '[guest %3ds] %s\n' $((SECONDS - t0)) "$*"; }
die() {
	printf '[guest %3ds] FAILED: %s\n' $((SECONDS - t0)) "$*"
	exit 1
}

cleanup() {
	nbd-client -d /dev/nbd0 >/dev/null 2>&1 || true
	[ -d $CFG/nodes/demo ] || return 0
	echo 0 >$CFG/nodes/demo/enable 2>/dev/null || true
	rmdir $CFG/nodes/demo/volumes/* 2>/dev/null || true
	rmdir $CFG/nodes/demo 2>/dev/null || true
	rmmod knbd 2>/dev/null || true
}
trap cleanup EXIT

step "loading configfs, nbd and knbd ($(uname -r))"
modprobe configfs && modprobe nbd nbds_max=4 || die "cannot load configfs/nbd"
insmod "$MOD" || die "insmod $MOD failed"

step "configuring node 'demo' and volume 'vol0' (256 MiB tmpfs file) through configfs"
truncate -s 256M /dev/shm/vol0.img
mkdir $CFG/nodes/demo
mkdir $CFG/nodes/demo/volumes/vol0
echo /dev/shm/vol0.img >$CFG/nodes/demo/volumes/vol0/backing_path
echo "knbd demo volume" >$CFG/nodes/demo/volumes/vol0/description
echo 1 >$CFG/nodes/demo/volumes/vol0/enable
echo 127.0.0.1 >$CFG/nodes/demo/listen_addr
echo 10809 >$CFG/nodes/demo/listen_port
echo 1 >$CFG/nodes/demo/enable || die "cannot enable the node"

step "nbdinfo --list:"
nbdinfo --list nbd://127.0.0.1 2>&1 | sed -n '1,/block_size_maximum/p' | sed 's/\x1b\[[0-9;]*m//g; s/^/    /'

step "attaching /dev/nbd0 with nbd-client -C 4 (netlink)"
timeout 60 nbd-client 127.0.0.1 10809 /dev/nbd0 -N vol0 -C 4 -t 30 >/dev/null ||
	die "nbd-client could not attach"
sed 's/^/    /' $CFG/nodes/demo/clients

cd /tmp
jobs=(
	"randread-4k:--rw=randread --bs=4k --iodepth=16"
	"randwrite-4k:--rw=randwrite --bs=4k --iodepth=16"
	"seqread-1m:--rw=read --bs=1m --iodepth=4"
	"seqwrite-1m:--rw=write --bs=1m --iodepth=4"
	"randrw-verify:--rw=randrw --bs=4k --iodepth=16 --verify=crc32c --verify_fatal=1"
)
for j in "${jobs[@]}"; do
	name=${j%%:*}
	step "fio $name (${RUNTIME}s)"
	# shellcheck disable=SC2086
	timeout $((RUNTIME + 120)) fio --name="$name" --filename=/dev/nbd0 --direct=1 --ioengine=libaio \
		--size=256M --runtime="$RUNTIME" --time_based --numjobs=1 --group_reporting \
		--eta=never --output-format=json --output="/tmp/$name.json" ${j#*:} ||
		die "fio $name failed"
done

python3 - "$KNBD_OUT/summary.txt" /tmp/*.json <<'PY'
import json, sys
out = sys.argv[1]
rows = []
for f in sys.argv[2:]:
    j = json.load(open(f))["jobs"][0]
    for d in ("read", "write"):
        s = j[d]
        if s["io_bytes"] == 0:
            continue
        lat = s["clat_ns"]
        p99 = lat.get("percentile", {}).get("99.000000", 0) / 1e3
        rows.append((j["jobname"], d, s["iops"], s["bw_bytes"] / 1e6, lat["mean"] / 1e3, p99,
                     j.get("error", 0)))
with open(out, "w") as o:
    o.write("knbd demo: fio against /dev/nbd0 (nbd-client -C 4 -> in-kernel knbd, tmpfs backing)\n")
    o.write("QEMU TCG: absolute numbers are emulation-bound; compare ratios within one run\n\n")
    o.write("%-14s %-5s %10s %9s %12s %12s %6s\n" % ("job", "dir", "IOPS", "MB/s", "lat avg us", "lat p99 us", "errs"))
    for r in sorted(rows, key=lambda r: r[0]):
        o.write("%-14s %-5s %10.0f %9.1f %12.0f %12.0f %6d\n" % r)
PY
sed 's/^/    /' $CFG/nodes/demo/volumes/vol0/stats | paste -sd' ' | sed 's/^/[stats] /' >>"$KNBD_OUT/summary.txt"

step "detaching and tearing down"
nbd-client -d /dev/nbd0 >/dev/null
cleanup
trap - EXIT
if dmesg | grep -E 'BUG:|WARNING:|Oops|KASAN' >/dev/null; then
	die "kernel reported a problem (see dmesg.txt)"
fi
step "done"
