#!/bin/bash
# knbdctl (tools/knbdctl) on the real configfs tree: a three-member group
# (nodes m1 m2 m3 on 127.0.0.1, clients on 1084<i>, member links on 1085<i>,
# a group key, three volumes routed over the three) built only with
# knbdctl; show --json; save, clear, restore and the tree compared byte for
# byte; member links authenticated and I/O through m1 after the restore; a
# file with an error rolls back to the empty tree; restore twice is
# idempotent; knbd.service's ExecStart/ExecStop lines as a simulated boot
# after rmmod knbd.  /etc is read-only in the guest: the configuration and
# the keys live under $KNBD_TMP (KNBDCTL_CONFIG, KNBDCTL_KEYS).
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

CTL=$KNBD_REPO/tools/knbdctl
UNIT=$KNBD_REPO/systemd/knbd.service
ETC=$KNBD_TMP/ctl-etc
export KNBDCTL_CONFIG=$ETC/config.json
export KNBDCTL_KEYS=$ETC/keys
KEY=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
DEV=/dev/nbd0
DUMP0=$KNBD_TMP/ctl-dump-before.txt
SUM0=''	# md5 of what was written through m1

cleanup() {
	nbd_detach "$DEV" >/dev/null 2>&1
	knbd_unload >/dev/null 2>&1
	rm -rf "$ETC" "$KNBD_TMP"/ctl-*.img "$KNBD_TMP"/ctl-bin
}
trap cleanup EXIT

ctl() { "$CTL" "$@"; }

# ctl_ok ARGS...: knbdctl ARGS must succeed
ctl_ok() {
	local out
	out=$(ctl "$@" 2>&1) || { why "knbdctl $*: $(echo "$out" | tail -n 3)"; return 1; }
}

# dump: every readable file of the tree except live ones (stats, clients,
# state, routing_status), "path: bytes" sorted, write-only ones named
dump_tree() {
	python3 - "$KNBD_CFS" <<'PY'
import os, sys
root = sys.argv[1]
for d, dirs, files in sorted(os.walk(root)):
    dirs.sort()
    for f in sorted(files):
        if f in ("stats", "clients", "state", "routing_status"):
            continue
        p = os.path.join(d, f)
        try:
            with open(p, "rb") as fh:
                data = fh.read()
            print("%s: %r" % (os.path.relpath(p, root), data))
        except OSError as e:
            print("%s: <%s>" % (os.path.relpath(p, root), e.strerror))
PY
}

tree_empty() { [ -z "$(ls -A "$KNBD_CFS/nodes" 2>/dev/null)" ]; }

links_up() {
	local i j s
	for i in 1 2 3; do
		read -r s <"$KNBD_CFS/nodes/m$i/peer_auth" 2>/dev/null
		[ "$s" = hmac-sha256 ] || return 1
		for j in 1 2 3; do
			[ "$i" = "$j" ] && continue
			s=''
			read -r _ s <"$KNBD_CFS/nodes/m$i/peers/m$j/state" 2>/dev/null
			[ "$s" = up ] || return 1
		done
	done
}

links_summary() {
	local i j s
	for i in 1 2 3; do
		for j in 1 2 3; do
			[ "$i" = "$j" ] && continue
			s=''
			read -r _ s <"$KNBD_CFS/nodes/m$i/peers/m$j/state" 2>/dev/null
			printf 'm%s->m%s=%s ' "$i" "$j" "$s"
		done
	done
}

chk_build() {
	local i j rt2 key
	knbd_load || return 1
	ip link set lo up
	mkdir -p "$ETC" && printf '%s\n' "$KEY" >"$ETC/seed.key" || { why "cannot write $ETC"; return 1; }
	rt2=$(ctl group plan --members 1,2,3 --size 24M --extent-size 64K) ||
		{ why "group plan failed"; return 1; }
	# v4: 1024 one-extent ranges (about 7 KB, past the 4000 bytes knbdctl writes
	# through routing): written and restored through routing_table
	awk 'BEGIN { print "epoch 4"; for (i = 0; i < 1024; i++) print i, 1 + i % 3 }' \
		>"$KNBD_TMP/ctl-rt4" || return 1
	[ "$(wc -c <"$KNBD_TMP/ctl-rt4")" -gt 4000 ] || { why "v4 table too short"; return 1; }
	for i in 1 2 3; do
		# one key from a file (set), the others as hex (create)
		key=group_key=$KEY
		[ "$i" = 1 ] && key=list=1
		ctl_ok create node "m$i" node_id="$i" group_id=7 listen_addr=127.0.0.1 \
			listen_port=$((10840 + i)) peer_port=$((10850 + i)) io_timeout=20 \
			balance_threshold_pct=150 balance_clear_pct=120 "$key" || return 1
		if [ "$i" = 1 ]; then
			ctl_ok set m1 group_key_file="$ETC/seed.key" || return 1
		fi
		for j in 1 2 3; do
			[ "$i" = "$j" ] && continue
			ctl_ok create peer "m$i/m$j" addr=127.0.0.1 port=$((10850 + j)) node_id="$j" || return 1
		done
		: >"$KNBD_TMP/ctl-m$i-v1.img" && : >"$KNBD_TMP/ctl-m$i-v2.img" && : >"$KNBD_TMP/ctl-m$i-v3.img"
		ctl_ok create volume "m$i/v1" backing_path="$KNBD_TMP/ctl-m$i-v1.img" size=16M \
			routing="epoch 1; stripe 1 2 3" enable=1 || return 1
		ctl_ok create volume "m$i/v2" backing_path="$KNBD_TMP/ctl-m$i-v2.img" size=24M \
			extent_size=64K routing="$rt2" description="planned ranges" enable=1 || return 1
		ctl_ok create volume "m$i/v3" backing_path="$KNBD_TMP/ctl-m$i-v3.img" size=8M \
			block_size=4096 direct_io=0 routing="epoch 3; 0-3 2; 4-7 3" \
			allowed_hosts="127.0.0.0/8, ::1" enable=1 || return 1
		: >"$KNBD_TMP/ctl-m$i-v4.img" || return 1
		ctl_ok create volume "m$i/v4" backing_path="$KNBD_TMP/ctl-m$i-v4.img" size=64M extent_size=64K \
			routing="@$KNBD_TMP/ctl-rt4" enable=1 || return 1
	done
	for i in 1 2 3; do
		ctl_ok set "m$i" enable=1 || return 1
	done
	wait_until 60 links_up || { why "member links not up and authenticated: $(links_summary)"; return 1; }
	[ "$(stat -c %a "$KNBDCTL_KEYS")" = 700 ] && [ "$(stat -c %a "$KNBDCTL_KEYS/m1.key")" = 600 ] ||
		{ why "keys dir/file modes: $(stat -c '%n %a' "$KNBDCTL_KEYS" "$KNBDCTL_KEYS"/*)"; return 1; }
	for i in 1 2 3; do
		[ "$(cat "$KNBDCTL_KEYS/m$i.key")" = "$KEY" ] || { why "m$i.key does not hold the key"; return 1; }
	done
	# a bad value: the kernel's reason and the path, non-zero exit
	local out
	out=$(ctl set m1/v3 size=4M 2>&1) && { why "size of an enabled volume changed"; return 1; }
	[[ $out == *"$KNBD_CFS/nodes/m1/volumes/v3/size: Device or resource busy"* ]] ||
		{ why "set on an enabled volume: '$out'"; return 1; }
	out=$(ctl set m1/v2 routing="epoch 9; stripe 1 7" 2>&1) && { why "routing naming member 7 accepted"; return 1; }
	[[ $out == *"$KNBD_CFS/nodes/m1/volumes/v2/routing: Invalid argument"* ]] ||
		{ why "routing naming an unknown member: '$out'"; return 1; }
}

chk_show_json() {
	ctl show --json >"$KNBD_TMP/ctl-show.json" 2>"$KNBD_TMP/ctl-show.err" ||
		{ why "show --json failed: $(cat "$KNBD_TMP/ctl-show.err")"; return 1; }
	python3 - "$KNBD_TMP/ctl-show.json" "$KEY" <<'PY' || { why "show --json: $(tail -n 1 "$KNBD_TMP/ctl-show.err")"; return 1; }
import json, sys
doc = json.load(open(sys.argv[1]))
err = open(sys.argv[1].replace(".json", ".err"), "a")
def fail(m):
    print(m, file=err); sys.exit(1)
if sorted(doc["nodes"]) != ["m1", "m2", "m3"]: fail("nodes %s" % sorted(doc["nodes"]))
if sys.argv[2] in open(sys.argv[1]).read(): fail("the group key is shown")
for n, node in doc["nodes"].items():
    if not node["enable"] or node["live"]["peer_auth"] != "hmac-sha256": fail("%s not enabled/authenticated" % n)
    for p, peer in node["peers"].items():
        if peer["live"]["state"].get("state") != "up": fail("%s/%s link %s" % (n, p, peer["live"]["state"]))
    r = node["volumes"]["v2"]["live"]["routing"]
    if r["epoch"] != 1 or r["extents"] != {"1": 128, "2": 128, "3": 128}: fail("v2 routing %s" % r)
    r = node["volumes"]["v4"]["live"]["routing"]
    if r["epoch"] != 4 or r["extents"] != {"1": 342, "2": 341, "3": 341}: fail("v4 routing %s" % r)
    r = node["volumes"]["v1"]["live"]["routing"]
    if r["extents"] != {"1": 6, "2": 5, "3": 5}: fail("v1 routing %s" % r)
    if "reads" not in node["volumes"]["v1"]["live"]["stats"]: fail("no volume stats")
    if "load" not in node["live"]["stats"]["node"]: fail("no node load")
PY
	local out
	out=$(ctl show 2>&1) && [[ $out == *"peer m2 id 2 127.0.0.1:10852 link up"* ]] ||
		{ why "show: $(echo "$out" | head -n 3)"; return 1; }
}

# io_check WRITE: attach v1 through m1, write random data over the whole
# volume (WRITE=1, remembered in SUM0) or read it back, compare md5
io_check() {
	local sum
	nbd_attach "$DEV" v1 1 10841 -t 60 || return 1
	if [ "$1" = 1 ]; then
		head -c 16M /dev/urandom >"$KNBD_TMP/ctl-data.bin"
		SUM0=$(md5sum <"$KNBD_TMP/ctl-data.bin" | cut -d' ' -f1)
		with_timeout 120 dd if="$KNBD_TMP/ctl-data.bin" of="$DEV" bs=1M oflag=direct conv=fsync status=none ||
			{ why "write through m1 failed"; nbd_detach "$DEV"; return 1; }
		rm -f "$KNBD_TMP/ctl-data.bin"
	fi
	sum=$(with_timeout 120 dd if="$DEV" bs=1M iflag=direct status=none | md5sum | cut -d' ' -f1)
	nbd_detach "$DEV" || return 1
	[ -n "$SUM0" ] && [ "$sum" = "$SUM0" ] || { why "read back through m1: md5 $sum, wrote $SUM0"; return 1; }
	# the pieces went over the member links
	local f
	read -r _ f < <(grep '^forwarded' "$KNBD_CFS/nodes/m1/peers/m2/state")
	[ "${f:-0}" -gt 0 ] || { why "nothing forwarded to m2"; return 1; }
}

chk_save_clear_restore() {
	local out
	io_check 1 || return 1
	dump_tree >"$DUMP0" || { why "dump failed"; return 1; }
	ctl_ok save || return 1
	[ "$(stat -c %a "$KNBDCTL_CONFIG")" = 600 ] || { why "config.json mode $(stat -c %a "$KNBDCTL_CONFIG")"; return 1; }
	# show --json holds what save holds
	out=$(python3 - "$KNBDCTL_CONFIG" "$KNBD_TMP/ctl-show.json" 2>&1 <<'PY'
import json, sys
saved, shown = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
for n, node in saved["nodes"].items():
    s = shown["nodes"][n]
    assert node["attributes"] == s["attributes"] and node["enable"] == s["enable"], n
    assert node.get("group_key") and s.get("group_key") == "(set)", n
    for p, peer in node["peers"].items():
        assert peer["attributes"] == s["peers"][p]["attributes"], (n, p)
    for v, vol in node["volumes"].items():
        for k in ("attributes", "routing", "enable"):
            assert vol[k] == s["volumes"][v][k], (n, v, k)
PY
	) || { why "show --json differs from save: $out"; return 1; }
	grep -q "\"group_key\": \"$KEY\"" "$KNBDCTL_CONFIG" || { why "the key is not in config.json"; return 1; }
	ctl_ok clear || return 1
	tree_empty || { why "tree not empty after clear: $(ls "$KNBD_CFS/nodes")"; return 1; }
	out=$(ctl restore 2>&1) || { why "restore: $(echo "$out" | tail -n 3)"; return 1; }
	dump_tree >"$KNBD_TMP/ctl-dump-after.txt"
	cmp -s "$DUMP0" "$KNBD_TMP/ctl-dump-after.txt" ||
		{ why "tree differs after restore: $(diff "$DUMP0" "$KNBD_TMP/ctl-dump-after.txt" | head -n 4)"; return 1; }
	wait_until 60 links_up || { why "links after restore: $(links_summary)"; return 1; }
	io_check 0
}

chk_idempotent() {
	local out mark
	mark=$(kmsg_mark restore-twice)
	out=$(ctl restore 2>&1) || { why "second restore: $(echo "$out" | tail -n 3)"; return 1; }
	[[ $out == *"0 change(s)"* ]] || { why "second restore changed things: $out"; return 1; }
	dump_tree >"$KNBD_TMP/ctl-dump-after.txt"
	cmp -s "$DUMP0" "$KNBD_TMP/ctl-dump-after.txt" || { why "tree differs after a second restore"; return 1; }
	# nothing was disabled, re-enabled or re-routed
	! dmesg_has_since "$mark" 'disabled|enabled|routing epoch' ||
		{ why "the kernel saw changes: $(dmesg_since "$mark" | grep -E 'disabled|enabled|routing epoch' | head -n 2)"; return 1; }
	links_up || { why "links after a second restore: $(links_summary)"; return 1; }
}

chk_bad_restore() {
	local out bad=$ETC/bad.json
	ctl_ok clear || return 1
	tree_empty || { why "tree not empty after clear"; return 1; }
	python3 - "$KNBDCTL_CONFIG" "$bad" <<'PY' || { why "cannot build the bad file"; return 1; }
import json, sys
doc = json.load(open(sys.argv[1]))
doc["nodes"]["m3"]["volumes"]["v3"]["attributes"]["block_size"] = "3"
json.dump(doc, open(sys.argv[2], "w"), indent=2)
PY
	out=$(ctl restore "$bad" 2>&1) && { why "restore of a bad file succeeded"; return 1; }
	[[ $out == *"$KNBD_CFS/nodes/m3/volumes/v3/block_size: Invalid argument"* ]] ||
		{ why "no path and reason: $out"; return 1; }
	[[ $out == *"rolled back"* ]] || { why "no word of the rollback: $out"; return 1; }
	tree_empty || { why "left behind: $(ls "$KNBD_CFS/nodes")"; return 1; }
}

# unit_line KEY: the command of a KEY= line of knbd.service, run from the
# repository (the guest has no /usr/sbin/knbdctl)
unit_line() {
	sed -n "s/^$1=//p" "$UNIT" | sed -e "s|/usr/sbin/knbdctl|$CTL|" \
		-e "s|/etc/knbd/config.json|$KNBDCTL_CONFIG|"
}

chk_service() {
	local start stop out
	start=$(unit_line ExecStart)
	stop=$(unit_line ExecStop)
	[ -n "$start" ] && [ -n "$stop" ] || { why "no ExecStart/ExecStop in $UNIT"; return 1; }
	knbd_unload || return 1
	# the boot's "modprobe knbd": the guest cannot install the module,
	# a modprobe on PATH inserts the build
	mkdir -p "$KNBD_TMP/ctl-bin"
	cat >"$KNBD_TMP/ctl-bin/modprobe" <<EOF
#!/bin/sh
[ "\$*" = knbd ] && exec insmod "$KNBD_KO"
exec /sbin/modprobe "\$@"
EOF
	chmod +x "$KNBD_TMP/ctl-bin/modprobe"
	out=$(PATH=$KNBD_TMP/ctl-bin:$PATH sh -c "$start" 2>&1) || { why "ExecStart ($start): $out"; return 1; }
	knbd_loaded || { why "ExecStart did not load knbd"; return 1; }
	dump_tree >"$KNBD_TMP/ctl-dump-after.txt"
	cmp -s "$DUMP0" "$KNBD_TMP/ctl-dump-after.txt" ||
		{ why "tree differs after ExecStart: $(diff "$DUMP0" "$KNBD_TMP/ctl-dump-after.txt" | head -n 4)"; return 1; }
	wait_until 60 links_up || { why "links after ExecStart: $(links_summary)"; return 1; }
	io_check 0 || return 1
	out=$(sh -c "$stop" 2>&1) || { why "ExecStop ($stop): $out"; return 1; }
	tree_empty || { why "ExecStop left: $(ls "$KNBD_CFS/nodes")"; return 1; }
	out=$(with_timeout 60 rmmod knbd 2>&1) || { why "rmmod after ExecStop: $out"; return 1; }
}

# top: a reader on v1 through m1 shows in the per-volume and per-connection lines
chk_top() {
	local out rpid
	nbd_attach "$DEV" v1 1 10841 -t 60 || return 1
	rm -f "$KNBD_TMP/ctl-stop"
	# 1 MiB in 4 KiB reads at a time, until told to stop
	(while [ ! -e "$KNBD_TMP/ctl-stop" ]; do
		dd if="$DEV" of=/dev/null bs=4k count=256 iflag=direct status=none || exit
	done) &
	rpid=$!
	out=$(ctl top --interval 1 --count 2 --csv --conns 2>&1)
	: >"$KNBD_TMP/ctl-stop"
	wait_until 60 pid_gone "$rpid" || { why "the reader does not stop"; kill "$rpid"; }
	wait "$rpid" 2>/dev/null
	nbd_detach "$DEV" || return 1
	echo "$out" >"$KNBD_OUT/knbdctl-top.csv"
	[ "$(echo "$out" | head -n 1)" = "time,kind,node,object,iops,mb_s,lat_us,load" ] ||
		{ why "top --csv header: $(echo "$out" | head -n 1)"; return 1; }
	echo "$out" | awk -F, '$2 == "volume" && $3 == "m1" && $4 == "v1" && $5 > 0 { f = 1 } END { exit !f }' ||
		{ why "no IOPS on m1/v1: $(echo "$out" | grep ',volume,m1,v1' | tr '\n' ' ')"; return 1; }
	echo "$out" | awk -F, '$2 == "node" && $3 == "m1" && $5 > 0 { f = 1 } END { exit !f }' ||
		{ why "no IOPS on node m1: $(echo "$out" | grep ',node,m1' | tr '\n' ' ')"; return 1; }
	echo "$out" | awk -F, '$2 == "conn" && $3 == "m1" && $4 ~ / v1$/ && $5 > 0 { f = 1 } END { exit !f }' ||
		{ why "no connection line for v1 on m1: $(echo "$out" | grep ',conn,' | head -n 3 | tr '\n' ' ')"; return 1; }
	[ "$(echo "$out" | awk -F, 'NF != 8' | wc -l)" = 0 ] || { why "top --csv lines without 8 fields"; return 1; }
}

t_run knbdctl.build chk_build
t_run knbdctl.show_json chk_show_json
t_run knbdctl.top chk_top
t_run knbdctl.save_clear_restore chk_save_clear_restore
t_run knbdctl.restore_idempotent chk_idempotent
t_run knbdctl.bad_restore_rolls_back chk_bad_restore
t_run knbdctl.service_boot chk_service
t_done
