#!/bin/bash
# knbd test runner: `make check` (and CI, through .ci/run) calls this.
#
# usage: scripts/check.sh [STAGE...]     stages: static kunit vm twovm debug (default: all;
#                                        KNBD_CHECK_DEBUG=0 leaves out debug)
#
# Every stage prints one line per test, "PASS: name" or "FAIL: name: why"; this script counts
# them and ends with the line "N passed, N failed". Exit status is 0 only if nothing failed
# and every stage ran. Logs of each stage go to $KNBD_LOGDIR (default out/check/).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 2
LOGDIR=${KNBD_LOGDIR:-$REPO/out/check}
CACHE=${KNBD_CACHE:-/var/cache/knbd}
export KNBD_CACHE=$CACHE
mkdir -p "$LOGDIR" "$CACHE"
RESULTS=$LOGDIR/results.txt
: >"$RESULTS"

stages=("$@")
if [ ${#stages[@]} -eq 0 ]; then
	stages=(static kunit vm twovm)
	[ "${KNBD_CHECK_DEBUG:-1}" = 0 ] || stages+=(debug)
fi

t0=$SECONDS
step() { printf '\n=== %s (%ds) ===\n' "$*" $((SECONDS - t0)); }
pass() { echo "PASS: $1" | tee -a "$RESULTS"; }
fail() { echo "FAIL: $1: $2" | tee -a "$RESULTS"; }
# Copy the PASS/FAIL lines of a stage's log into the results.
collect() { grep -a -E '^(PASS|FAIL): ' "$1" >>"$RESULTS" || true; }

step "dependencies"
if ! scripts/deps.sh; then
	fail deps "scripts/deps.sh failed"
fi

step "build knbd.ko, ip_vs_knbd.ko, tools"
if make -s modules >"$LOGDIR/build.log" 2>&1 && [ -f knbd.ko ] && [ -f ip_vs_knbd.ko ]; then
	pass build
else
	tail -30 "$LOGDIR/build.log"
	fail build "make failed, see $LOGDIR/build.log"
fi
if make -s tools >"$LOGDIR/build-tools.log" 2>&1 && [ -x tools/knbd-reconnect ]; then
	pass build.tools
else
	tail -30 "$LOGDIR/build-tools.log"
	fail build.tools "make tools failed, see $LOGDIR/build-tools.log"
fi
# the patched nbd.ko the VM tests load with nbd_use patched (test_nbdpatch.sh)
if make -s nbd-patched >"$LOGDIR/build-nbd-patched.log" 2>&1 && [ -f out/nbd-patched/nbd.ko ]; then
	pass build.nbd_patched
else
	tail -30 "$LOGDIR/build-nbd-patched.log"
	fail build.nbd_patched "make nbd-patched failed, see $LOGDIR/build-nbd-patched.log"
fi

# knbd-dkms and knbd-tools .debs (dpkg-buildpackage in a scratch copy); the VM's
# test_package.sh installs them (KNBD_DEBS, see run_vm_suite)
DEBS=$LOGDIR/deb
rm -rf "$DEBS"
if make -s deb DEB_OUT="$DEBS" DEB_BUILD="$LOGDIR/deb-build" >"$LOGDIR/build-deb.log" 2>&1 &&
	ls "$DEBS"/knbd-dkms_*_all.deb "$DEBS"/knbd-tools_*.deb >/dev/null 2>&1; then
	pass build.deb
	# the DKMS build of knbd-dkms (its dkms.conf, Debian's headers) here, not in the TCG guest
	if scripts/dkms-prebuild.sh "$DEBS" >"$LOGDIR/build-dkms.log" 2>&1; then
		pass build.dkms
	else
		tail -30 "$LOGDIR/build-dkms.log"
		fail build.dkms "scripts/dkms-prebuild.sh failed, see $LOGDIR/build-dkms.log"
	fi
else
	tail -30 "$LOGDIR/build-deb.log"
	fail build.deb "make deb failed, see $LOGDIR/build-deb.log"
fi

# checkpatch.pl and its data files come from the linux-source tarball (once, cached).
checkpatch_path() {
	local dir=$CACHE/checkpatch
	if [ ! -x "$dir/scripts/checkpatch.pl" ]; then
		mkdir -p "$dir"
		tar -C "$dir" --strip-components=1 -xJf /usr/src/linux-source-6.1.tar.xz \
			linux-source-6.1/scripts/checkpatch.pl linux-source-6.1/scripts/spelling.txt \
			linux-source-6.1/scripts/const_structs.checkpatch || return 1
	fi
	echo "$dir/scripts/checkpatch.pl"
}

stage_static() {
	local cp files
	step "static: checkpatch --strict"
	files=$(find drivers include -name '*.[ch]' | sort)
	if cp=$(checkpatch_path) &&
		perl "$cp" --no-tree --strict --terse --show-types -f $files >"$LOGDIR/checkpatch.log" 2>&1 &&
		! grep -q -E ': (ERROR|WARNING|CHECK):' "$LOGDIR/checkpatch.log"; then
		pass static.checkpatch
	else
		grep -E ': (ERROR|WARNING|CHECK):' "$LOGDIR/checkpatch.log" | head -20
		fail static.checkpatch "see $LOGDIR/checkpatch.log"
	fi

	step "static: sparse (make C=2)"
	if make -s C=2 modules >"$LOGDIR/sparse.log" 2>&1 &&
		! grep -E '(warning|error):' "$LOGDIR/sparse.log"; then
		pass static.sparse
	else
		fail static.sparse "see $LOGDIR/sparse.log"
	fi

	step "static: compiler warnings (W=1)"
	if make -s W=1 -B modules >"$LOGDIR/w1.log" 2>&1 &&
		! grep -E 'drivers/knbd/.*(warning|error):' "$LOGDIR/w1.log"; then
		pass static.w1
	else
		fail static.w1 "see $LOGDIR/w1.log"
	fi
	make -s modules >/dev/null 2>&1

	step "static: knbdctl unit tests (fake configfs tree)"
	if python3 scripts/tests/knbdctl_unit.py -v >"$LOGDIR/knbdctl-unit.log" 2>&1; then
		pass static.knbdctl_unit
	else
		tail -20 "$LOGDIR/knbdctl-unit.log"
		fail static.knbdctl_unit "see $LOGDIR/knbdctl-unit.log"
	fi

	step "static: checkpatch --strict on patches/nbd"
	# on stdin: checkpatch takes a file git tracks for a source file, not a patch
	if cp=$(checkpatch_path) &&
		(for p in patches/nbd/*.patch; do
			echo "== $p"
			perl "$cp" --no-tree --strict --terse --show-types - <"$p" || exit 1
		done) >"$LOGDIR/checkpatch-nbd.log" 2>&1 &&
		! grep -q -E ': (ERROR|WARNING|CHECK):' "$LOGDIR/checkpatch-nbd.log"; then
		pass static.nbd_patch_checkpatch
	else
		grep -E ': (ERROR|WARNING|CHECK):' "$LOGDIR/checkpatch-nbd.log" | head -20
		fail static.nbd_patch_checkpatch "see $LOGDIR/checkpatch-nbd.log"
	fi

	step "static: connection manager simulator (tools/cmsim, goals of issue 14)"
	if make -s -C tools/cmsim check O="$PWD/out/sim" >"$LOGDIR/cmsim.log" 2>&1; then
		pass static.cmsim
	else
		tail -25 "$LOGDIR/cmsim.log"
		fail static.cmsim "see $LOGDIR/cmsim.log"
	fi
}

stage_kunit() {
	local rc
	step "KUnit (UML)"
	scripts/kunit.sh >"$LOGDIR/kunit.log" 2>&1
	rc=$?
	grep -a -E '^(PASS|FAIL):|^kunit:' "$LOGDIR/kunit.log" | tail -3
	collect "$LOGDIR/kunit.log"
	if [ $rc -ne 0 ] && ! grep -q '^FAIL: ' "$LOGDIR/kunit.log"; then
		tail -30 "$LOGDIR/kunit.log"
		fail kunit.run "scripts/kunit.sh exited $rc"
	fi
	step "KUnit with KASAN + UBSAN"
	scripts/kunit.sh --sanitize >"$LOGDIR/kunit-san.log" 2>&1
	rc=$?
	grep -a -E '^kunit' "$LOGDIR/kunit-san.log" | tail -1
	collect "$LOGDIR/kunit-san.log"
	if [ $rc -ne 0 ] && ! grep -q '^FAIL: ' "$LOGDIR/kunit-san.log"; then
		tail -30 "$LOGDIR/kunit-san.log"
		fail kunit-san.run "scripts/kunit.sh --sanitize exited $rc"
	fi
}

# Run the guest test suite in a VM; $1 = label, rest = extra vm-run options.
run_vm_suite() {
	local label=$1 out rc
	local -a gargs=()
	shift
	[ -z "${KNBD_VM_CASES:-}" ] || gargs+=(--env "KNBD_CASES=$KNBD_VM_CASES")
	[ -z "${KNBD_VM_GROUP_MB:-}" ] || gargs+=(--env "KNBD_GROUP_MB=$KNBD_VM_GROUP_MB")
	[ ! -d "$DEBS" ] || gargs+=(--env "KNBD_DEBS=$DEBS")
	[ -z "${KNBD_PKG_GUEST_BUILD:-}" ] || gargs+=(--env "KNBD_PKG_GUEST_BUILD=$KNBD_PKG_GUEST_BUILD")
	local t
	for t in ${KNBD_VM_SKIP:-}; do gargs+=(--skip "$t"); done
	[ -z "${KNBD_NBD:-}" ] || gargs+=(--env "KNBD_NBD=$KNBD_NBD")
	out=$LOGDIR/vm-$label
	rm -rf "$out"
	mkdir -p "$out"
	scripts/vm-run.sh --smp 4 --mem 3G --timeout "${KNBD_VM_TIMEOUT:-4200}" --out "$out" "$@" \
		-- scripts/tests/guest-main.sh --limit "${KNBD_TEST_LIMIT:-1200}" "${gargs[@]}" ${KNBD_VM_TESTS:-} \
		>"$LOGDIR/vm-$label.log" 2>&1
	rc=$?
	grep -a -E '^(PASS|FAIL): ' "$out/results.txt" 2>/dev/null | sed "s/^\(PASS\|FAIL\): /\1: $label./" |
		tee -a "$RESULTS"
	# A failed test makes the run exit 1 and is counted above; a timeout (124) or
	# a crash leaves tests unrun, which must count even after an earlier FAIL.
	if [ $rc -eq 124 ] || { [ $rc -ne 0 ] && ! grep -q '^FAIL: ' "$out/results.txt" 2>/dev/null; }; then
		tail -40 "$LOGDIR/vm-$label.log"
		fail "$label.run" "VM run exited $rc, see $LOGDIR/vm-$label.log"
	fi
}

# KNBD_CHECK_VM_SPLIT=1 runs the self-contained files below in a second
# guest at the same time. Not the default: on 2 cores, next to the
# background KUnit and debug-kernel builds, two guests starved each other
# (dpkg -r past its 5 min, 600 connections not opened in time), while one
# guest does the whole suite in about 40 min. KNBD_VM_TESTS: only those.
VM2_TESTS="movable move_clients nbdpatch package knbdctl cfgbig"
stage_vm() {
	local pid2
	if [ -n "${KNBD_VM_TESTS:-}" ] || [ "${KNBD_CHECK_VM_SPLIT:-0}" = 0 ]; then
		step "integration tests in a VM (Debian kernel)"
		run_vm_suite vm
		return
	fi
	step "integration tests in two VMs at once (Debian kernel; second: $VM2_TESTS)"
	KNBD_VM_TESTS=$VM2_TESTS run_vm_suite vm2 &
	pid2=$!
	KNBD_VM_SKIP=$VM2_TESTS run_vm_suite vm
	wait "$pid2"
}

# Two VMs, one member each, joined by a QEMU socket network on 127.0.0.1.
stage_twovm() {
	local rc
	step "two VMs over a socket network"
	scripts/tests/two-vm.sh --out "$LOGDIR/two-vm" >"$LOGDIR/two-vm.log" 2>&1
	rc=$?
	collect "$LOGDIR/two-vm.log"
	tail -1 "$LOGDIR/two-vm.log"
	if [ $rc -ne 0 ] && ! grep -q '^FAIL: ' "$LOGDIR/two-vm.log"; then
		tail -30 "$LOGDIR/two-vm.log"
		fail two-vm.run "scripts/tests/two-vm.sh exited $rc"
	fi
}

stage_debug() {
	local kernel kdir
	step "debug kernel (KASAN, lockdep, kmemleak...)"
	if ! scripts/debug-kernel.sh >"$LOGDIR/debug-kernel-build.log" 2>&1; then
		tail -30 "$LOGDIR/debug-kernel-build.log"
		fail debug.build "scripts/debug-kernel.sh failed"
		return
	fi
	kernel=$(scripts/debug-kernel.sh --print-kernel)
	kdir=$(scripts/debug-kernel.sh --print-kdir)
	# Build knbd for the debug kernel in a scratch copy, not over the Debian build.
	rm -rf "$CACHE/knbd-debug-build"
	mkdir -p "$CACHE/knbd-debug-build"
	cp -r Kbuild drivers include "$CACHE/knbd-debug-build/"
	if make -C "$kdir" M="$CACHE/knbd-debug-build" modules >"$LOGDIR/debug-module.log" 2>&1; then
		pass debug.module-build
	else
		tail -20 "$LOGDIR/debug-module.log"
		fail debug.module-build "see $LOGDIR/debug-module.log"
		return
	fi
	# Under KASAN + lockdep + kmemleak + debugobjects a TCG guest runs the scenarios 5-12 times
	# slower than on Debian's kernel (test_configfs: 122 s -> 1181 s; a process start takes
	# ~0.5 s, data through a group moves at ~0.3 MB/s against 27 MB/s), so the debug run takes
	# the checks that drive the most kernel code per minute: every handshake/request error and
	# the fuzzer (proto), configfs parsing and teardown with clients attached, unload under I/O
	# and during a connection storm, and a 3-member group (forwarding, straddling requests, a
	# peer going away and back) on an 8 MiB volume. KNBD_DEBUG_TESTS / KNBD_DEBUG_CASES
	# (KNBD_DEBUG_CASES='.*' for all of their checks) widen it.
	# The bzImage is booted as is (KNBD_NO_PVH): the PVH entry of this allnoconfig-based,
	# non-relocatable kernel dies in QEMU before its first console line.
	local cases='proto_.*'
	cases+='|cfg_(load|defaults|node_bad_values|vol_bad_values|rmdir_vol_under_nbd_client'
	cases+='|node_disable_closes_clients|rmmod_in_use)'
	cases+='|unl_(under_load|connect_storm|final)'
	cases+='|group_(up|full_volume|straddle|straddle_stats|peer_down|teardown)'
	cases+='|auth_(up|member_ok|wrong_key|forged_load|peer_fuzz|teardown)|fault_.*'
	KNBD_VM_TESTS=${KNBD_DEBUG_TESTS:-"proto configfs unload group auth faults"} \
	KNBD_VM_CASES=${KNBD_DEBUG_CASES:-$cases} KNBD_VM_GROUP_MB=${KNBD_DEBUG_GROUP_MB:-8} \
	KNBD_MODULE=$CACHE/knbd-debug-build/knbd.ko KNBD_VM_TIMEOUT=${KNBD_DEBUG_VM_TIMEOUT:-2400} \
	KNBD_NO_PVH=1 \
		run_vm_suite debug --kernel "$kernel" --append "knbd.module=$CACHE/knbd-debug-build/knbd.ko"
}

# The KUnit builds and the debug kernel's are CPU work that needs no VM, while
# the VM stages spend much of their time waiting (timeouts, convergence, TCP
# backoff): with VM stages to run, they go in the background at nice 19,
# so they take the CPU the guests leave idle; KUnit's results are reported
# when it is done, and the debug stage waits for its kernel.
# KNBD_CHECK_OVERLAP=0 runs everything in order.
bg_pid=''
bg_out=$LOGDIR/background.out
want() { [[ " ${stages[*]} " == *" $1 "* ]]; }
if [ "${KNBD_CHECK_OVERLAP:-1}" != 0 ] && { want vm || want twovm; } && { want kunit || want debug; }; then
	(
		renice -n 19 -p "$BASHPID" >/dev/null 2>&1
		want kunit && stage_kunit
		if want debug; then
			step "debug kernel build (background)"
			scripts/debug-kernel.sh >"$LOGDIR/debug-kernel-build.log" 2>&1 ||
				echo "debug-kernel.sh failed (the debug stage builds again and reports)"
		fi
	) >"$bg_out" 2>&1 </dev/null &
	bg_pid=$!
	echo "KUnit and the debug kernel build run in the background (nice 19): $bg_out"
fi
bg_wait() {
	[ -n "$bg_pid" ] || return 0
	step "waiting for the background KUnit / debug kernel build"
	wait "$bg_pid"
	bg_pid=''
	cat "$bg_out"
}

for s in "${stages[@]}"; do
	case $s in
	kunit) [ -n "$bg_pid" ] || stage_kunit ;;
	debug) bg_wait; stage_debug ;;
	static | vm | twovm) "stage_$s" ;;
	*) fail "check.$s" "unknown stage" ;;
	esac
done
bg_wait

np=$(grep -c '^PASS: ' "$RESULTS")
nf=$(grep -c '^FAIL: ' "$RESULTS")
step "summary"
grep '^FAIL: ' "$RESULTS" || true
echo "results: $RESULTS (took $((SECONDS - t0))s)"
echo "$np passed, $nf failed"
[ "$nf" -eq 0 ] && [ "$np" -gt 0 ]
