#!/bin/bash
# Build (once, cached) a DEBUG kernel from Debian's linux-source-6.1 for catching bugs in knbd:
# KASAN, lockdep, kmemleak, debugobjects, UBSAN... with everything the test VM needs built in
# (virtio, 9p, configfs, nbd, IPVS, veth, bridge, netns), so it boots without an initramfs module.
#
# Usage: scripts/debug-kernel.sh [--force] [--config-only]   build if needed, print a summary
#        scripts/debug-kernel.sh --print-kernel   path of the bzImage   (fails if not built)
#        scripts/debug-kernel.sh --print-kdir     kernel tree for out-of-tree modules:
#                                                 make -C "$(scripts/debug-kernel.sh --print-kdir)" M=$PWD modules
#        scripts/debug-kernel.sh --print-release  its `uname -r`
#        scripts/debug-kernel.sh --status         built/stale/missing
#
# Cache: ${KNBD_CACHE:-/var/cache/knbd}/debug-kernel/ holds its own copy of the source tree
# (linux-source-6.1/, built in place), build.log and a stamp. The stamp is a hash of RECIPE,
# the option lines of scripts/debug-kernel.config (not its comments), the source tarball and
# the compiler: when they are unchanged a re-run does nothing; any other change means a full
# rebuild (configure() passes through allnoconfig, which touches every option, so make
# recompiles nearly everything). A cold build takes 15 min on 2 cores (bookworm gcc 12, -j2).
# Config: x86_64 allnoconfig + kvm_guest.config + scripts/debug-kernel.config, then olddefconfig;
# every option the fragment sets (and the REQUIRED list below) is checked in the final .config.
# Env: KNBD_CACHE, KNBD_JOBS (default nproc), KNBD_LINUX_TARBALL.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT="$SCRIPT_DIR/$(basename "${BASH_SOURCE[0]}")"
FRAGMENT="$SCRIPT_DIR/debug-kernel.config"
TARBALL=${KNBD_LINUX_TARBALL:-/usr/src/linux-source-6.1.tar.xz}
CACHE=${KNBD_CACHE:-/var/cache/knbd}/debug-kernel
TREE="$CACHE/linux-source-6.1"
STAMP="$CACHE/stamp"
LOG="$CACHE/build.log"
KERNEL="$TREE/arch/x86/boot/bzImage"
JOBS=${KNBD_JOBS:-$(nproc)}
# How the .config is made (configure() below); change it when configure() changes, so that
# cached kernels are rebuilt. Other edits of this script leave the cache alone.
RECIPE="x86_64 allnoconfig + kvm_guest.config + fragment, olddefconfig, make all"

# Must be =y whatever the fragment says (olddefconfig silently drops options with unmet deps).
REQUIRED="VIRTIO_PCI VIRTIO_CONSOLE HW_RANDOM HW_RANDOM_VIRTIO NET_9P NET_9P_VIRTIO 9P_FS 9P_FS_POSIX_ACL
  CONFIGFS_FS OVERLAY_FS BLK_DEV_NBD BLK_DEV_LOOP DEVTMPFS DEVTMPFS_MOUNT TMPFS NET_NS VETH BRIDGE
  NETFILTER IP_VS IP_VS_RR IP_VS_LC IP_VS_PROTO_TCP IPV6 MODULES MODULE_UNLOAD KALLSYMS
  BLK_DEV_INITRD AIO FILE_LOCKING SERIAL_8250_CONSOLE DEBUG_FS
  KASAN KASAN_GENERIC KASAN_INLINE PROVE_LOCKING PROVE_RCU DEBUG_ATOMIC_SLEEP
  DEBUG_KMEMLEAK DEBUG_OBJECTS DEBUG_OBJECTS_WORK DEBUG_OBJECTS_TIMERS DEBUG_OBJECTS_RCU_HEAD
  DEBUG_OBJECTS_FREE DEBUG_LIST UBSAN"
# Must not be set: what made the first debug kernel wait ~98 s for regulatory.db, and slow stuff.
FORBIDDEN="CFG80211 MAC80211 WLAN SOUND DRM USB_SUPPORT KASAN_OUTLINE DEBUG_KMEMLEAK_DEFAULT_OFF"

die() { echo "debug-kernel: ERROR: $*" >&2; exit 1; }
log() { echo "debug-kernel: $*" >&2; }

# The lines of the fragment that mean something (see its header); comments may change freely.
fragment_options() { grep -E '^(CONFIG_[A-Za-z0-9_]+=|# CONFIG_[A-Za-z0-9_]+ is not set$)' "$FRAGMENT"; }

stamp_hash() {
	{
		echo "$RECIPE"
		fragment_options | sha256sum | cut -d' ' -f1
		stat -c '%n %s %Y' "$TARBALL"
		gcc --version | head -1
	} | sha256sum | cut -d' ' -f1
}

built() { [ -f "$KERNEL" ] && [ -f "$TREE/Module.symvers" ] && [ -f "$TREE/.config" ]; }

release() { cat "$TREE/include/config/kernel.release"; }

print_path() { # what, path
	if ! built; then
		log "not built yet: run $SCRIPT"
		exit 1
	fi
	[ "$(cat "$STAMP" 2>/dev/null)" = "$(stamp_hash)" ] ||
		log "warning: $1 is stale (recipe or fragment changed since the build): run $SCRIPT"
	echo "$2"
}

extract() {
	[ -f "$TREE/Makefile" ] && return 0
	[ -f "$TARBALL" ] || die "$TARBALL missing: run scripts/deps.sh (package linux-source-6.1)"
	log "extracting $TARBALL"
	local t0=$SECONDS tmp
	tmp=$(mktemp -d "$CACHE/extract.XXXXXX")
	tar -C "$tmp" -xf "$TARBALL"
	[ -f "$tmp/linux-source-6.1/Makefile" ] || die "unexpected tarball layout in $TARBALL"
	rm -rf "$TREE"
	mv "$tmp/linux-source-6.1" "$TREE"
	rmdir "$tmp"
	log "extracted in $((SECONDS - t0)) s"
}

# allnoconfig + kvm_guest.config + fragment, olddefconfig; then verify.
configure() {
	log "configuring (x86_64 allnoconfig + kvm_guest.config + $(basename "$FRAGMENT"))"
	make -C "$TREE" -s ARCH=x86_64 allnoconfig >>"$LOG" 2>&1
	make -C "$TREE" -s ARCH=x86_64 kvm_guest.config >>"$LOG" 2>&1
	(cd "$TREE" && scripts/kconfig/merge_config.sh -m .config "$FRAGMENT") >>"$LOG" 2>&1
	make -C "$TREE" -s ARCH=x86_64 olddefconfig >>"$LOG" 2>&1
	verify_config
}

verify_config() {
	local cfg="$TREE/.config" bad=0 line sym want got
	# Everything the fragment asks for must have survived olddefconfig.
	while IFS= read -r line; do
		case "$line" in
		CONFIG_*=*)
			sym=${line%%=*}
			want=${line#*=}
			got=$(grep -E "^$sym=" "$cfg" | cut -d= -f2- || true)
			if [ "$got" != "$want" ]; then
				echo "debug-kernel: config: $sym=${got:-<not set>}, fragment wants $want" >&2
				bad=1
			fi
			;;
		"# CONFIG_"*" is not set")
			sym=${line#"# "}
			sym=${sym%" is not set"}
			if grep -qE "^$sym=[ym]$" "$cfg"; then
				echo "debug-kernel: config: $sym is set, fragment wants it off" >&2
				bad=1
			fi
			;;
		esac
	done <"$FRAGMENT"
	for sym in $REQUIRED; do
		grep -qx "CONFIG_$sym=y" "$cfg" || {
			echo "debug-kernel: config: required CONFIG_$sym=y missing" >&2
			bad=1
		}
	done
	for sym in $FORBIDDEN; do
		if grep -qE "^CONFIG_$sym=[ym]$" "$cfg"; then
			echo "debug-kernel: config: CONFIG_$sym must not be set" >&2
			bad=1
		fi
	done
	[ "$bad" = 0 ] || die "the generated .config ($cfg) lacks required options (see above)"
	log "config verified ($(grep -c '=y$' "$cfg") options =y)"
}

build() {
	local force=$1 config_only=$2 hash t0
	mkdir -p "$CACHE"
	hash=$(stamp_hash)
	if [ "$force" = 0 ] && [ "$config_only" = 0 ] && built &&
		[ "$(cat "$STAMP" 2>/dev/null)" = "$hash" ]; then
		log "up to date: $KERNEL ($(release))"
		return 0
	fi
	t0=$SECONDS
	: >"$LOG"
	extract
	rm -f "$STAMP"
	configure
	[ "$config_only" = 1 ] && return 0
	log "building bzImage + modules with -j$JOBS (log: $LOG; a cold build takes ~15 min on 2 cores)"
	# `all` = vmlinux + bzImage + modules: leaves Module.symvers and the prepared tree that
	# out-of-tree modules (make -C TREE M=... modules) need.
	if ! make -C "$TREE" ARCH=x86_64 -j"$JOBS" all >>"$LOG" 2>&1; then
		tail -n 40 "$LOG" >&2
		die "kernel build failed (full log: $LOG)"
	fi
	built || die "build finished but $KERNEL or Module.symvers is missing"
	cp "$TREE/.config" "$CACHE/config"
	echo "$hash" >"$STAMP"
	local dt=$((SECONDS - t0))
	log "built $(release) in $((dt / 60)) min $((dt % 60)) s"
}

main() {
	local force=0 config_only=0
	case "${1:-}" in
	--print-kernel) print_path kernel "$KERNEL"; return ;;
	--print-kdir) print_path kdir "$TREE"; return ;;
	--print-release) print_path release "$(release 2>/dev/null)"; return ;;
	--status)
		if ! built; then echo missing
		elif [ "$(cat "$STAMP" 2>/dev/null)" = "$(stamp_hash)" ]; then echo "built $(release)"
		else echo stale
		fi
		return
		;;
	--force) force=1 ;;
	--config-only) config_only=1 ;;
	"") ;;
	-h | --help) sed -n '2,/^set -e/p' "$SCRIPT" | sed '$d; s/^# \{0,1\}//'; return ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
	[ -f "$FRAGMENT" ] || die "$FRAGMENT missing"
	mkdir -p "$CACHE"
	# One builder at a time; readers (--print-*) do not take the lock.
	exec 9>"$CACHE/.lock"
	flock -n 9 || { log "another build is running; waiting"; flock 9; }
	build "$force" "$config_only"
	[ "$config_only" = 1 ] && { log "configured: $TREE/.config"; return; }
	echo "kernel:  $KERNEL"
	echo "kdir:    $TREE   (make -C $TREE M=\$PWD modules)"
	echo "release: $(release)"
}

main "$@"
