#!/bin/bash
# Run the knbd integration tests inside the VM guest:
#
#   scripts/vm-run.sh --smp 4 --timeout 2400 --out OUT -- scripts/tests/guest-main.sh [TEST...]
#
# TEST is a file name under scripts/tests (test_proto.sh), or its short name
# (proto); default: every scripts/tests/test_*.sh in name order.
# Options: --limit SECS   time limit per test file (default 600, env KNBD_TEST_LIMIT)
#          --skip NAME     leave test_NAME.sh out of the default list (another VM runs it)
#          --env KNBD_X=V  export a setting to the tests (the VM does not inherit the
#                          host's environment), e.g. KNBD_CASES=REGEX (lib.sh t_run)
#
# Each test file runs in its own session (process group) with a time limit;
# afterwards the runner forces a clean state (nbd-client -d, configfs rmdir,
# rmmod knbd) so the next one starts clean. Results ("PASS: name",
# "FAIL: name: reason") collect in $KNBD_OUT/results.txt, per-test logs in
# $KNBD_OUT/log-NAME.txt, a summary in $KNBD_OUT/summary.txt.
# Exit status: 0 if every check passed, 1 otherwise.
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

limit=${KNBD_TEST_LIMIT:-600}
skip=''
tests=()
while [ $# -gt 0 ]; do
	case $1 in
	--limit) limit=$2; shift 2 ;;
	--skip) skip+=" test_${2#test_}"; skip=${skip%.sh}; skip+=.sh; shift 2 ;;
	--limit=*) limit=${1#*=}; shift ;;
	--env)
		[[ ${2:-} =~ ^KNBD_[A-Z0-9_]+= ]] || { echo "guest-main: --env wants KNBD_NAME=VALUE, not '${2:-}'" >&2; exit 2; }
		export "${2?}"
		shift 2
		;;
	*)
		t=$1
		t=${t##*/}
		t=${t%.sh}
		t=${t%.py}
		t=${t#test_}
		[ -f "$here/test_$t.sh" ] || { echo "guest-main: no test $here/test_$t.sh" >&2; exit 2; }
		tests+=("test_$t.sh")
		shift
		;;
	esac
done
if [ ${#tests[@]} -eq 0 ]; then
	# fixed order for the known ones (the riskiest last: a kernel crash ends
	# the VM run), then any other test_*.sh
	first=(test_nbd_client.sh test_clients.sh test_proto.sh test_configfs.sh)
	last=(test_unload.sh test_netns.sh)
	for f in "${first[@]}"; do
		[ -f "$here/$f" ] && tests+=("$f")
	done
	for f in "$here"/test_*.sh; do
		f=$(basename "$f")
		case " ${first[*]} ${last[*]} $skip " in *" $f "*) continue ;; esac
		tests+=("$f")
	done
	for f in "${last[@]}"; do
		[ -f "$here/$f" ] && tests+=("$f")
	done
fi

: >"$KNBD_RESULTS"
summary=$KNBD_OUT/summary.txt
: >"$summary"

log "guest-main: kernel $(uname -r), $(nproc) cpus, $(awk '/MemTotal/ { print $2 / 1024 " MiB" }' /proc/meminfo)"
log "guest-main: THP enabled: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)"
if [ -f "$KNBD_KO" ]; then
	log "guest-main: module $KNBD_KO ($(modinfo -F srcversion "$KNBD_KO" 2>/dev/null), $(stat -c %y "$KNBD_KO"))"
else
	log "guest-main: WARNING: $KNBD_KO does not exist; every test will fail"
fi
log "guest-main: tests: ${tests[*]} (limit ${limit}s each)"
[ -z "${KNBD_CASES:-}" ] || log "guest-main: only the checks matching KNBD_CASES=$KNBD_CASES"

modprobe configfs 2>/dev/null
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config 2>/dev/null
modprobe nbd nbds_max=16 2>/dev/null
# --env KNBD_NBD=patched: every test runs on the patched nbd.ko (make nbd-patched)
if [ "${KNBD_NBD:-stock}" = patched ] && ! nbd_use patched; then
	t_fail nbd_patched "KNBD_NBD=patched: $T_WHY"
fi
log "guest-main: nbd.ko $(nbd_which)"
knbd_force_cleanup >/dev/null 2>&1
KMEMLEAK=/sys/kernel/debug/kmemleak
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
# One scan at the end (a scan of the whole memory takes minutes on a KASAN
# kernel under TCG); leaks from boot or other code are not counted.
[ -e "$KMEMLEAK" ] && log "guest-main: kmemleak active: leaks through knbd are checked after the last unload"

total_start=$SECONDS
any_fail=0
leak=
for t in "${tests[@]}"; do
	name=${t%.sh}
	before=$(wc -l <"$KNBD_RESULTS")
	mark=$(kmsg_mark "file-$name")
	start=$SECONDS
	log "guest-main: ===== $t"
	setsid bash -c 'set -o pipefail; bash "$1" 2>&1 | tee "$2"' _ "$here/$t" "$KNBD_OUT/log-$name.txt" &
	pid=$!
	deadline=$((SECONDS + limit))
	timed_out=0
	while kill -0 "$pid" 2>/dev/null; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			timed_out=1
			log "guest-main: $t exceeded ${limit}s: dumping blocked tasks, killing it"
			echo w >/proc/sysrq-trigger 2>/dev/null
			ps -eo pid,pgid,stat,wchan:30,etime,args >"$KNBD_OUT/ps-$name.txt" 2>&1
			kill -TERM -- "-$pid" 2>/dev/null
			sleep 2
			kill -KILL -- "-$pid" 2>/dev/null
			break
		fi
		sleep 0.5
	done
	rc=0
	if [ "$timed_out" -eq 0 ]; then
		wait "$pid" || rc=$?
	else
		rc=124
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.5
		done
		kill -0 "$pid" 2>/dev/null || wait "$pid" 2>/dev/null
	fi
	elapsed=$((SECONDS - start))

	new=$(tail -n +"$((before + 1))" "$KNBD_RESULTS")
	npass=$(grep -c '^PASS: ' <<<"$new")
	nfail=$(grep -c '^FAIL: ' <<<"$new")
	if [ "$timed_out" -eq 1 ]; then
		t_fail "$name" "timed out after ${limit}s (blocked-task dump in dmesg, ps in ps-$name.txt)"
		nfail=$((nfail + 1))
	elif [ "$rc" -ne 0 ] && [ "$nfail" -eq 0 ]; then
		t_fail "$name" "exited with status $rc without reporting a failed check"
		nfail=$((nfail + 1))
	elif [ "$npass" -eq 0 ] && [ "$nfail" -eq 0 ]; then
		t_fail "$name" "ran no check"
		nfail=$((nfail + 1))
	fi

	# kernel problems anywhere during the file (also outside its checks)
	bad=$(dmesg_bad_since "$mark")
	if [ -n "$bad" ] && ! grep -q "^FAIL: .*kernel problem" <<<"$new"; then
		t_fail "${name}_dmesg" "kernel problem in dmesg during $t: $bad"
		nfail=$((nfail + 1))
	fi
	dmesg_since "$mark" >"$KNBD_OUT/dmesg-$name.log" 2>&1

	# leftovers: a test must clean up after itself
	left=''
	knbd_loaded && left="$left knbd-loaded"
	[ -n "$(ls -A "$KNBD_CFS/nodes" 2>/dev/null)" ] && left="$left configfs-nodes"
	for d in /sys/block/nbd*; do
		sz=0
		read -r sz <"$d/size" 2>/dev/null	# no process per device: slow on debug kernels
		[ "$sz" = 0 ] || left="$left ${d##*/}"
	done
	if [ -n "$left" ]; then
		log "guest-main: $t left:$left; forcing cleanup"
		if [ "$nfail" -eq 0 ]; then
			t_fail "${name}_cleanup" "test left:$left"
			nfail=$((nfail + 1))
		fi
	fi
	knbd_force_cleanup >/dev/null 2>&1
	if knbd_loaded; then
		log "guest-main: WARNING: knbd still loaded after forced cleanup"
	fi

	[ "$nfail" -eq 0 ] || any_fail=1
	status=ok
	[ "$nfail" -eq 0 ] || status=FAILED
	printf '%-22s %3d passed %3d failed %5ds  %s\n' "$name" "$npass" "$nfail" "$elapsed" "$status" | tee -a "$summary" >&2
done

# Debug kernels: whatever knbd leaked, in any of the files, once unloaded.
if [ -e "$KMEMLEAK" ]; then
	knbd_force_cleanup >/dev/null 2>&1
	if knbd_loaded; then
		t_fail kmemleak "knbd still loaded: cannot check for leaks after unload"
	elif leak=$(kmemleak_knbd "$KNBD_OUT/kmemleak.txt"); then
		t_pass kmemleak
	else
		t_fail kmemleak "$leak (full report: kmemleak.txt)"
	fi
	[ -z "$leak" ] || any_fail=1
fi

tp=$(grep -c '^PASS: ' "$KNBD_RESULTS")
tf=$(grep -c '^FAIL: ' "$KNBD_RESULTS")
{
	echo "---- summary (total $((SECONDS - total_start))s)"
	cat "$summary"
	if [ "$tf" -gt 0 ]; then
		echo "---- failures"
		grep '^FAIL: ' "$KNBD_RESULTS"
	fi
	echo "tests: $tp passed, $tf failed"
} | tee "$summary.tmp" >&2
mv -f "$summary.tmp" "$summary"
# plain closing line on stdout
echo "$tp passed, $tf failed"
[ "$any_fail" -eq 0 ] && [ "$tf" -eq 0 ]
