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

step "detaching the single-member volume"
nbd-client -d /dev/nbd0 >/dev/null
cleanup

# ---- part 2: one volume partitioned over a group of three members ----
step "group: three members m1 m2 m3, each in its own network namespace (192.0.2.1-3 on a bridge)"
insmod "$MOD" || die "insmod $MOD failed"
modprobe bridge && modprobe veth || die "cannot load bridge/veth"
group_cleanup() {
	nbd-client -d /dev/nbd1 >/dev/null 2>&1 || true
	for i in 1 2 3; do
		n=$CFG/nodes/m$i
		[ -d $n ] || continue
		echo 0 >$n/enable 2>/dev/null || true
		rmdir $n/volumes/* $n/peers/* $n 2>/dev/null || true
	done
	rmmod knbd 2>/dev/null || true
	for i in 1 2 3; do ip netns del m$i 2>/dev/null || true; done
	ip link del br0 2>/dev/null || true
}
trap group_cleanup EXIT
# The group key the members prove to each other; a file any member reads (here: the same VM).
KEYFILE=/run/knbd-group.key
(umask 077 && od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >$KEYFILE)
ip link add br0 type bridge && ip addr add 192.0.2.254/24 dev br0 && ip link set br0 up
for i in 1 2 3; do
	ip netns add m$i
	ip link add v$i type veth peer name e$i
	ip link set e$i netns m$i
	ip link set v$i master br0 && ip link set v$i up
	ip -n m$i addr add 192.0.2.$i/24 dev e$i && ip -n m$i link set e$i up && ip -n m$i link set lo up
	truncate -s 0 /dev/shm/m$i.img
	n=$CFG/nodes/m$i
	mkdir $n
	echo $i >$n/node_id
	echo 7 >$n/group_id
	echo $KEYFILE >$n/group_key	# member links authenticate (HMAC-SHA256)
	echo 192.0.2.$i >$n/listen_addr
	for j in 1 2 3; do
		[ $j = $i ] && continue
		mkdir $n/peers/m$j
		echo 192.0.2.$j >$n/peers/m$j/addr
		echo $j >$n/peers/m$j/node_id
	done
	mkdir $n/volumes/gv
	echo /dev/shm/m$i.img >$n/volumes/gv/backing_path
	echo 1G >$n/volumes/gv/size
	echo "epoch 1; stripe 1 2 3" >$n/volumes/gv/routing
	echo 1 >$n/volumes/gv/enable
	nsenter --net=/run/netns/m$i sh -c "echo 1 > $n/enable" || die "cannot enable m$i"
done
for t in $(seq 50); do
	[ "$(cat $CFG/nodes/m*/peers/*/state | grep -c 'state up')" = 6 ] && break
	sleep 0.2
done
step "member links: $(cat $CFG/nodes/m*/peers/*/state | grep -c 'state up')/6 up, authenticated with $(cat $CFG/nodes/m1/peer_auth); routing of gv on m1:"
sed 's/^/    /' $CFG/nodes/m1/volumes/gv/routing
step "attaching /dev/nbd1 to member m1 (nbd-client -C 2); m1 stores a third, forwards the rest"
timeout 60 nbd-client 192.0.2.1 10809 /dev/nbd1 -N gv -C 2 -t 30 >/dev/null || die "nbd-client could not attach to m1"
step "fio randrw-verify on the group volume (${RUNTIME}s)"
timeout $((RUNTIME + 120)) fio --name=group-randrw --filename=/dev/nbd1 --direct=1 --ioengine=libaio \
	--size=1G --runtime="$RUNTIME" --time_based --rw=randrw --bs=64k --iodepth=16 --verify=crc32c \
	--verify_fatal=1 --eta=never --output-format=json --output=/tmp/group.json || die "fio on the group failed"
python3 - "$KNBD_OUT/summary.txt" /tmp/group.json <<'PY'
import json, sys
j = json.load(open(sys.argv[2]))["jobs"][0]
with open(sys.argv[1], "a") as o:
    o.write("\ngroup volume gv (1 GiB, 1 MiB extents striped over m1 m2 m3), client on m1, fio 64k randrw verify:\n")
    for d in ("read", "write"):
        s = j[d]
        o.write("  %-5s %8.0f IOPS %8.1f MB/s  lat avg %8.0f us  errors %d\n" % (
            d, s["iops"], s["bw_bytes"] / 1e6, s["clat_ns"]["mean"] / 1e3, j.get("error", 0)))
PY
{
	printf '  %-4s %10s %10s %10s %10s %12s\n' member local_ios forwarded peer_ios errors "stored KiB"
	for i in 1 2 3; do
		st=$CFG/nodes/m$i/volumes/gv/stats
		printf '  m%-3s %10s %10s %10s %10s %12s\n' $i "$(awk '$1=="local_ios"{print $2}' $st)" \
			"$(awk '$1=="forwarded_ios"{print $2}' $st)" "$(awk '$1=="peer_ios"{print $2}' $st)" \
			"$(awk '$1=="errors"{print $2}' $st)" "$(du -k /dev/shm/m$i.img | cut -f1)"
	done
} >>"$KNBD_OUT/summary.txt"

step "detaching and tearing down"
nbd-client -d /dev/nbd1 >/dev/null
group_cleanup
trap - EXIT

# ---- part 3: load distribution ----
brc=0
step "balancing: 3 clients (nbd-client -C 2) all start on m1; the connection manager moves"
step "  connections, knbd-reconnect brings them back through the group address 192.0.2.100"
step "  (IPVS, ip_vs_knbd scheduler) to the least loaded member; fio crc32c verify on every client"
KNBD_OUT=$KNBD_OUT/balance KNBD_BALANCE_ONLY=knbd \
	bash "$REPO/scripts/tests/test_balance.sh" >"$KNBD_OUT/balance.log" 2>&1 || brc=$?
{
	echo
	echo "load distribution (3 members, 3 clients x 2 connections starting on m1):"
	sed 's/^/  /' "$KNBD_OUT/balance/balance-knbd.summary" 2>/dev/null || echo "  (no summary)"
	sed 's/^/  /' "$KNBD_OUT/balance/balance-knbd.chart" 2>/dev/null
} >>"$KNBD_OUT/summary.txt"
[ "$brc" = 0 ] || die "the balancing scenario failed (see balance.log: $(grep -a '^FAIL' "$KNBD_OUT/balance.log" | head -n 2))"
if dmesg | grep -E 'BUG:|WARNING:|Oops|KASAN' >/dev/null; then
	die "kernel reported a problem (see dmesg.txt)"
fi
step "done"
