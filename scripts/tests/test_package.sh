#!/bin/bash
# The Debian packages built on the host (make deb; scripts/check.sh passes
# their directory as KNBD_DEBS, default $KNBD_REPO/out/deb), installed in the
# guest as an admin would:
#   - /usr, /etc, /var/lib, /var/log, /var/cache made writable with overlays on
#     tmpfs (the guest root is the host's, read-only over 9p)
#   - dpkg -i knbd-dkms + knbd-tools: knbd-dkms's postinst gets both modules
#     into DKMS for the running kernel and installs them; dkms status says
#     installed. Compiling makes dpkg -i take 7 min in this TCG guest (more
#     with other VMs running; 96 s without), so by default it is done on the host by the
#     same DKMS with the package's dkms.conf (scripts/dkms-prebuild.sh, the
#     tarball KNBD_DEBS/knbd-VERSION.dkms.tar.gz) and the postinst loads that
#     (its "dkms ldtarball" path for prebuilt modules, then "dkms install");
#     KNBD_PKG_GUEST_BUILD=1, or no tarball, makes the postinst compile here
#     (timed in package-dpkg.log)
#   - modprobe knbd loads the DKMS build (updates/dkms, MODULE_VERSION =
#     VERSION); ipvsadm -s knbd makes the kernel load ip_vs_knbd by itself
#   - tools, units and man pages in place; knbd-reconnect --version / --help,
#     its nbdtab reading (--print-config, error paths); knbdctl --version
#   - dpkg -r: the modules leave DKMS and /lib/modules, the files are gone
#   - at the end the overlays go: later files see no trace of the packages
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

DEBS=${KNBD_DEBS:-$KNBD_REPO/out/deb}
VERSION=$(cat "$KNBD_REPO/VERSION")
KVER=$(uname -r)
OVL=/run/knbd-pkg
OVL_DIRS="usr etc var/lib var/log var/cache"
PLOG=$KNBD_OUT/package-dpkg.log
VIP=192.0.2.1:10809
MODPROBE_SAVED=''
mounted=()

cleanup() {
	ipvsadm -D -t "$VIP" >/dev/null 2>&1
	rmmod ip_vs_knbd >/dev/null 2>&1
	rmmod knbd >/dev/null 2>&1
	[ -z "$MODPROBE_SAVED" ] || echo "$MODPROBE_SAVED" >/proc/sys/kernel/modprobe
	MODPROBE_SAVED=''
	local i
	for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
		umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}"
	done
	mounted=()
	mountpoint -q "$OVL" && umount "$OVL"
	rm -rf "$OVL"
}
trap cleanup EXIT

# ------------------------------------------------------------------ checks --

chk_overlays() {
	local d u
	mkdir -p "$OVL"
	mountpoint -q "$OVL" || mount -t tmpfs -o mode=755 tmpfs "$OVL" || { why "tmpfs on $OVL"; return 1; }
	grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null
	for d in $OVL_DIRS; do
		u=$OVL/${d//\//_}
		mkdir -p "$u/upper" "$u/work"
		mount -t overlay -o "lowerdir=/$d,upperdir=$u/upper,workdir=$u/work" overlay "/$d" ||
			{ why "overlay on /$d failed"; return 1; }
		mounted+=("/$d")
	done
	touch /usr/lib/modules/.knbd-pkg-probe /etc/.knbd-pkg-probe /var/lib/dpkg/.knbd-pkg-probe ||
		{ why "overlays not writable"; return 1; }
	rm -f /usr/lib/modules/.knbd-pkg-probe /etc/.knbd-pkg-probe /var/lib/dpkg/.knbd-pkg-probe
	# no man-db index rebuild from dpkg's trigger (minutes under TCG)
	rm -f /var/lib/man-db/auto-update
}

chk_debs_present() {
	DKMS_DEB=$(ls "$DEBS"/knbd-dkms_"$VERSION"_all.deb 2>/dev/null)
	TOOLS_DEB=$(ls "$DEBS"/knbd-tools_"$VERSION"_*.deb 2>/dev/null | head -n 1)
	[ -n "$DKMS_DEB" ] && [ -n "$TOOLS_DEB" ] ||
		{ why "no knbd-dkms/knbd-tools $VERSION .debs in $DEBS (build them on the host: make deb)"; return 1; }
	log "    $DKMS_DEB, $TOOLS_DEB"
	! dkms status 2>/dev/null | grep -q '^knbd' || { why "knbd already in dkms status before install"; return 1; }
	! modinfo -n knbd >/dev/null 2>&1 || { why "a knbd module is already installed: $(modinfo -n knbd)"; return 1; }
}

chk_install() {
	local t0=$SECONDS rc tarball=$DEBS/knbd-$VERSION.dkms.tar.gz mode=build
	if [ "${KNBD_PKG_GUEST_BUILD:-0}" != 1 ] && [ -f "$tarball" ]; then
		# where knbd-dkms's postinst (dh_dkms) looks for prebuilt modules
		install -D -m 644 "$tarball" "/usr/share/knbd-dkms/knbd-$VERSION.dkms.tar.gz" ||
			{ why "cannot place $tarball"; return 1; }
		mode=prebuilt
	fi
	log "    DKMS: $([ $mode = prebuilt ] && echo "modules built on the host ($tarball)" || echo "compiling in the guest")"
	DEBIAN_FRONTEND=noninteractive with_timeout 900 dpkg -i "$DKMS_DEB" "$TOOLS_DEB" >"$PLOG" 2>&1
	rc=$?
	log "    dpkg -i (DKMS build for $KVER included): $((SECONDS - t0))s"
	echo "dpkg -i took $((SECONDS - t0))s" >>"$PLOG"
	[ "$rc" -eq 0 ] || { why "dpkg -i exited $rc: $(tail -n 5 "$PLOG" | tr '\n' ' ')"; return 1; }
	if [ $mode = prebuilt ]; then
		grep -q "Loading tarball for knbd-$VERSION" "$PLOG" || { why "postinst did not load the DKMS tarball"; return 1; }
		! grep -q "Building initial module" "$PLOG" || { why "postinst compiled although prebuilt"; return 1; }
	else
		grep -q "Building initial module for $KVER" "$PLOG" || { why "postinst did not build for $KVER"; return 1; }
	fi
	for p in knbd-dkms knbd-tools; do
		dpkg-query -W -f='${Status} ${Version}\n' "$p" 2>/dev/null | grep -qx "install ok installed $VERSION" ||
			{ why "$p: $(dpkg-query -W -f='${Status} ${Version}' "$p" 2>&1)"; return 1; }
	done
}

chk_dkms_status() {
	local st
	st=$(dkms status knbd 2>&1)
	log "    dkms status: $st"
	grep -Eq "^knbd/$VERSION, $KVER, [^:]+: installed" <<<"$st" || { why "dkms status: '$st'"; return 1; }
	[ -f "/usr/src/knbd-$VERSION/dkms.conf" ] || { why "no /usr/src/knbd-$VERSION/dkms.conf"; return 1; }
}

chk_modprobe() {
	local path v
	for m in knbd ip_vs_knbd; do
		path=$(modinfo -n "$m" 2>&1)
		[[ $path == /lib/modules/$KVER/updates/dkms/$m.ko* ]] || { why "modinfo -n $m: $path"; return 1; }
		v=$(modinfo -F version "$m" 2>&1)
		[ "$v" = "$VERSION" ] || { why "modinfo -F version $m: '$v', want $VERSION"; return 1; }
	done
	! knbd_loaded || { why "knbd loaded before modprobe"; return 1; }
	modprobe knbd || { why "modprobe knbd failed"; return 1; }
	knbd_loaded || { why "no /sys/module/knbd after modprobe"; return 1; }
	v=$(cat /sys/module/knbd/version 2>&1)
	[ "$v" = "$VERSION" ] || { why "/sys/module/knbd/version: '$v'"; return 1; }
	[ -d "$KNBD_CFS" ] || { why "no $KNBD_CFS after modprobe knbd"; return 1; }
}

# The kernel runs /sbin/modprobe of its own root for request_module(): in this
# VM that is the initramfs's busybox, which knows no modules. Point it at the
# guest root's kmod (as a real boot has it) for the autoload check.
modprobe_helper() {
	local r=/proc/1/root/newroot f=$OVL/modprobe
	[ "${KNBD_VM:-}" = 1 ] && [ -d "$r$OVL" ] || return 0
	printf '#!/bin/sh\nexec chroot /newroot /sbin/modprobe "$@"\n' >"$f"
	chmod 755 "$f"
	MODPROBE_SAVED=$(cat /proc/sys/kernel/modprobe)
	echo "/newroot$OVL/modprobe" >/proc/sys/kernel/modprobe
}

chk_ipvs_autoload() {
	local out
	[ ! -d /sys/module/ip_vs_knbd ] || { why "ip_vs_knbd loaded before ipvsadm"; return 1; }
	modprobe_helper
	modprobe ip_vs || { why "modprobe ip_vs failed"; return 1; }
	out=$(ipvsadm -A -t "$VIP" -s knbd 2>&1) || { why "ipvsadm -A -s knbd: $out"; return 1; }
	[ -d /sys/module/ip_vs_knbd ] || { why "ip_vs_knbd not loaded by ipvsadm -s knbd"; return 1; }
	out=$(ipvsadm -Ln -t "$VIP" 2>&1)
	grep -q "$VIP knbd" <<<"$out" || { why "ipvsadm -Ln: $out"; return 1; }
	[ "$(cat /sys/module/ip_vs_knbd/version 2>&1)" = "$VERSION" ] ||
		{ why "ip_vs_knbd version: $(cat /sys/module/ip_vs_knbd/version 2>&1)"; return 1; }
	ipvsadm -D -t "$VIP" || { why "ipvsadm -D"; return 1; }
	rmmod ip_vs_knbd || { why "rmmod ip_vs_knbd"; return 1; }
	rmmod knbd || { why "rmmod knbd"; return 1; }
}

chk_files() {
	local f m u
	for f in /usr/sbin/knbd-reconnect /lib/systemd/system/knbd-reconnect@.service \
		/usr/share/man/man8/knbd-reconnect.8.gz; do
		[ -e "$f" ] || { why "missing $f"; return 1; }
	done
	# every man page and unit of the tree
	for m in "$KNBD_REPO"/Documentation/man/*.[58]; do
		[ -e "$m" ] || continue
		f=/usr/share/man/man${m##*.}/${m##*/}.gz
		[ -e "$f" ] || { why "missing $f"; return 1; }
		zcat "$f" | grep -q '^\.TH ' || { why "$f: no .TH"; return 1; }
	done
	for u in "$KNBD_REPO"/systemd/*.service; do
		[ -e "/lib/systemd/system/${u##*/}" ] || { why "missing /lib/systemd/system/${u##*/}"; return 1; }
	done
	grep -q '^ExecStart=/usr/sbin/knbd-reconnect --device %i --nbdtab' \
		/lib/systemd/system/knbd-reconnect@.service || { why "knbd-reconnect@.service ExecStart"; return 1; }
	grep -q '^Restart=on-failure' /lib/systemd/system/knbd-reconnect@.service ||
		{ why "knbd-reconnect@.service: no Restart=on-failure"; return 1; }
	[ "$(cat /usr/share/knbd/VERSION 2>&1)" = "$VERSION" ] ||
		{ why "/usr/share/knbd/VERSION: $(cat /usr/share/knbd/VERSION 2>&1)"; return 1; }
}

chk_reconnect_cli() {
	local out
	out=$(/usr/sbin/knbd-reconnect --version 2>&1) || { why "--version failed: $out"; return 1; }
	[ "$out" = "knbd-reconnect $VERSION" ] || { why "--version: '$out'"; return 1; }
	out=$(/usr/sbin/knbd-reconnect -V 2>&1)
	[ "$out" = "knbd-reconnect $VERSION" ] || { why "-V: '$out'"; return 1; }
	out=$(/usr/sbin/knbd-reconnect --help 2>&1) || { why "--help failed"; return 1; }
	for o in --device --host --port --export --nbdtab --nbdtab-file --dead-timeout \
		--startup-reconnect --exit-on-disconnect --backend --check --print-config --version; do
		grep -q -- "$o" <<<"$out" || { why "--help does not mention $o"; return 1; }
	done
	out=$(/usr/sbin/knbd-reconnect --no-such-option 2>&1) && { why "unknown option accepted"; return 1; }
	return 0
}

# expect_cfg ARGS... -- LINE...: --print-config output holds each LINE
expect_cfg() {
	local args=() out l
	while [ "$1" != -- ]; do args+=("$1"); shift; done
	shift
	out=$(/usr/sbin/knbd-reconnect "${args[@]}" --print-config 2>&1) ||
		{ why "knbd-reconnect ${args[*]} --print-config failed: $out"; return 1; }
	for l in "$@"; do
		grep -qx -- "$l" <<<"$out" || { why "${args[*]}: no '$l' in: $(tr '\n' '|' <<<"$out")"; return 1; }
	done
}

# expect_err ARGS... -- REGEX: exit status 2 and stderr matching REGEX
expect_err() {
	local args=() out rc
	while [ "$1" != -- ]; do args+=("$1"); shift; done
	out=$(/usr/sbin/knbd-reconnect "${args[@]}" --print-config 2>&1)
	rc=$?
	[ "$rc" -eq 2 ] || { why "${args[*]}: exit $rc, want 2 ($out)"; return 1; }
	grep -Eq -- "$2" <<<"$out" || { why "${args[*]}: '$out' does not match '$2'"; return 1; }
}

chk_nbdtab() {
	local t=$KNBD_TMP/nbdtab
	cat >"$t" <<-'EOF'
	# device host export options
	nbd1 192.0.2.9 other
	   # an indented comment
	/dev/nbd0	192.0.2.10   vol0   conns=4,timeout=10,port=10900 # after
	nbd2 h2 e2 unix
	nbd3 h3 e3 port=65536
	nbd4 h4
	nbd5 h5 e5 persist junk
	nbd6 h6 e6 certfile=/x.pem
	nbd0 192.0.2.99 second-entry-not-used
	EOF
	expect_cfg -d nbd0 -f "$t" -- "device nbd0" "host 192.0.2.10" "port 10900" "export vol0" || return 1
	expect_cfg --device /dev/nbd1 --nbdtab-file "$t" -- "host 192.0.2.9" "port 10809" "export other" || return 1
	# the command line wins over the entry
	expect_cfg -d 0 -f "$t" -p 11000 -N x -H h -- "host h" "port 11000" "export x" || return 1
	expect_err -d 2 -f "$t" -- "$t:5: option 'unix' is not supported" || return 1
	expect_err -d 3 -f "$t" -- "$t:6: bad port" || return 1
	expect_err -d 4 -f "$t" -- "$t:7: nbd4: want" || return 1
	expect_err -d 5 -f "$t" -- "$t:8: unexpected 'junk'" || return 1
	expect_err -d 6 -f "$t" -- "$t:9: option 'certfile' is not supported" || return 1
	expect_err -d 7 -f "$t" -- "no entry for nbd7" || return 1
	expect_err -d 0 -f "$KNBD_TMP/no-such-nbdtab" -- "No such file" || return 1
	expect_err --nbdtab -- "needs -d" || return 1
	# without -H and -f: the system's /etc/nbdtab (writable overlay here)
	printf 'nbd9 192.0.2.77 sysvol port=10811\n' >/etc/nbdtab
	expect_cfg -d nbd9 -- "host 192.0.2.77" "port 10811" "export sysvol" "nbdtab /etc/nbdtab" || return 1
	rm -f /etc/nbdtab
}

chk_knbdctl() {
	local out
	[ -x /usr/sbin/knbdctl ] || { why "tools/knbdctl exists but the package has no /usr/sbin/knbdctl"; return 1; }
	out=$(/usr/sbin/knbdctl --version 2>&1) || { why "knbdctl --version failed: $out"; return 1; }
	grep -qw -- "$VERSION" <<<"$out" || { why "knbdctl --version: '$out', want $VERSION"; return 1; }
}

# The admin's path with the installed files only: a three-member group made
# with /usr/sbin/knbdctl, "knbdctl save" to /etc/knbd/config.json, a simulated
# reboot (everything cleared, knbd unloaded), then the ExecStart line of the
# installed knbd.service (modprobe loads the DKMS build), and its ExecStop.
PKEY=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff

pkg_links_up() {
	/usr/sbin/knbdctl show --json 2>/dev/null | python3 -c '
import json, sys
doc = json.load(sys.stdin)
nodes = doc["nodes"]
ok = sorted(nodes) == ["p1", "p2", "p3"] and all(
    n["live"]["peer_auth"] == "hmac-sha256" and len(n["peers"]) == 2 and
    all(p["live"]["state"].get("state") == "up" for p in n["peers"].values())
    for n in nodes.values())
sys.exit(0 if ok else 1)'
}

unit_line() { sed -n "s/^$1=//p" /lib/systemd/system/knbd.service; }

chk_admin_boot() {
	local i j rt start stop before after out
	modprobe knbd || { why "modprobe knbd"; return 1; }
	ip link set lo up
	rt=$(/usr/sbin/knbdctl group plan --members 1,2,3 --size 12M --extent-size 64K) ||
		{ why "group plan"; return 1; }
	for i in 1 2 3; do
		: >"$KNBD_TMP/pkg-p$i.img"
		out=$(/usr/sbin/knbdctl create node "p$i" node_id="$i" group_id=9 listen_addr=127.0.0.1 \
			listen_port=$((10860 + i)) peer_port=$((10870 + i)) group_key="$PKEY" 2>&1) ||
			{ why "create node p$i: $out"; return 1; }
		for j in 1 2 3; do
			[ "$i" = "$j" ] && continue
			out=$(/usr/sbin/knbdctl create peer "p$i/p$j" addr=127.0.0.1 port=$((10870 + j)) \
				node_id="$j" 2>&1) || { why "create peer p$i/p$j: $out"; return 1; }
		done
		out=$(/usr/sbin/knbdctl create volume "p$i/gv" backing_path="$KNBD_TMP/pkg-p$i.img" \
			size=12M extent_size=64K routing="$rt" enable=1 2>&1) || { why "create volume p$i/gv: $out"; return 1; }
		out=$(/usr/sbin/knbdctl set "p$i" enable=1 2>&1) || { why "enable p$i: $out"; return 1; }
	done
	wait_until 60 pkg_links_up || { why "member links not up after knbdctl create"; return 1; }
	out=$(/usr/sbin/knbdctl save 2>&1) || { why "knbdctl save: $out"; return 1; }
	[ "$(stat -c %a /etc/knbd/config.json 2>&1)" = 600 ] || { why "/etc/knbd/config.json mode: $(stat -c %a /etc/knbd/config.json 2>&1)"; return 1; }
	before=$(/usr/sbin/knbdctl save - 2>&1) || { why "save -: $before"; return 1; }
	grep -q "$PKEY" /etc/knbd/config.json || { why "the group key is not in the saved file"; return 1; }
	# the reboot: nothing configured, no module
	out=$(/usr/sbin/knbdctl clear 2>&1) || { why "knbdctl clear: $out"; return 1; }
	rmmod knbd || { why "rmmod knbd after clear"; return 1; }
	start=$(unit_line ExecStart) stop=$(unit_line ExecStop)
	[ -n "$start" ] && [ -n "$stop" ] || { why "no ExecStart/ExecStop in the installed knbd.service"; return 1; }
	# shellcheck disable=SC2086
	out=$($start 2>&1) || { why "ExecStart ($start): $out"; return 1; }
	[ "$(cat /sys/module/knbd/version 2>&1)" = "$VERSION" ] || { why "restore loaded knbd $(cat /sys/module/knbd/version 2>&1)"; return 1; }
	wait_until 60 pkg_links_up || { why "member links not up after the restore at boot"; return 1; }
	after=$(/usr/sbin/knbdctl save - 2>&1) || { why "save - after restore: $after"; return 1; }
	[ "$before" = "$after" ] || { why "restored configuration differs: $(diff <(echo "$before") <(echo "$after") | head -n 5 | tr '\n' ' ')"; return 1; }
	# shellcheck disable=SC2086
	out=$($stop 2>&1) || { why "ExecStop ($stop): $out"; return 1; }
	[ -z "$(ls -A "$KNBD_CFS/nodes" 2>/dev/null)" ] || { why "nodes left after ExecStop: $(ls "$KNBD_CFS/nodes")"; return 1; }
	rmmod knbd || { why "rmmod knbd after ExecStop"; return 1; }
}

chk_remove() {
	local st rc
	DEBIAN_FRONTEND=noninteractive with_timeout 300 dpkg -r knbd-tools knbd-dkms >>"$PLOG" 2>&1
	rc=$?
	[ "$rc" -eq 0 ] || { why "dpkg -r exited $rc: $(tail -n 5 "$PLOG" | tr '\n' ' ')"; return 1; }
	st=$(dkms status knbd 2>&1)
	[ -z "$st" ] || { why "dkms status after dpkg -r: '$st'"; return 1; }
	! modinfo -n knbd >/dev/null 2>&1 || { why "knbd still installed: $(modinfo -n knbd)"; return 1; }
	! modinfo -n ip_vs_knbd >/dev/null 2>&1 || { why "ip_vs_knbd still installed"; return 1; }
	for f in /usr/sbin/knbd-reconnect /usr/src/knbd-"$VERSION" /lib/systemd/system/knbd-reconnect@.service \
		/usr/share/man/man8/knbd-reconnect.8.gz /usr/share/knbd/VERSION \
		"/lib/modules/$KVER/updates/dkms/knbd.ko"; do
		[ ! -e "$f" ] || { why "$f left after dpkg -r"; return 1; }
	done
}

chk_restored() {
	cleanup
	for d in $OVL_DIRS; do
		! mountpoint -q "/$d" || { why "/$d still mounted"; return 1; }
	done
	! modinfo -n knbd >/dev/null 2>&1 || { why "a knbd module is visible after the overlays went: $(modinfo -n knbd)"; return 1; }
	[ ! -e /usr/sbin/knbd-reconnect ] || { why "/usr/sbin/knbd-reconnect visible"; return 1; }
	[ "$(cat /proc/sys/kernel/modprobe)" != "/newroot$OVL/modprobe" ] || { why "kernel modprobe path not restored"; return 1; }
}

t_run package_overlays chk_overlays
[ "${#mounted[@]}" -gt 0 ] && t_run package_debs_present chk_debs_present
if [ -n "${DKMS_DEB:-}" ] && [ -n "${TOOLS_DEB:-}" ]; then
	t_run package_install chk_install
	t_run package_dkms_status chk_dkms_status
	t_run package_modprobe chk_modprobe
	t_run package_ipvs_autoload chk_ipvs_autoload
	t_run package_files chk_files
	t_run package_reconnect_cli chk_reconnect_cli
	t_run package_reconnect_nbdtab chk_nbdtab
	if [ -e "$KNBD_REPO/tools/knbdctl" ]; then
		t_run package_knbdctl_version chk_knbdctl
		t_run package_admin_boot chk_admin_boot
	else
		log "=== package_knbdctl_version: no tools/knbdctl in this tree, not run"
	fi
	t_run package_remove chk_remove
fi
t_run package_guest_restored chk_restored
t_done
