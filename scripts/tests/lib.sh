# shellcheck shell=bash
# Helpers for the knbd integration tests that run inside the VM guest
# (scripts/vm-run.sh -- scripts/tests/guest-main.sh).  Source it; it does not
# change shell options of the caller.
#
# Results: every check ends in exactly one line "PASS: name" or
# "FAIL: name: reason", printed and appended to $KNBD_OUT/results.txt.
#
# Writing a check:
#   chk_foo() {
#       ... || { why "what went wrong"; return 1; }
#   }
#   t_run foo chk_foo args...
# t_run also fails the check when dmesg gained a kernel problem report
# (BUG/WARNING/Oops/KASAN/lockdep/hung task...) while it ran.

KNBD_TESTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KNBD_REPO=${KNBD_REPO:-$(cd "$KNBD_TESTS_DIR/../.." && pwd)}
# the module: $KNBD_KO, $KNBD_MODULE, "knbd.module=PATH" on the kernel command
# line (scripts/check.sh passes a debug build that way), else the repo's knbd.ko
if [ -z "${KNBD_KO:-}" ]; then
	KNBD_KO=${KNBD_MODULE:-}
	[ -n "$KNBD_KO" ] || KNBD_KO=$(tr ' ' '\n' </proc/cmdline 2>/dev/null | sed -n 's/^knbd\.module=//p' | tail -n 1)
	[ -n "$KNBD_KO" ] || KNBD_KO=$KNBD_REPO/knbd.ko
fi
KNBD_OUT=${KNBD_OUT:-/tmp/knbd-out}
KNBD_CFS=${KNBD_CFS:-/sys/kernel/config/knbd}
KNBD_TMP=${KNBD_TMP:-/run/knbd-test}	# tmpfs in the guest
KNBD_RESULTS=${KNBD_RESULTS:-$KNBD_OUT/results.txt}
KNBD_PORT=${KNBD_PORT:-10809}
mkdir -p "$KNBD_OUT" "$KNBD_TMP"
# the repo is read-only in the guest: keep compiled Python on tmpfs
export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-/run/knbd-pycache}

T_NFAIL=${T_NFAIL:-0}
T_NPASS=${T_NPASS:-0}
T_WHY=''

# ---------------------------------------------------------------- reporting --

log() { printf '[%(%T)T] %s\n' -1 "$*" >&2; }	# no date(1): a process start costs ~0.5 s on a debug kernel

t_pass() {
	T_NPASS=$((T_NPASS + 1))
	echo "PASS: $1"
	echo "PASS: $1" >>"$KNBD_RESULTS"
}

t_fail() {
	local name=$1
	shift
	T_NFAIL=$((T_NFAIL + 1))
	# one line per result, whatever the reason looks like
	local r
	r=$(printf '%s' "$*" | tr '\n' ' ' | cut -c1-600)
	echo "FAIL: $name: $r"
	echo "FAIL: $name: $r" >>"$KNBD_RESULTS"
}

# why REASON: record the failure reason of the running check (use with return 1)
why() { T_WHY="$*"; log "  -> $*"; }

# t_run NAME CMD...: run a check function in this shell, report PASS/FAIL.
# KNBD_CASES (an extended regex for the whole name) restricts a run to the
# checks it names, e.g. the debug-kernel run (scripts/check.sh stage_debug):
# the others are neither run nor counted.
t_run() {
	local name=$1 rc=0 mark bad t0=$SECONDS
	shift
	if [ -n "${KNBD_CASES:-}" ] && ! [[ $name =~ ^($KNBD_CASES)$ ]]; then
		log "=== $name: not in KNBD_CASES, not run"
		return 0
	fi
	T_WHY=''
	log "=== $name"
	kmsg_mark_set "$name"
	mark=$KMSG_MARK
	"$@" || rc=$?
	bad=$(dmesg_bad_since "$mark")
	if [ -n "$bad" ]; then
		t_fail "$name" "kernel problem in dmesg: $bad${T_WHY:+ (check: $T_WHY)}"
		dmesg_since "$mark" >"$KNBD_OUT/dmesg-$name.txt" 2>&1
	elif [ "$rc" -ne 0 ]; then
		t_fail "$name" "${T_WHY:-returned $rc}"
		dmesg_since "$mark" >"$KNBD_OUT/dmesg-$name.txt" 2>&1
	else
		t_pass "$name"
	fi
	log "    ($name: $((SECONDS - t0))s)"
	return 0
}

# Summary for a test file; exit status 1 if any check of this shell failed.
t_done() {
	log "$(basename "$0"): $T_NPASS passed, $T_NFAIL failed"
	[ "$T_NFAIL" -eq 0 ]
}

# --------------------------------------------------------------------- dmesg --

KNBD_BAD_RE='BUG:|WARNING:|Oops|general protection|refcount_t|KASAN|UBSAN|lockdep|possible circular locking|possible recursive locking|INFO: task .* blocked|blocked for more than|soft lockup|hard LOCKUP|rcu_sched detected stall|rcu: INFO:|detected stalls|list_add corruption|list_del corruption|Kernel panic|kernel BUG|invalid opcode|unable to handle|stack-protector|double fault|usercopy'

_kmsg_seq=0
# kmsg_mark_set NAME: put a unique marker into the kernel log, in $KMSG_MARK
kmsg_mark_set() {
	_kmsg_seq=$((_kmsg_seq + 1))
	KMSG_MARK="knbd-test-mark-$BASHPID-$_kmsg_seq-$RANDOM$RANDOM-${1//[^A-Za-z0-9_.-]/_}"
	echo "$KMSG_MARK" >/dev/kmsg 2>/dev/null || true
}

# kmsg_mark NAME: the same, printed (for mark=$(kmsg_mark NAME))
kmsg_mark() {
	kmsg_mark_set "$1"
	echo "$KMSG_MARK"
}

# dmesg_since MARK: kernel log lines after the marker (the whole log if the
# marker is gone, e.g. the ring buffer wrapped)
dmesg_since() {
	dmesg 2>/dev/null | awk -v m="$1" '
		m != "" && index($0, m) { found = 1; n = 0; next }
		{ all[n++] = $0 }
		END { for (i = 0; i < n; i++) print all[i] }'
}

# dmesg_bad_since MARK: first lines that look like a kernel problem report
dmesg_bad_since() {
	dmesg_since "$1" | grep -E "$KNBD_BAD_RE" | head -n 5 | tr '\n' '|'
}

# dmesg_has_since MARK REGEX: did the kernel log a line matching REGEX?
dmesg_has_since() {
	dmesg_since "$1" | grep -Eq "$2"
}

# ----------------------------------------------------------------- waiting --

# _nap SECS: sleep without forking (read -t on a pipe nobody writes to);
# process start-up is expensive in the TCG guest
_nap() {
	if [ -z "${_KNBD_NAP_FD:-}" ]; then
		# braces: a redirection on exec itself would apply to the shell for good
		{ exec {_KNBD_NAP_FD}<> <(:); } 2>/dev/null || _KNBD_NAP_FD=none
	fi
	if [ "$_KNBD_NAP_FD" != none ]; then
		read -r -t "$1" -u "$_KNBD_NAP_FD" _ 2>/dev/null
	else
		sleep "$1"
	fi
	return 0
}

# with_timeout SECS CMD...: run CMD (a program or a shell function), kill it
# (and, for programs, its process group) after SECS; returns its status or 124.
# Never blocks on a process stuck in the kernel: it gives up on it.
with_timeout() {
	local secs=$1 pid rc deadline is_fn=0
	shift
	if [ "$(type -t "$1")" = function ]; then
		is_fn=1
		("$@") &
	else
		setsid "$@" &
	fi
	pid=$!
	deadline=$((SECONDS + secs))
	while kill -0 "$pid" 2>/dev/null; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			log "with_timeout: '$*' still running after ${secs}s: killing it"
			if [ "$is_fn" -eq 0 ]; then
				kill -TERM -- "-$pid" 2>/dev/null
			fi
			kill -TERM "$pid" 2>/dev/null
			sleep 1
			if [ "$is_fn" -eq 0 ]; then
				kill -KILL -- "-$pid" 2>/dev/null
			fi
			kill -KILL "$pid" 2>/dev/null
			# reap it if it goes away quickly; a D-state process is abandoned
			for _ in 1 2 3 4 5 6 7 8 9 10; do
				kill -0 "$pid" 2>/dev/null || break
				_nap 0.2
			done
			kill -0 "$pid" 2>/dev/null || wait "$pid" 2>/dev/null
			return 124
		fi
		_nap 0.1
	done
	wait "$pid"
	rc=$?
	return "$rc"
}

pid_gone() { ! kill -0 "$1" 2>/dev/null; }

# wait_until_sh SECS 'SHELL CONDITION': like wait_until, the condition
# re-evaluated (with its $(...) expansions) at every poll
wait_until_sh() {
	local secs=$1
	shift
	wait_until "$secs" eval "$1"
}

# wait_until SECS CMD...: poll CMD (every 0.2 s) until it succeeds; 1 on timeout
wait_until() {
	local secs=$1 deadline
	shift
	deadline=$((SECONDS + secs))
	while :; do
		"$@" && return 0
		[ "$SECONDS" -lt "$deadline" ] || return 1
		_nap 0.2
	done
}

# ------------------------------------------------------------------ configfs --

# errno_name MESSAGE: the errno name of a strerror() text found in MESSAGE
errno_name() {
	case $1 in
	*"Device or resource busy"*) echo EBUSY ;;
	*"Invalid argument"*) echo EINVAL ;;
	*"No such file or directory"*) echo ENOENT ;;
	*"Operation not permitted"*) echo EPERM ;;
	*"Permission denied"*) echo EACCES ;;
	*"File exists"*) echo EEXIST ;;
	*"Directory not empty"*) echo ENOTEMPTY ;;
	*"Numerical result out of range"*) echo ERANGE ;;
	*"Address already in use"*) echo EADDRINUSE ;;
	*"Cannot assign requested address"*) echo EADDRNOTAVAIL ;;
	*"No space left on device"*) echo ENOSPC ;;
	*"File too large"*) echo EFBIG ;;
	*"Not a directory"*) echo ENOTDIR ;;
	*"Is a directory"*) echo EISDIR ;;
	*"No such device"*) echo ENODEV ;;
	*"Value too large"*) echo EOVERFLOW ;;
	*"Read-only file system"*) echo EROFS ;;
	*"Input/output error"*) echo EIO ;;
	*"Operation not supported"*) echo EOPNOTSUPP ;;
	*"Required key not available"*) echo ENOKEY ;;
	*) echo "E?($1)" ;;
	esac
}

# cfs_try FILE VALUE: write VALUE (with a newline, as echo does) to a configfs
# attribute; prints OK or the errno name (EBUSY, EINVAL, ...). Always returns 0.
cfs_try() {
	local f=$1 v=$2 out
	if [ ! -e "$f" ]; then
		echo "NOFILE"
		return 0
	fi
	local ef=$KNBD_TMP/.cfs_err.$BASHPID
	if { printf '%s\n' "$v" >"$f"; } 2>"$ef"; then
		echo OK
	else
		out=''
		IFS= read -r -d '' out <"$ef"
		errno_name "$out"
	fi
	rm -f "$ef"
}

# cfs_set FILE VALUE: write or fail (with why)
cfs_set() {
	local r
	r=$(cfs_try "$1" "$2")
	[ "$r" = OK ] && return 0
	why "write '$2' > $1: $r"
	return 1
}

cfs_get() {
	local x=''
	IFS= read -r -d '' x <"$1" 2>/dev/null
	printf '%s' "${x%$'\n'}"
}

knbd_node_dir() { echo "$KNBD_CFS/nodes/$1"; }
knbd_vol_dir() { echo "$KNBD_CFS/nodes/$1/volumes/$2"; }

# knbd_node_create NODE [PORT] [ADDR] [MAX_CONNECTIONS]  (not enabled)
knbd_node_create() {
	local n=$1 port=${2:-$KNBD_PORT} addr=${3:-127.0.0.1} maxc=${4:-}
	local d
	d=$(knbd_node_dir "$n")
	mkdir "$d" || { why "mkdir $d failed"; return 1; }
	[ -d "$d/volumes" ] || { why "$d/volumes missing after mkdir"; return 1; }
	cfs_set "$d/listen_addr" "$addr" || return 1
	cfs_set "$d/listen_port" "$port" || return 1
	if [ -n "$maxc" ]; then
		cfs_set "$d/max_connections" "$maxc" || return 1
	fi
	# member links are not what these tests exercise: no peer listener
	# (its default port would collide between nodes on one address)
	if [ -e "$d/peer_port" ] && [ "${KNBD_KEEP_PEER_PORT:-0}" != 1 ]; then
		cfs_set "$d/peer_port" 0 || return 1
	fi
}

knbd_node_enable() { cfs_set "$(knbd_node_dir "$1")/enable" 1; }
knbd_node_disable() { cfs_set "$(knbd_node_dir "$1")/enable" 0; }

# knbd_vol_create NODE VOL BACKING [attr=value...]  (enabled at the end unless
# one of the attrs is enable=0)
knbd_vol_create() {
	local n=$1 v=$2 b=$3 d kv en=1
	shift 3
	d=$(knbd_vol_dir "$n" "$v")
	mkdir "$d" || { why "mkdir $d failed"; return 1; }
	cfs_set "$d/backing_path" "$b" || return 1
	for kv in "$@"; do
		if [ "${kv%%=*}" = enable ]; then
			en=${kv#*=}
			continue
		fi
		cfs_set "$d/${kv%%=*}" "${kv#*=}" || return 1
	done
	if [ "$en" = 1 ]; then
		cfs_set "$d/enable" 1 || return 1
	fi
}

# knbd_backing FILE SIZE [random]: sparse tmpfs file, optionally filled with random data
knbd_backing() {
	local f=$1 size=$2
	mkdir -p "$(dirname "$f")"
	rm -f "$f"
	if [ "${3:-}" = random ]; then
		head -c "$size" /dev/urandom >"$f" || return 1
	else
		truncate -s "$size" "$f" || return 1
	fi
}

# knbd_simple NODE VOL SIZE [PORT] [vol attrs...]: node+volume on a fresh sparse
# backing file $KNBD_TMP/NODE-VOL.img, both enabled.
knbd_simple() {
	local n=$1 v=$2 size=$3 port=${4:-$KNBD_PORT}
	shift 3
	[ $# -gt 0 ] && shift
	local b=$KNBD_TMP/$n-$v.img
	knbd_backing "$b" "$size" || { why "cannot create $b"; return 1; }
	if [ ! -d "$(knbd_node_dir "$n")" ]; then
		knbd_node_create "$n" "$port" || return 1
	fi
	knbd_vol_create "$n" "$v" "$b" "$@" || return 1
	if [ "$(cfs_get "$(knbd_node_dir "$n")/enable")" != 1 ]; then
		knbd_node_enable "$n" || return 1
	fi
}

# vol_stat NODE VOL KEY: one counter from the volume's stats file
vol_stat() {
	awk -v k="$3" '$1 == k { print $2; f = 1 } END { if (!f) print "" }' \
		"$(knbd_vol_dir "$1" "$2")/stats" 2>/dev/null
}

# clients_count NODE [EXPORT]: connections listed in the node's clients file
clients_count() {
	local f
	f=$(knbd_node_dir "$1")/clients
	if [ -n "${2:-}" ]; then
		awk -v e="$2" '$3 == e' "$f" 2>/dev/null | wc -l
	else
		grep -c . "$f" 2>/dev/null || true
	fi
}

# ------------------------------------------------------------- module load --

knbd_loaded() { [ -d /sys/module/knbd ]; }

knbd_load() {
	modprobe configfs 2>/dev/null
	if ! grep -qw configfs /proc/filesystems; then
		why "no configfs"
		return 1
	fi
	if ! mountpoint -q /sys/kernel/config; then
		mount -t configfs configfs /sys/kernel/config || { why "cannot mount configfs"; return 1; }
	fi
	if [ ! -d /sys/module/nbd ]; then
		modprobe nbd nbds_max=16 || { why "modprobe nbd failed"; return 1; }
	fi
	if ! knbd_loaded; then
		[ -f "$KNBD_KO" ] || { why "$KNBD_KO missing (run make first)"; return 1; }
		local out
		out=$(insmod "$KNBD_KO" 2>&1) || { why "insmod $KNBD_KO: $out"; return 1; }
	fi
	wait_until 5 test -d "$KNBD_CFS/nodes" || { why "$KNBD_CFS/nodes did not appear after insmod"; return 1; }
}

# knbd_unconfig: disable and remove every volume and node (bounded); returns 1
# if something could not be removed.
knbd_unconfig() {
	local n v rc=0
	[ -d "$KNBD_CFS/nodes" ] || return 0
	for n in "$KNBD_CFS"/nodes/*/; do
		[ -d "$n" ] || continue
		n=${n%/}
		for v in "$n"/volumes/*/; do
			[ -d "$v" ] || continue
			v=${v%/}
			with_timeout 30 sh -c 'echo 0 > "$1/enable"' _ "$v" 2>/dev/null
			with_timeout 30 rmdir "$v" || { log "knbd_unconfig: rmdir $v failed"; rc=1; }
		done
		with_timeout 30 sh -c 'echo 0 > "$1/enable"' _ "$n" 2>/dev/null
		with_timeout 30 rmdir "$n" || { log "knbd_unconfig: rmdir $n failed"; rc=1; }
	done
	return $rc
}

# knbd_unload: unconfigure, then rmmod (bounded)
knbd_unload() {
	knbd_unconfig
	knbd_loaded || return 0
	local out
	out=$(with_timeout 60 rmmod knbd 2>&1) || { why "rmmod knbd: $out"; return 1; }
	! knbd_loaded || { why "knbd still loaded after rmmod"; return 1; }
}

# ------------------------------------------------------------ nbd-client ---

nbd_size() { cat "/sys/block/$(basename "$1")/size" 2>/dev/null || echo 0; }
nbd_connected() { [ "$(nbd_size "$1")" != 0 ]; }
nbd_disconnected() { [ "$(nbd_size "$1")" = 0 ]; }

# nbd_attach DEV EXPORT [CONNS] [PORT] [extra nbd-client args...]
nbd_attach() {
	local dev=$1 exp=$2 conns=${3:-1} port=${4:-$KNBD_PORT} out
	shift 2
	[ $# -gt 0 ] && shift
	[ $# -gt 0 ] && shift
	out=$(with_timeout 60 nbd-client 127.0.0.1 "$port" "$dev" -N "$exp" -C "$conns" "$@" 2>&1) || {
		why "nbd-client $dev -N $exp -C $conns failed: $(echo "$out" | tail -n 3)"
		return 1
	}
	wait_until 20 nbd_connected "$dev" || { why "$dev has size 0 after nbd-client"; return 1; }
	udevadm settle 2>/dev/null || true
}

# nbd_detach DEV: nbd-client -d (bounded), wait for size 0
nbd_detach() {
	local dev=$1 out
	nbd_disconnected "$dev" && [ ! -e "/sys/block/$(basename "$dev")/pid" ] && return 0
	out=$(with_timeout 60 nbd-client -d "$dev" 2>&1) || {
		why "nbd-client -d $dev failed: $out"
		return 1
	}
	wait_until 30 nbd_disconnected "$dev" || { why "$dev still has a size after nbd-client -d"; return 1; }
}

# ------------------------------------------------------------ raw probes --

# probe_hold OUTFILE EXPORT SECS [PORT]: background raw client (nbd_probe.py
# hold) in transmission phase; sets PROBE_PID; waits until it is READY.
probe_hold() {
	local f=$1 e=$2 s=$3 p=${4:-$KNBD_PORT}
	python3 "$KNBD_TESTS_DIR/nbd_probe.py" hold 127.0.0.1 "$p" "$e" "$s" >"$f" 2>&1 &
	PROBE_PID=$!
	wait_until 120 grep -qE 'READY|FAILED' "$f" && grep -q READY "$f" ||
		{ why "raw client on $e did not get ready: $(cat "$f")"; return 1; }
}

# probe_closed OUTFILE PID SECS: did the held connection see the server close it?
probe_closed() {
	wait_until "$3" grep -q CLOSED "$1" || return 1
	wait "$2" 2>/dev/null
	return 0
}

# probe_read EXPORT [PORT]: a fresh raw connection negotiates EXPORT and reads
probe_read() {
	with_timeout 60 python3 "$KNBD_TESTS_DIR/nbd_probe.py" read 127.0.0.1 "${2:-$KNBD_PORT}" "$1" >/dev/null 2>&1
}

# ----------------------------------------------------------- misc helpers --

# md5 of the first N bytes of a file/device (direct I/O for devices)
md5_of() {
	local f=$1 bytes=$2
	if [ -b "$f" ]; then
		dd if="$f" bs=1M count=$((bytes / 1048576)) iflag=direct status=none | md5sum | cut -d' ' -f1
	else
		head -c "$bytes" "$f" | md5sum | cut -d' ' -f1
	fi
}

# byte range of a file: file_range FILE OFFSET LEN -> stdout
file_range() {
	dd if="$1" bs=1 skip="$2" count="$3" status=none iflag=skip_bytes,count_bytes 2>/dev/null ||
		tail -c +"$(($2 + 1))" "$1" | head -c "$3"
}

# kill_bg PID...: kill our own background jobs (and their process groups)
kill_bg() {
	local p
	for p in "$@"; do
		[ -n "$p" ] || continue
		kill -TERM -- "-$p" 2>/dev/null
		kill -TERM "$p" 2>/dev/null
	done
	sleep 0.5
	for p in "$@"; do
		[ -n "$p" ] || continue
		kill -KILL -- "-$p" 2>/dev/null
		kill -KILL "$p" 2>/dev/null
	done
}

# Force everything back to a clean state (used by the runner between tests
# and by tests' traps): detach nbd devices, kill leftovers, remove config,
# rmmod knbd, drop temporary files and namespaces.
knbd_force_cleanup() {
	local d ns sz
	# builtins only where it loops: a process start costs ~0.5 s in a debug-kernel guest
	for d in /sys/block/nbd*; do
		[ -e "$d" ] || continue
		sz=0
		read -r sz <"$d/size" 2>/dev/null
		if [ "$sz" != 0 ] || [ -e "$d/pid" ]; then
			with_timeout 30 nbd-client -d "/dev/${d##*/}" >/dev/null 2>&1
		fi
	done
	knbd_unconfig
	# an IPVS service on the knbd scheduler pins ip_vs_knbd, which pins knbd
	if [ -d /sys/module/ip_vs_knbd ]; then
		ipvsadm -C 2>/dev/null
		with_timeout 30 rmmod ip_vs_knbd 2>/dev/null
	fi
	pkill -f tools/knbd-reconnect 2>/dev/null
	if knbd_loaded; then
		with_timeout 60 rmmod knbd 2>/dev/null || log "force_cleanup: rmmod knbd failed"
	fi
	for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^knbdt/ { print $1 }'); do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
		ip netns del "$ns" 2>/dev/null
	done
	if mountpoint -q "$KNBD_TMP/huge" 2>/dev/null; then
		umount "$KNBD_TMP/huge" 2>/dev/null
	fi
	local l
	for l in $(losetup -n -O NAME,BACK-FILE 2>/dev/null | awk -v t="$KNBD_TMP" 'index($2, t) == 1 { print $1 }'); do
		losetup -d "$l" 2>/dev/null
	done
	rm -rf "${KNBD_TMP:?}"/* 2>/dev/null
	return 0
}

# kmemleak_knbd FILE: scan for leaks (debug kernels) and keep those whose
# allocation backtrace runs through knbd: a knbd symbol, or, once the
# module is gone, an address in module space that no longer resolves
# (nbd, IPVS and the rest are built into the debug kernel). Writes the
# full report to FILE; prints a one-line summary and returns 1 if any.
kmemleak_knbd() {
	local f=/sys/kernel/debug/kmemleak out=$1
	# objects younger than 5 s are never reported
	sleep 6
	echo scan >"$f" 2>/dev/null || { echo "kmemleak scan failed"; return 1; }
	cat "$f" >"$out" 2>/dev/null
	echo clear >"$f" 2>/dev/null
	awk '
		function done() { if (hdr != "" && ours) { n++; if (first == "") first = hdr } }
		/^unreferenced object/ { done(); hdr = $0; ours = 0; next }
		/knbd/ || /\[<ffffffffc[0-9a-f]+>\] 0xffffffffc/ { ours = 1 }
		END {
			done()
			if (n) { printf "%d leak(s) through knbd, first: %s\n", n, first; exit 1 }
		}' "$out"
}

# ------------------------------------------------------ stock/patched nbd.ko --
# The patched nbd.ko (`make nbd-patched`, Documentation/nbd-patch.md) requeues
# the requests of a dead connection at once instead of at the request timeout.
KNBD_NBD_PATCHED_KO=${KNBD_NBD_PATCHED_KO:-$KNBD_REPO/out/nbd-patched/nbd.ko}

# nbd_which: prints stock or patched (the nbd.ko loaded now), none when no nbd
# is loaded, builtin when it is part of the kernel (a debug kernel). The
# patched one is built out of tree: its taint has O, Debian's in-tree one not.
nbd_which() {
	local t=''
	if [ ! -d /sys/module/nbd ]; then
		echo none
	elif [ ! -e /sys/module/nbd/initstate ]; then
		echo builtin
	else
		read -r t </sys/module/nbd/taint 2>/dev/null
		case $t in *O*) echo patched ;; *) echo stock ;; esac
	fi
}

# nbd_use stock|patched: load that nbd.ko (nbds_max=16) in place of the one
# loaded; fails with a reason when a device is in use, nbd is built in, or the
# patched .ko is missing.
nbd_use() {
	local want=$1 cur d sz out stock_ko
	case $want in
	stock | patched) ;;
	*) why "nbd_use: stock or patched, not '$want'"; return 1 ;;
	esac
	if [ "$want" = patched ] && [ ! -f "$KNBD_NBD_PATCHED_KO" ]; then
		why "$KNBD_NBD_PATCHED_KO missing (run make nbd-patched)"
		return 1
	fi
	cur=$(nbd_which)
	[ "$cur" != "$want" ] || return 0
	[ "$cur" != builtin ] || { why "nbd is built into $(uname -r): cannot load the $want nbd.ko"; return 1; }
	if [ "$cur" != none ]; then
		for d in /sys/block/nbd*; do
			[ -e "$d" ] || continue
			sz=0
			read -r sz <"$d/size" 2>/dev/null
			if [ "$sz" != 0 ] || [ -e "$d/pid" ]; then
				why "nbd_use $want: ${d##*/} is in use"
				return 1
			fi
		done
		out=$(with_timeout 30 rmmod nbd 2>&1) || { why "nbd_use $want: rmmod nbd: $out"; return 1; }
	fi
	if [ "$want" = patched ]; then
		out=$(insmod "$KNBD_NBD_PATCHED_KO" nbds_max=16 2>&1)
	else
		# the in-tree module itself, not one installed under updates/
		stock_ko=/lib/modules/$(uname -r)/kernel/drivers/block/nbd.ko
		if [ -f "$stock_ko" ]; then
			out=$(insmod "$stock_ko" nbds_max=16 2>&1)
		else
			out=$(modprobe nbd nbds_max=16 2>&1)
		fi
	fi || { why "nbd_use $want: loading failed: $out"; return 1; }
	cur=$(nbd_which)
	[ "$cur" = "$want" ] || { why "nbd_use $want: $cur nbd.ko loaded instead"; return 1; }
	wait_until 10 test -b /dev/nbd15 || { why "nbd_use $want: no /dev/nbd15 after loading"; return 1; }
	log "nbd.ko: $want"
}
