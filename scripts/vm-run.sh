#!/bin/bash
# Run a bash script inside a throw-away QEMU VM (TCG) that boots a Debian
# kernel with the host root filesystem shared read-only over 9p.
#
# usage: scripts/vm-run.sh [--kernel PATH] [--kver VER] [--smp N] [--mem SIZE]
#            [--timeout SECS] [--out DIR] [--append "extra cmdline"]
#            [--net listen:PORT|connect:PORT [--mac MAC]] [--name NAME]
#            -- GUEST_SCRIPT [ARGS...]
#
# In the guest, "bash GUEST_SCRIPT ARGS..." runs as root in the directory this
# runner was called from, with
#   PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
#   KNBD_OUT=/run/knbd-out   writable share = the --out DIR on the host
#   KNBD_KVER=$(uname -r)    KNBD_VM=1
#   KNBD_VM_NAME=NAME        (with --name)
#   KNBD_NET_MAC=MAC         (with --net: the NIC's MAC address, to find it)
# stdin is /dev/null; stdout/stderr go to the serial console, which is
# streamed to this runner's stdout and saved (CRs stripped) in OUT/console.log.
# Afterwards OUT holds: exit-status, dmesg.txt, console.log (and timed-out if
# the guest-side watchdog fired). The host root is read-only in the guest;
# /run, /dev/shm, /tmp and /var/tmp are private and writable (/tmp and
# /var/tmp are overlays that still show the host's files underneath).
#
# Exit status: the guest script's status; 124 on timeout; 125 if the VM
# crashed/panicked or could not run the script (no exit-status written);
# 2 on usage errors.
#
# Timeout: a guest-side watchdog fires somewhat before --timeout (guest
# uptime), writes OUT/timed-out, dumps blocked tasks (sysrq w) and CPU
# backtraces (sysrq l) to the console, saves dmesg.txt and powers off; the host
# then allows it up to 10 s more. Otherwise the host kills QEMU at --timeout.
#
# Machine: q35, TCG (multi-threaded), no NIC unless --net, virtio-rng, 9p shares "hostroot"
# (/, read-only, cache=loose in the guest) and "knbdout" (OUT). The kernel
# cmdline is "console=ttyS0 quiet panic=-1 no_timer_check" + --append; a panic
# reboots, which ends QEMU (-no-reboot). The console log level is raised to 7
# before the script runs, so kernel WARN/BUG/oops and pr_info lines show up.
#
# Network (--net): one virtio-net NIC on a QEMU socket netdev, a point-to-point
# Ethernet link between two VMs over a TCP connection on the host's loopback:
# "listen:PORT" listens on 127.0.0.1:PORT, "connect:PORT" connects to it (this
# runner waits up to 60 s for the listener, so start the listening VM first;
# frames sent before the other side is there are lost). The MAC is --mac, by
# default 52:54:00:PP:PP:01 (listen) or :02 (connect), PP:PP the port in hex,
# so the two ends differ. The guest has virtio_net loaded (from the initramfs)
# but configures nothing: no address, link down; the kernel names the NIC
# (eth0 without udev), so find it by $KNBD_NET_MAC. Only 127.0.0.1 is used on
# the host; the guest side is whatever the guest script makes of it.
# --name NAME: QEMU's -name knbd-vm-NAME, "vm-run[NAME]:" messages and a
# "[NAME] " prefix on the streamed console lines (not in console.log), for
# running two VMs side by side.
#
# Cache (${KNBD_CACHE:-/var/cache/knbd}): initramfs-VER.cpio.gz (busybox-static,
# scripts/vm/init, the virtio/9p/virtio-net/overlay/configfs modules of VER) and the
# uncompressed vmlinux extracted from the bzImage, which QEMU boots through the
# PVH entry (skips ~10 s of in-guest xz decompression under TCG; note: no
# KASLR then). Both are rebuilt automatically when their inputs change.
# Environment: KNBD_CACHE, KNBD_NO_PVH=1 (boot the bzImage as is),
# KNBD_QEMU_ARGS (extra QEMU arguments, whitespace-split), TMPDIR.
set -euo pipefail

prog=vm-run
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
init_src=$here/vm/init

usage() {
	sed -n '5,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}
msg() { echo "$prog: $*" >&2; }
die() {
	msg "error: $*"
	exit 2
}

kernel='' kver='' smp=2 mem=2G timeout=600 out='' append='' net='' mac='' name=''
while [ $# -gt 0 ]; do
	case $1 in
	--kernel) kernel=${2:?}; shift 2 ;;
	--kver) kver=${2:?}; shift 2 ;;
	--smp) smp=${2:?}; shift 2 ;;
	--mem) mem=${2:?}; shift 2 ;;
	--timeout) timeout=${2:?}; shift 2 ;;
	--out) out=${2:?}; shift 2 ;;
	--append) append=${2?}; shift 2 ;;
	--net) net=${2:?}; shift 2 ;;
	--mac) mac=${2:?}; shift 2 ;;
	--name) name=${2:?}; shift 2 ;;
	--kernel=* | --kver=* | --smp=* | --mem=* | --timeout=* | --out=* | --append=* | \
		--net=* | --mac=* | --name=*)
		set -- "${1%%=*}" "${1#*=}" "${@:2}" ;;
	--) shift; break ;;
	-h | --help) usage ;;
	*) msg "unknown option: $1"; usage ;;
	esac
done
[ $# -ge 1 ] || usage
[[ $smp =~ ^[1-9][0-9]*$ ]] || die "--smp must be a positive integer"
[[ $timeout =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive integer (seconds)"
[[ $mem =~ ^[1-9][0-9]*[KMGT]?$ ]] || die "--mem must look like 2G or 2048M"
if [ -n "$name" ]; then
	[[ $name =~ ^[A-Za-z0-9_.-]+$ ]] || die "--name may only use letters, digits, '_', '.', '-'"
	prog="vm-run[$name]"
fi
net_mode='' net_port=''
if [ -n "$net" ]; then
	if ! [[ $net =~ ^(listen|connect):([1-9][0-9]{0,4})$ ]] || ((BASH_REMATCH[2] > 65535)); then
		die "--net must be listen:PORT or connect:PORT (1..65535, on 127.0.0.1)"
	fi
	net_mode=${BASH_REMATCH[1]} net_port=${BASH_REMATCH[2]}
	if [ -z "$mac" ]; then
		mac=$(printf '52:54:00:%02x:%02x:%02x' $((net_port >> 8)) $((net_port & 255)) \
			"$([ "$net_mode" = listen ] && echo 1 || echo 2)")
	fi
	mac=${mac,,}
	[[ $mac =~ ^[0-9a-f][02468ace](:[0-9a-f]{2}){5}$ ]] || die "--mac must be a unicast MAC like 52:54:00:12:34:56"
elif [ -n "$mac" ]; then
	die "--mac needs --net"
fi

qemu=$(command -v qemu-system-x86_64) || die "qemu-system-x86_64 not found (run scripts/deps.sh)"
busybox=/bin/busybox
[ -x "$busybox" ] || die "$busybox not found (install busybox-static)"
[ -f "$init_src" ] || die "missing $init_src"

# Version string embedded in a bzImage (setup header field kernel_version).
bzimage_version() {
	local img=$1 off
	[ "$(dd if="$img" bs=1 skip=514 count=4 2>/dev/null)" = HdrS ] || return 1
	off=$(od -An -tu2 -j526 -N2 "$img" | tr -d ' ')
	[[ $off =~ ^[0-9]+$ ]] && [ "$off" -gt 0 ] || return 1
	dd if="$img" bs=1 skip=$((off + 512)) count=256 2>/dev/null |
		tr '\0' '\n' | head -n 1 | cut -d' ' -f1
}

# --- kernel / kver -----------------------------------------------------------
if [ -z "$kver" ]; then
	if [ -n "$kernel" ]; then
		# custom kernel: use its own version (its module dir may not exist)
		kver=$(bzimage_version "$kernel" || true)
		[ -n "$kver" ] || kver=custom
	else
		while read -r v; do
			[ -f "/boot/vmlinuz-$v" ] && kver=$v
		done < <(find /lib/modules -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null | sort -V)
		[ -n "$kver" ] || die "no /lib/modules/VER with a matching /boot/vmlinuz-VER (install linux-image-amd64)"
	fi
fi
[[ $kver =~ ^[A-Za-z0-9._+~-]+$ ]] || die "odd kernel version '$kver'"
kernel=${kernel:-/boot/vmlinuz-$kver}
[ -r "$kernel" ] || die "cannot read kernel $kernel"

# --- output dir --------------------------------------------------------------
if [ -n "$out" ]; then
	mkdir -p -- "$out"
	out=$(cd -- "$out" && pwd -P)
else
	out=$(mktemp -d "${TMPDIR:-/tmp}/knbd-vm.XXXXXX")
fi
msg "output dir: $out"
rm -rf -- "$out/.vm-run"
rm -f -- "$out/exit-status" "$out/timed-out" "$out/dmesg.txt" "$out/console.log"
mkdir "$out/.vm-run"

# --- initramfs (cached) ------------------------------------------------------
cache=${KNBD_CACHE:-/var/cache/knbd}
if ! mkdir -p "$cache" 2>/dev/null || [ ! -w "$cache" ]; then
	cache=${XDG_CACHE_HOME:-$HOME/.cache}/knbd
	mkdir -p "$cache"
fi
initrd=$cache/initramfs-$kver.cpio.gz

modules=()
if [ -d "/lib/modules/$kver" ]; then
	mapfile -t modules < <(modprobe -a -S "$kver" --show-depends \
		virtio_pci 9pnet_virtio 9p virtio_rng virtio_net overlay configfs 2>/dev/null |
		awk '$1 == "insmod" && !seen[$2]++ { print $2 }')
fi

# Rebuild when the init, the module list (or the module files), busybox or this
# runner change.
key=$({
	echo "kver=$kver"
	cat "$init_src" "${BASH_SOURCE[0]}" | sha256sum
	stat -L -c '%n %s %Y' "$busybox" "${modules[@]}"
} | sha256sum | cut -d' ' -f1)

build_initrd() {
	local stage i m base
	stage=$(mktemp -d "${TMPDIR:-/tmp}/knbd-initramfs.XXXXXX")
	mkdir -p "$stage"/{bin,dev,proc,sys,newroot,modules}
	cp "$busybox" "$stage/bin/busybox"
	ln -s busybox "$stage/bin/sh"
	install -m 755 "$init_src" "$stage/init"
	mknod "$stage/dev/console" c 5 1 2>/dev/null || true
	: >"$stage/modules/order"
	for m in "${modules[@]}"; do
		base=$(basename "$m")
		case $base in
		*.ko) cp "$m" "$stage/modules/$base" ;;
		*.ko.xz) base=${base%.xz}; xz -dc "$m" >"$stage/modules/$base" ;;
		*.ko.zst) base=${base%.zst}; zstd -qdc "$m" >"$stage/modules/$base" ;;
		*.ko.gz) base=${base%.gz}; gzip -dc "$m" >"$stage/modules/$base" ;;
		*) msg "warning: skipping module $m"; continue ;;
		esac
		echo "$base" >>"$stage/modules/order"
	done
	i=$initrd.tmp.$$.$RANDOM
	(cd "$stage" && find . -print0 | LC_ALL=C sort -z |
		cpio --null -o -H newc -R 0:0 --quiet) | gzip -6 >"$i"
	mv -f "$i" "$initrd"
	echo "$key" >"$i.key"
	mv -f "$i.key" "$initrd.key"
	rm -rf "$stage"
}

if [ ! -f "$initrd" ] || [ "$(cat "$initrd.key" 2>/dev/null)" != "$key" ]; then
	exec {lockfd}>"$cache/.lock-$kver"
	flock "$lockfd"
	if [ ! -f "$initrd" ] || [ "$(cat "$initrd.key" 2>/dev/null)" != "$key" ]; then
		msg "building $initrd (${#modules[@]} modules)"
		build_initrd
	fi
	exec {lockfd}>&-
fi

# --- kernel image for QEMU ----------------------------------------------------
# QEMU boots an uncompressed vmlinux through its PVH entry point, which skips
# the bzImage self-decompression (xz under TCG: ~10 s of a ~15 s boot). Extract
# it once into the cache (keyed by the kernel file); fall back to the bzImage
# when that is impossible. KNBD_NO_PVH=1 boots the image as given.
has_pvh_note() { readelf -nW "$1" 2>/dev/null | grep -Eq 'Xen.*(0x0*12\)|PHYS32_ENTRY)'; }
is_elf() { [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ]; }

extract_vmlinux() { # BZIMAGE DEST: first embedded payload that is a PVH ELF
	local img=$1 dst=$2 magic dec pos
	for magic in '\xfd7zXZ\x00:xz -dc --single-stream' '\x28\xb5\x2f\xfd:zstd -qdc' \
		'\x1f\x8b\x08:gzip -dc'; do
		dec=${magic#*:}
		command -v "${dec%% *}" >/dev/null || continue
		while read -r pos; do
			# shellcheck disable=SC2086  # $dec is a command line
			tail -c "+$((pos + 1))" "$img" | ${dec} >"$dst" 2>/dev/null || true
			if is_elf "$dst" && has_pvh_note "$dst"; then
				return 0
			fi
		done < <(LC_ALL=C grep -aboP "${magic%%:*}" "$img" | head -n 3 | cut -d: -f1)
	done
	rm -f "$dst"
	return 1
}

boot_kernel=$kernel
if [ -n "${KNBD_NO_PVH:-}" ] || ! command -v readelf >/dev/null; then
	:
elif is_elf "$kernel"; then
	has_pvh_note "$kernel" || msg "warning: $kernel is an ELF without a PVH note; QEMU will likely refuse it"
else
	kkey=$(stat -L -c '%s %Y %i' "$kernel" | cat - <(readlink -f "$kernel") | sha256sum | cut -c1-12)
	vmlinux=$cache/vmlinux-$kver-$kkey
	if [ ! -f "$vmlinux" ] && [ ! -f "$vmlinux.nopvh" ]; then
		exec {lockfd}>"$cache/.lock-$kver"
		flock "$lockfd"
		if [ ! -f "$vmlinux" ] && [ ! -f "$vmlinux.nopvh" ]; then
			msg "extracting vmlinux from $kernel for PVH boot"
			tmpv=$vmlinux.tmp.$$.$RANDOM
			if extract_vmlinux "$kernel" "$tmpv"; then
				mv -f "$tmpv" "$vmlinux"
			else
				msg "note: no PVH-bootable vmlinux inside $kernel; booting it as is"
				: >"$vmlinux.nopvh"
			fi
			# drop images of older builds for this kver (QEMU reads its kernel at start-up)
			find "$cache" -maxdepth 1 -name "vmlinux-$kver-*" ! -name "vmlinux-$kver-$kkey*" \
				-mmin +10 -delete 2>/dev/null || true
		fi
		exec {lockfd}>&-
	fi
	[ -f "$vmlinux" ] && boot_kernel=$vmlinux
fi

# --- guest command -----------------------------------------------------------
# The script and its args travel through the results share, quoted for bash.
cwd=$(pwd -P)
{
	echo "# generated by scripts/vm-run.sh"
	[ -z "$name" ] || printf 'export KNBD_VM_NAME=%q\n' "$name"
	[ -z "$net" ] || printf 'export KNBD_NET_MAC=%q\n' "$mac"
	printf 'cd -- %q || { echo "vm-run (guest): cannot cd to %q" >&2; exit 126; }\n' "$cwd" "$cwd"
	printf 'exec bash --'
	printf ' %q' "$@"
	printf '\n'
} >"$out/.vm-run/cmd.sh"

# Guest-side watchdog (guest uptime seconds): fires a little before the host
# kills QEMU, so blocked-task dumps and dmesg.txt still reach OUT.
# Guest uptime lags host time by the firmware/boot start-up (a few seconds
# under load), and the dump + dmesg + power-off need a few more.
margin=$((timeout / 10))
((margin >= 8)) || margin=8
((margin <= 30)) || margin=30
deadline=0
((timeout < 2 * margin)) || deadline=$((timeout - margin))
grace=10 # extra host wait once the guest watchdog has reported (see below)
echo "$deadline" >"$out/.vm-run/deadline"

# --- run ---------------------------------------------------------------------
priv=$(mktemp -d "${TMPDIR:-/tmp}/knbd-vm-run.XXXXXX")
fifo=$priv/console
mkfifo "$fifo"

qpid='' spid='' tpid=''
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
	local p
	for p in $spid $qpid; do
		kill "$p" 2>/dev/null || true
	done
	if [ -n "$qpid" ]; then
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			kill -0 "$qpid" 2>/dev/null || break
			sleep 0.5
		done
		kill -KILL "$qpid" 2>/dev/null || true
	fi
	if [ -n "$tpid" ]; then
		# a reader still blocked opening the fifo gets EOF after this
		: <>"$fifo" 2>/dev/null || true
		wait "$tpid" 2>/dev/null || true
	fi
	rm -rf "$priv"
}
trap cleanup EXIT
trap 'msg "interrupted"; exit 130' INT
trap 'msg "terminated"; exit 143' TERM HUP

# --net: one virtio-net NIC on a socket netdev (127.0.0.1 only). QEMU's
# connect= fails at once without a listener: wait for it (without connecting:
# the listening QEMU takes the first connection as its peer).
net_args=()
if [ -n "$net" ]; then
	net_args=(-netdev "socket,id=n0,$net_mode=127.0.0.1:$net_port"
		-device "virtio-net-pci,netdev=n0,mac=$mac")
	if [ "$net_mode" = connect ] && command -v ss >/dev/null; then
		for ((i = 0; i < 300; i++)); do
			ss -Hltn "sport = :$net_port" 2>/dev/null | grep -q "127\.0\.0\.1:$net_port\b" && break
			sleep 0.2
		done
		((i < 300)) || msg "warning: nothing listens on 127.0.0.1:$net_port after 60 s; QEMU will likely fail to connect"
	fi
	msg "NIC: virtio-net $mac, socket $net_mode 127.0.0.1:$net_port"
fi

# console -> (strip CR) -> console.log + our stdout, live
# (also drop the firmware's terminal reset/clear sequences; with --name, the
# streamed lines get a "[NAME] " prefix, console.log does not)
console_filter() {
	sed -u 's/\r$//; s/\x1bc//g; s/\x1b\[?7l//g; s/\x1b\[2J//g; s/\x1b\[0m//g' | tee -p "$out/console.log"
}
if [ -n "$name" ]; then
	(console_filter | sed -u "s/^/[$name] /") <"$fifo" &
else
	console_filter <"$fifo" &
fi
tpid=$!

# KNBD_QEMU_ARGS: extra QEMU arguments (split on whitespace), for experiments
read -ra qemu_extra <<<"${KNBD_QEMU_ARGS:-}"
cmdline="console=ttyS0 quiet panic=-1 no_timer_check${append:+ $append}"
start=$SECONDS
"$qemu" -name "knbd-vm${name:+-$name}" \
	-machine q35 -accel tcg,thread=multi -smp "$smp" -m "$mem" \
	-nographic -no-reboot -nic none "${net_args[@]}" \
	-kernel "$boot_kernel" -initrd "$initrd" -append "$cmdline" \
	-object rng-random,id=rng0,filename=/dev/urandom \
	-device virtio-rng-pci,rng=rng0 \
	-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
	-virtfs "local,path=${out//,/,,},mount_tag=knbdout,security_model=none" \
	"${qemu_extra[@]}" </dev/null >"$fifo" 2>&1 &
qpid=$!

sleep "$timeout" &
spid=$!

finished=''
wait -n -p finished "$qpid" "$spid" || true
if [ "$finished" = "$qpid" ]; then
	wait "$qpid" && qrc=0 || qrc=$?
	kill "$spid" 2>/dev/null || true
	wait "$spid" 2>/dev/null || true
	qpid='' spid=''
	timed_out=''
else
	spid=''
	timed_out=1
	if [ -f "$out/timed-out" ]; then
		# the guest watchdog fired and is saving dmesg: give it a short grace
		msg "TIMEOUT: guest watchdog is wrapping up; waiting up to ${grace}s more"
		for ((i = 0; i < grace * 5; i++)); do
			kill -0 "$qpid" 2>/dev/null || break
			sleep 0.2
		done
	fi
	kill -0 "$qpid" 2>/dev/null && msg "TIMEOUT: no result after ${timeout}s; killing QEMU (pid $qpid)"
	kill "$qpid" 2>/dev/null || true
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		kill -0 "$qpid" 2>/dev/null || break
		sleep 0.5
	done
	kill -KILL "$qpid" 2>/dev/null || true
	wait "$qpid" 2>/dev/null || true
	qpid=''
	qrc=''
fi
wait "$tpid" || true
tpid=''
elapsed=$((SECONDS - start))

if [ -f "$out/exit-status" ]; then
	st=$(cat "$out/exit-status")
	if [[ $st =~ ^[0-9]+$ ]]; then
		msg "guest script exit status $st (${elapsed}s); results in $out"
		exit "$st"
	fi
	msg "garbled exit-status file: '$st'"
fi
if [ -n "$timed_out" ] || [ -f "$out/timed-out" ]; then
	if [ -f "$out/timed-out" ]; then
		msg "TIMEOUT: guest script did not finish within --timeout $timeout" \
			"(guest watchdog fired; blocked-task dump in console.log, dmesg in $out/dmesg.txt)"
	else
		msg "TIMEOUT: VM killed after ${timeout}s (script unfinished, guest watchdog did not report; boot too slow or guest wedged); console in $out/console.log"
	fi
	exit 124
fi
if [ "${qrc:-0}" -ne 0 ]; then
	msg "QEMU failed (exit $qrc) after ${elapsed}s"
else
	msg "VM crashed/panicked or lost the script (no exit-status) after ${elapsed}s"
fi
msg "last 30 console lines ($out/console.log):"
tail -n 30 "$out/console.log" >&2 || true
exit 125
