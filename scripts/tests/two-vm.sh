#!/bin/bash
# Two knbd members in two QEMU VMs joined by a virtual Ethernet link (QEMU
# socket netdev over 127.0.0.1 on the host; addresses 192.0.2.1 and
# 192.0.2.2 inside the VMs), one partitioned volume striped over both; runs on
# the host, builds nothing (expects knbd.ko built: make).
#
# usage: scripts/tests/two-vm.sh [--out DIR] [--port PORT] [--size BYTES]
#            [--smp N] [--mem SIZE] [--timeout SECS] [--kernel PATH] [--module KO]
#
#   VM A: vm-run.sh --net listen:PORT,  guest script two_vm_guest.sh A (member 1)
#   VM B: vm-run.sh --net connect:PORT, guest script two_vm_guest.sh B (member 2)
#
# B writes and verifies the whole volume through its own member (half of it
# forwarded to A), reads it back; A then reads it back through its own member
# (half of it forwarded to B); both check the volume stats, the backing files
# and the teardown (see two_vm_guest.sh for the checks). The guests coordinate
# only over their virtual network, with timeouts.
#
# Output: one "PASS: two_vm_<check>" / "FAIL: two_vm_<check>: reason" line per
# check (the guests' checks, plus two_vm_vm_a / two_vm_vm_b: the VM ran its
# script to the end), then "N passed, N failed"; exit status 1 if anything
# failed, 2 on usage errors. OUT (default out/two-vm) holds vm-a.log and
# vm-b.log (the runners' streams) and a/, b/ (each VM's console.log,
# dmesg.txt, results.txt, fio JSON), and results.txt.
#
# Defaults: port = a free one picked by the kernel, size 256 MiB, --smp 1,
# --mem 1G, --timeout 500 per VM (guest budget 400 s); the module is copied
# to OUT first (both VMs load the same file even if knbd.ko is rebuilt
# meanwhile). Whatever breaks, the run ends within --timeout + ~60 s.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 2

usage() {
	sed -n '7,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

out=$REPO/out/two-vm port='' size=$((256 << 20)) smp=1 mem=1G timeout=500 kernel=''
module=${KNBD_MODULE:-$REPO/knbd.ko}
while [ $# -gt 0 ]; do
	case $1 in
	--out) out=${2:?}; shift 2 ;;
	--port) port=${2:?}; shift 2 ;;
	--size) size=${2:?}; shift 2 ;;
	--smp) smp=${2:?}; shift 2 ;;
	--mem) mem=${2:?}; shift 2 ;;
	--timeout) timeout=${2:?}; shift 2 ;;
	--kernel) kernel=${2:?}; shift 2 ;;
	--module) module=${2:?}; shift 2 ;;
	-h | --help) usage ;;
	*) echo "two-vm: unknown option $1" >&2; usage ;;
	esac
done
[[ $timeout =~ ^[0-9]+$ ]] && ((timeout >= 200)) || { echo "two-vm: --timeout must be >= 200" >&2; exit 2; }
[[ $size =~ ^[0-9]+$ ]] && ((size >= 4 << 20 && size % (2 << 20) == 0)) ||
	{ echo "two-vm: --size must be a multiple of 2 MiB (bytes)" >&2; exit 2; }

t0=$SECONDS
log() { printf '[two-vm %3ds] %s\n' $((SECONDS - t0)) "$*" >&2; }

mkdir -p "$out"
out=$(cd "$out" && pwd -P)
rm -rf "$out/a" "$out/b" "$out/vm-a.log" "$out/vm-b.log" "$out/results.txt"
mkdir -p "$out/a" "$out/b"
: >"$out/results.txt"

NP=0 NF=0
pass() { NP=$((NP + 1)); echo "PASS: $1" | tee -a "$out/results.txt"; }
fail() { NF=$((NF + 1)); echo "FAIL: $1: $2" | tee -a "$out/results.txt"; }

# checks each guest reports (two_vm_guest.sh), in order
CHECKS_A=(two_vm_net_a two_vm_group_up_a two_vm_readback_a two_vm_stats_a two_vm_backing_a two_vm_teardown_a)
CHECKS_B=(two_vm_net_b two_vm_group_up_b two_vm_write_b two_vm_readback_b two_vm_stats_b two_vm_backing_b two_vm_teardown_b)

finish() {
	echo "$NP passed, $NF failed"
	log "took $((SECONDS - t0)) s; logs in $out"
	exit $((NF > 0))
}

if [ ! -f "$module" ]; then
	fail two_vm_setup "$module missing (run make first)"
	finish
fi
cp "$module" "$out/knbd.ko"

# a free port on 127.0.0.1 (the listening QEMU binds it a moment later)
if [ -z "$port" ]; then
	port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') ||
		{ fail two_vm_setup "cannot pick a free port"; finish; }
fi

budget=$((timeout - 100))
vm_args=(--smp "$smp" --mem "$mem" --timeout "$timeout" --append "knbd.module=$out/knbd.ko")
[ -n "$kernel" ] && vm_args+=(--kernel "$kernel")
guest=(scripts/tests/two_vm_guest.sh)
gargs=(--size "$size" --budget "$budget")

pid_a='' pid_b=''
cleanup() {
	local p
	for p in $pid_a $pid_b; do
		kill -TERM "$p" 2>/dev/null # vm-run.sh kills its QEMU on TERM
	done
	for p in $pid_a $pid_b; do
		wait "$p" 2>/dev/null
	done
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT TERM HUP

listening() { ss -Hltn "sport = :$port" 2>/dev/null | grep -q "127\.0\.0\.1:$port\b"; }

if listening; then
	fail two_vm_setup "something already listens on 127.0.0.1:$port"
	finish
fi
log "VM A: listen 127.0.0.1:$port; VM B: connect; output in $out"
scripts/vm-run.sh --name A --net "listen:$port" --out "$out/a" "${vm_args[@]}" \
	-- "${guest[@]}" A "${gargs[@]}" >"$out/vm-a.log" 2>&1 &
pid_a=$!

# B's QEMU connects at start: wait for A's listener (A may be building the
# initramfs first)
for ((i = 0; i < 300; i++)); do
	listening && break
	kill -0 "$pid_a" 2>/dev/null || break
	sleep 0.2
done
if listening; then
	scripts/vm-run.sh --name B --net "connect:$port" --out "$out/b" "${vm_args[@]}" \
		-- "${guest[@]}" B "${gargs[@]}" >"$out/vm-b.log" 2>&1 &
	pid_b=$!
	log "VM B started"
else
	log "VM A never listened on 127.0.0.1:$port: not starting VM B"
fi

# each VM ends by itself within --timeout (+ ~20 s); the hard stop is a backstop
deadline=$((t0 + timeout + 60))
rc_a='' rc_b=''
while [ -n "$pid_a$pid_b" ]; do
	if [ -n "$pid_a" ] && ! kill -0 "$pid_a" 2>/dev/null; then
		wait "$pid_a"
		rc_a=$?
		pid_a=''
		log "VM A finished (status $rc_a)"
	fi
	if [ -n "$pid_b" ] && ! kill -0 "$pid_b" 2>/dev/null; then
		wait "$pid_b"
		rc_b=$?
		pid_b=''
		log "VM B finished (status $rc_b)"
	fi
	[ -n "$pid_a$pid_b" ] || break
	if [ "$SECONDS" -ge "$deadline" ]; then
		log "VMs still running $((timeout + 60)) s after the start: stopping them"
		cleanup
		pid_a='' pid_b=''
		break
	fi
	sleep 1
done

# vm_check NAME ROLE RC: the VM ran its guest script to the end
vm_check() {
	local name=$1 d=$out/$2 rc=$3
	if [ -f "$d/exit-status" ] && [ ! -f "$d/timed-out" ]; then
		pass "$name"
	elif [ -f "$d/timed-out" ]; then
		fail "$name" "guest script timed out (blocked tasks in $d/console.log)"
	elif [ -z "$rc" ]; then
		fail "$name" "VM never started or was stopped (see $out/vm-$2.log)"
	else
		fail "$name" "VM exited $rc without a result (crash or QEMU error): $(grep -a -E 'qemu-system|Kernel panic|BUG:|error' "$d/console.log" "$out/vm-$2.log" 2>/dev/null | head -n 1 | cut -c1-200)"
	fi
}

# report ROLE CHECK...: each check's line from the guest (FAIL if it has
# none), then any other check the guest reported
report() {
	local d=$out/$1 c line
	shift
	for c in "$@"; do
		line=$(grep -a -E "^(PASS|FAIL): $c(:|\$)" "$d/results.txt" 2>/dev/null | tail -n 1)
		case $line in
		"PASS: $c") pass "$c" ;;
		"FAIL: $c: "*) fail "$c" "${line#"FAIL: $c: "}" ;;
		*) fail "$c" "no result from VM ${d##*/} (see $d/console.log)" ;;
		esac
	done
	while IFS= read -r line; do
		c=${line#*: }
		c=${c%%:*}
		case " $* " in *" $c "*) continue ;; esac
		case $line in
		"PASS: "*) pass "$c" ;;
		*) fail "$c" "${line#"FAIL: $c: "}" ;;
		esac
	done < <(grep -a -E '^(PASS|FAIL): ' "$d/results.txt" 2>/dev/null)
}

vm_check two_vm_vm_a a "$rc_a"
vm_check two_vm_vm_b b "$rc_b"
report a "${CHECKS_A[@]}"
report b "${CHECKS_B[@]}"
finish
