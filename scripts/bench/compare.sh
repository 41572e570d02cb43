#!/bin/bash
# knbd's data path against its peers.  A GUEST script:
#
#   scripts/vm-run.sh --smp 4 --mem 4G --timeout 3600 --out OUT -- scripts/bench/compare.sh [opts]
#   (or "make bench" / scripts/bench/run.sh on the host, which builds knbd.ko
#   first, sizes the timeout and draws the chart afterwards)
#
# On one backing at a time (a tmpfs file: the buffered path; a brd RAM disk:
# the bio path), prefilled once, every server in turn is set up, attached over
# 127.0.0.1, given the same fio jobs and torn down before the next:
#   loop        losetup on the backing (direct I/O where the backing allows it): the limit
#   knbd        knbd.ko, attached with nbd-client -C N (kernel nbd.ko)
#   nvmet-tcp   nvmet + nvmet-tcp (file namespace with buffered_io=1 on tmpfs,
#               bdev namespace on brd), nvme connect -t tcp --nr-io-queues N
#   nbd-server  nbd-server 3.x, nbd-client -C N
#   nbdkit      nbdkit file plugin, nbd-client -C N
#   qemu-nbd    qemu-nbd (tmpfs: cache=writeback aio=threads; brd: cache=none aio=native)
# Jobs (fio libaio direct=1 on the block device): 4k randread QD1/QD32, 4k
# randwrite QD1/QD32, 64k randrw 70/30 QD16, 1M read QD8, 1M write QD8.  With
# N connections/queues fio runs N jobs, one pinned to each of CPUs 0..N-1,
# each with ceil(QD/N) in flight (so QD1 at N=4 is 4 x QD1).  Each run is one
# fio process: a warm-up job, then (stonewall) the measured job, whose
# exec_prerun/exec_postrun hooks snapshot /proc/stat; CPU us per I/O = busy
# jiffies of all CPUs over that window / I/Os completed.  THP is "always"
# (--thp) except around the nvmet-tcp passes ("never": nvmet-tcp's 1M writes
# trip a hardened-usercopy BUG on Debian's 6.1 with THP always).
#
# Raw data goes to $KNBD_OUT/compare-raw/ (fio JSON, /proc/stat snapshots,
# runs.jsonl, passes.jsonl, meta.json); scripts/bench/compare_report.py turns
# it into $KNBD_OUT/bench-compare.json and the table bench-compare.txt.
#
# Options:
#   --quick               smoke test: 256 MiB, runtime 2 s, warm-up 1 s, jobs
#                         4k-randread-qd32 1m-write-qd8 (other options still apply)
#   --servers "LIST"      default: loop knbd nvmet-tcp nbd-server nbdkit qemu-nbd
#   --backings "LIST"     default: tmpfs brd
#   --jobs "LIST"         default: all seven (names as printed; see JOBS below)
#   --conns "LIST"        default: "1 4"
#   --runtime SECS        measured seconds per job (default 5)
#   --warmup SECS         warm-up seconds per job, same fio process (default 2)
#   --size MIB            backing size (default 1024)
#   --budget SECS         stop starting runs after SECS (then still report); 0: none
#   --thp MODE            THP (transparent_hugepage/enabled) for the run (default always)
#   --nvmet-thp MODE      THP during nvmet-tcp passes (default never)
#   --knbd-attr A=V       extra knbd volume attribute (repeatable), e.g. direct_io=1
#   --knbd-node-attr A=V  extra knbd node attribute (repeatable), e.g. queue_depth=64
#   --knbd-param P=V      knbd module parameter after load (repeatable), e.g. io_spread=1
#   --profile             perf record -a (cpu-clock) around every fio run; the
#                         report per run in compare-raw/ID.perf.txt (numbers taken
#                         under perf are not for the table: use it on its own)
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../tests/lib.sh
. "$here/../tests/lib.sh"

# name:rw:bs:qd[:rwmixread]
JOBS_ALL="4k-randread-qd1:randread:4k:1 4k-randread-qd32:randread:4k:32
4k-randwrite-qd1:randwrite:4k:1 4k-randwrite-qd32:randwrite:4k:32
64k-randrw70-qd16:randrw:64k:16:70 1m-read-qd8:read:1M:8 1m-write-qd8:write:1M:8"

servers="loop knbd nvmet-tcp nbd-server nbdkit qemu-nbd"
backings="tmpfs brd" jobs='' conns="1 4" runtime=5 warmup=2 size_mib=1024 budget=0
thp=always nvmet_thp=never quick=0
knbd_vattrs=() knbd_nattrs=() knbd_params=() profile=0
orig_args=" $* "
while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1; shift ;;
	--servers) servers=$2; shift 2 ;;
	--backings) backings=$2; shift 2 ;;
	--jobs) jobs=$2; shift 2 ;;
	--conns) conns=$2; shift 2 ;;
	--runtime) runtime=$2; shift 2 ;;
	--warmup) warmup=$2; shift 2 ;;
	--size) size_mib=$2; shift 2 ;;
	--budget) budget=$2; shift 2 ;;
	--thp) thp=$2; shift 2 ;;
	--nvmet-thp) nvmet_thp=$2; shift 2 ;;
	--knbd-attr) knbd_vattrs+=("$2"); shift 2 ;;
	--knbd-node-attr) knbd_nattrs+=("$2"); shift 2 ;;
	--knbd-param) knbd_params+=("$2"); shift 2 ;;
	--profile) profile=1; shift ;;
	*) echo "compare: unknown option $1" >&2; exit 2 ;;
	esac
done
# --quick sets smaller defaults; options given explicitly still win
if [ "$quick" = 1 ]; then
	[[ $orig_args == *" --runtime "* ]] || runtime=2
	[[ $orig_args == *" --warmup "* ]] || warmup=1
	[[ $orig_args == *" --size "* ]] || size_mib=256
	[[ $orig_args == *" --jobs "* ]] || jobs="4k-randread-qd32 1m-write-qd8"
fi

W=/run/knbd-bench	# guest tmpfs: scratch, snapshots, the tmpfs backing's mount point
RAW=$KNBD_OUT/compare-raw
NQN=nqn.2014-08.org.knbd:bench
P_KNBD=10809 P_NBDSERVER=10810 P_NBDKIT=10811 P_QEMUNBD=10812 P_NVMET=4420
NBD_T=30	# nbd-client -t: a lost request is retried (or fails) instead of hanging fio
THP=/sys/kernel/mm/transparent_hugepage/enabled
NCPU=$(nproc)

rm -rf "$RAW" "$W"
mkdir -p "$RAW" "$W/fio" || { echo "compare: cannot create $RAW or $W" >&2; exit 1; }
cd "$W/fio" || exit 1
t0=$SECONDS

# job_spec NAME: J_RW J_BS J_QD J_MIX from JOBS_ALL; 1 if unknown
job_spec() {
	local j
	for j in $JOBS_ALL; do
		[ "${j%%:*}" = "$1" ] || continue
		IFS=: read -r _ J_RW J_BS J_QD J_MIX <<<"$j"
		return 0
	done
	return 1
}
all_jobs=''
for j in $JOBS_ALL; do all_jobs="$all_jobs ${j%%:*}"; done
jobs=${jobs:-$all_jobs}
read -r -d '' -a _jl <<<"$jobs"
jobs=${_jl[*]}
for j in $jobs; do
	job_spec "$j" || { echo "compare: unknown job $j (jobs:$all_jobs)" >&2; exit 2; }
done
for s in $servers; do
	case $s in loop | knbd | nvmet-tcp | nbd-server | nbdkit | qemu-nbd) ;;
	*) echo "compare: unknown server $s" >&2; exit 2 ;;
	esac
done
for b in $backings; do
	case $b in tmpfs | brd) ;; *) echo "compare: unknown backing $b" >&2; exit 2 ;; esac
done
for c in $conns; do
	[[ $c =~ ^[1-9][0-9]*$ ]] || { echo "compare: bad --conns value $c" >&2; exit 2; }
done

# ------------------------------------------------------------------ records --

# js STRING: a JSON string literal
js() {
	local s=$1
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	s=${s//$'\n'/ }
	s=${s//$'\t'/ }
	s=${s//[$'\001'-$'\037']/?}
	printf '"%s"' "$s"
}

# record FILE key=value...: one JSON object per line (values: numbers stay
# numbers, everything else becomes a string)
record() {
	local f=$1 kv k v sep='' line='{'
	shift
	for kv in "$@"; do
		k=${kv%%=*} v=${kv#*=}
		if [[ $v =~ ^-?[0-9]+(\.[0-9]+)?$ ]] && [[ ! $v =~ ^-?0[0-9] ]]; then
			line+="$sep\"$k\": $v"
		else
			line+="$sep\"$k\": $(js "$v")"
		fi
		sep=', '
	done
	printf '%s}\n' "$line" >>"$RAW/$f"
}

# bracketed_word FILE: the [selected] word of a sysfs choice file (builtins only:
# every process start costs ~0.5 s in a busy TCG guest)
bracketed_word() {
	local l=''
	read -r l <"$1" 2>/dev/null
	l=${l#*\[}
	[ "$l" != "" ] && echo "${l%%\]*}"
}
thp_get() { bracketed_word "$THP"; }
thp_set() { [ -w "$THP" ] && { echo "$1" >"$THP"; } 2>/dev/null; }

# --------------------------------------------------------------- processes --

# kill_tree PID: TERM a process and its descendants (by id), KILL what stays
kill_tree() {
	local pids=$1 p x all='' more
	[ -n "$1" ] || return 0
	while [ -n "$pids" ]; do
		all="$all $pids"
		more=''
		for p in $pids; do
			more="$more $(pgrep -P "$p" 2>/dev/null | tr '\n' ' ')"
		done
		read -r -a more <<<"$more"
		pids=${more[*]}
	done
	# shellcheck disable=SC2086
	kill -TERM $all 2>/dev/null
	for _ in $(seq 50); do
		p=0
		for x in $all; do kill -0 "$x" 2>/dev/null && p=1; done
		[ "$p" = 0 ] && break
		_nap 0.2
	done
	# shellcheck disable=SC2086
	kill -KILL $all 2>/dev/null
	for x in $all; do wait "$x" 2>/dev/null; done
	return 0
}

# port_listening PORT: a TCP listener on PORT (from /proc/net/tcp, no process)
port_listening() {
	local hex _sl loc _rem st
	printf -v hex ':%04X' "$1"
	while read -r _sl loc _rem st _; do
		[ "$st" = 0A ] && [ "${loc#*:}" = "${hex#:}" ] && return 0
	done </proc/net/tcp
	return 1
}

# ------------------------------------------------------------- nbd devices --

# free_nbd: first /dev/nbdN that is neither connected nor owned (a device a
# broken server left behind is skipped)
free_nbd() {
	local d sz
	for d in /sys/block/nbd*; do
		[ -e "$d" ] || continue
		sz=1
		read -r sz <"$d/size" 2>/dev/null
		[ "$sz" = 0 ] && [ ! -e "$d/pid" ] && { echo "/dev/${d##*/}"; return 0; }
	done
	return 1
}

# nbd_up PORT CONNS: attach export "vol" on 127.0.0.1:PORT, DEV=the device
nbd_up() {
	local ta=$SECONDS
	DEV=$(free_nbd) || { why "no free /dev/nbdN"; return 1; }
	nbd_attach "$DEV" vol "$2" "$1" -t "$NBD_T" || return 1
	log "  nbd-client -C $2 attached $DEV in $((SECONDS - ta))s"
}

nbd_down() {
	[ -n "${DEV:-}" ] || return 0
	case $DEV in /dev/nbd*) nbd_detach "$DEV" ;; esac
}

# ----------------------------------------------------------------- servers --
# srv_up SERVER BACKING_KIND BACKING_PATH CONNS: set DEV (block device to
# test), SRV_NOTE (how it was set up); why + 1 on failure.  srv_down SERVER:
# undo, bounded; 1 if something could not be undone.

SRV_PID='' DEV='' SRV_NOTE=''

srv_up() {
	local s=$1 kind=$2 b=$3 c=$4 out kv
	DEV='' SRV_PID='' SRV_NOTE=''
	case $s in
	loop)
		modprobe loop 2>/dev/null
		# direct I/O where the backing allows it (brd; not tmpfs on 6.1)
		out=$(with_timeout 30 losetup -f --show --direct-io=on "$b" 2>&1) ||
			out=$(with_timeout 30 losetup -f --show "$b" 2>&1) || { why "losetup: $out"; return 1; }
		DEV=$(echo "$out" | grep '^/dev/loop' | tail -n 1)
		[ -b "$DEV" ] || { why "losetup printed no device: $out"; return 1; }
		SRV_NOTE="dio=$(cat "/sys/block/${DEV#/dev/}/loop/dio" 2>/dev/null)"
		;;
	knbd)
		knbd_load || return 1
		for kv in "${knbd_params[@]}"; do
			echo "${kv#*=}" >"/sys/module/knbd/parameters/${kv%%=*}" ||
				{ why "knbd parameter $kv"; return 1; }
		done
		knbd_node_create bench "$P_KNBD" 127.0.0.1 || return 1
		for kv in "${knbd_nattrs[@]}"; do
			cfs_set "$(knbd_node_dir bench)/${kv%%=*}" "${kv#*=}" || return 1
		done
		knbd_vol_create bench vol "$b" "${knbd_vattrs[@]}" || return 1
		knbd_node_enable bench || return 1
		nbd_up "$P_KNBD" "$c" || return 1
		SRV_NOTE="io_path=$(vol_stat bench vol io_path) direct_io=$(cfs_get "$(knbd_vol_dir bench vol)/direct_io")"
		SRV_NOTE+=" queue_depth=$(cfs_get "$(knbd_node_dir bench)/queue_depth")"
		SRV_NOTE+=" io_timeout=$(cfs_get "$(knbd_node_dir bench)/io_timeout")"
		;;
	nvmet-tcp)
		thp_set "$nvmet_thp" || { why "cannot set THP to $nvmet_thp"; return 1; }
		local S=/sys/kernel/config/nvmet ns ctrl
		out=$(with_timeout 60 modprobe -a nvmet-tcp nvme-tcp 2>&1) || { why "modprobe nvmet-tcp nvme-tcp: $out"; return 1; }
		[ -d $S ] || { why "no $S"; return 1; }
		mkdir "$S/subsystems/$NQN" || { why "mkdir nvmet subsystem"; return 1; }
		cfs_set "$S/subsystems/$NQN/attr_allow_any_host" 1 || return 1
		ns=$S/subsystems/$NQN/namespaces/1
		mkdir "$ns" || { why "mkdir nvmet namespace"; return 1; }
		cfs_set "$ns/device_path" "$b" || return 1
		if [ "$kind" = tmpfs ]; then
			cfs_set "$ns/buffered_io" 1 || return 1
		fi
		cfs_set "$ns/enable" 1 || return 1
		mkdir "$S/ports/1" || { why "mkdir nvmet port"; return 1; }
		cfs_set "$S/ports/1/addr_trtype" tcp || return 1
		cfs_set "$S/ports/1/addr_adrfam" ipv4 || return 1
		cfs_set "$S/ports/1/addr_traddr" 127.0.0.1 || return 1
		cfs_set "$S/ports/1/addr_trsvcid" "$P_NVMET" || return 1
		ln -s "$S/subsystems/$NQN" "$S/ports/1/subsystems/$NQN" || { why "link subsystem to port"; return 1; }
		out=$(with_timeout 60 nvme connect -t tcp -a 127.0.0.1 -s "$P_NVMET" -n "$NQN" \
			--nr-io-queues="$c" --ctrl-loss-tmo=30 --reconnect-delay=2 2>&1) ||
			{ why "nvme connect: $out"; return 1; }
		wait_until 30 nvme_find || { why "no namespace block device after nvme connect"; return 1; }
		ctrl=$NVME_CTRL
		SRV_NOTE="ns=$([ "$kind" = tmpfs ] && echo file,buffered_io=1 || echo bdev) ctrl=$ctrl"
		SRV_NOTE+=" io_queues=$(($(cat "/sys/class/nvme/$ctrl/queue_count" 2>/dev/null || echo 1) - 1))"
		SRV_NOTE+=" sqsize=$(cat "/sys/class/nvme/$ctrl/sqsize" 2>/dev/null) thp=$(thp_get)"
		;;
	nbd-server)
		cat >"$W/nbd-server.conf" <<-CONF
			[generic]
			listenaddr = 127.0.0.1
			port = $P_NBDSERVER
			[vol]
			exportname = $b
		CONF
		rm -f "$W/nbd-server.pid"
		with_timeout 30 nbd-server -C "$W/nbd-server.conf" -p "$W/nbd-server.pid" >"$W/nbd-server.log" 2>&1 ||
			{ why "nbd-server: $(tail -n 3 "$W/nbd-server.log")"; return 1; }
		wait_until 20 test -s "$W/nbd-server.pid" || { why "nbd-server wrote no pid file"; return 1; }
		SRV_PID=$(cat "$W/nbd-server.pid")
		wait_until 30 port_listening "$P_NBDSERVER" || { why "nbd-server does not listen"; return 1; }
		log "  nbd-server (pid $SRV_PID) listening"
		nbd_up "$P_NBDSERVER" "$c" || return 1
		SRV_NOTE="defaults"
		;;
	nbdkit)
		setsid nbdkit -f -i 127.0.0.1 -p "$P_NBDKIT" -e vol file "file=$b" >"$W/nbdkit.log" 2>&1 &
		SRV_PID=$!
		wait_until 30 port_listening "$P_NBDKIT" || { why "nbdkit does not listen: $(tail -n 3 "$W/nbdkit.log")"; return 1; }
		nbd_up "$P_NBDKIT" "$c" || return 1
		SRV_NOTE="file plugin, defaults (threads 16)"
		;;
	qemu-nbd)
		local cache=writeback aio=threads
		# a block device: O_DIRECT + native AIO, the best qemu-nbd can do on it
		# (tmpfs has no O_DIRECT on 6.1)
		[ "$kind" = brd ] && cache=none aio=native
		setsid qemu-nbd -f raw -b 127.0.0.1 -p "$P_QEMUNBD" -x vol -e 16 -t \
			--cache="$cache" --aio="$aio" "$b" >"$W/qemu-nbd.log" 2>&1 &
		SRV_PID=$!
		wait_until 30 port_listening "$P_QEMUNBD" || { why "qemu-nbd does not listen: $(tail -n 3 "$W/qemu-nbd.log")"; return 1; }
		nbd_up "$P_QEMUNBD" "$c" || return 1
		SRV_NOTE="cache=$cache aio=$aio"
		;;
	esac
	return 0
}

# nvme_find: NVME_CTRL, DEV for our subsystem's namespace 1 (the multipath
# head nvmeXnY of the path nvmeXcZnY, or the plain nvmeZnY)
nvme_find() {
	local c n
	for c in /sys/class/nvme/nvme*; do
		[ "$(cat "$c/subsysnqn" 2>/dev/null)" = "$NQN" ] || continue
		for n in "$c"/nvme*n*; do
			[ -e "$n" ] || continue
			n=${n##*/}
			[[ $n =~ ^nvme([0-9]+)c[0-9]+n([0-9]+)$ ]] && n=nvme${BASH_REMATCH[1]}n${BASH_REMATCH[2]}
			[ -b "/dev/$n" ] || continue
			NVME_CTRL=${c##*/} DEV=/dev/$n
			return 0
		done
	done
	return 1
}

srv_down() {
	local s=$1 rc=0 S=/sys/kernel/config/nvmet m
	case $s in
	loop)
		[ -n "$DEV" ] && { with_timeout 30 losetup -d "$DEV" || rc=1; }
		;;
	knbd)
		nbd_down || rc=1
		knbd_unconfig || rc=1
		;;
	nvmet-tcp)
		if [ -d "$S/subsystems/$NQN" ]; then
			with_timeout 60 nvme disconnect -n "$NQN" >/dev/null 2>&1 || { why "nvme disconnect failed"; rc=1; }
			rm -f "$S/ports/1/subsystems/$NQN"
			[ -d "$S/ports/1" ] && { rmdir "$S/ports/1" || rc=1; }
			[ -d "$S/subsystems/$NQN/namespaces/1" ] && {
				with_timeout 30 sh -c "echo 0 > $S/subsystems/$NQN/namespaces/1/enable"
				rmdir "$S/subsystems/$NQN/namespaces/1" || rc=1
			}
			rmdir "$S/subsystems/$NQN" || rc=1
		fi
		# host side first, then the target; modprobe -r takes the unused
		# dependencies (nvme_fabrics, nvmet) along
		with_timeout 60 modprobe -r nvme_tcp nvmet_tcp 2>/dev/null
		for m in nvme_tcp nvme_fabrics nvmet_tcp nvmet; do
			[ -d "/sys/module/$m" ] && { why "module $m still loaded"; rc=1; }
		done
		thp_set "$thp"
		;;
	nbd-server | nbdkit | qemu-nbd)
		nbd_down || rc=1
		kill_tree "$SRV_PID"
		;;
	esac
	SRV_PID='' DEV=''
	return $rc
}

# ------------------------------------------------------------------ fio run --

# snapshot hook for fio's exec_prerun/exec_postrun (run by /bin/sh; builtins
# only): the aggregate cpu line of /proc/stat and the uptime, appended
snap_cmd() {
	# shellcheck disable=SC2016  # expanded by fio's /bin/sh, not here
	printf '{ read a </proc/stat; read u </proc/uptime; echo "$a $u" >>%s; }' "$1"
}

# run_job ID JOB CONNS: fio on $DEV; writes RAW/ID.json, ID.pre, ID.post;
# returns fio's status (124: timed out)
run_job() {
	local id=$1 job=$2 c=$3 nj iod devsz rc args
	job_spec "$job"
	nj=$c
	iod=$(((J_QD + c - 1) / c))
	devsz=0
	read -r devsz <"/sys/block/${DEV#/dev/}/size" 2>/dev/null
	devsz=$((devsz * 512))
	args=(--output-format=json --output="$RAW/$id.json" --filename="$DEV" --ioengine=libaio
		--direct=1 --rw="$J_RW" --bs="$J_BS" --iodepth="$iod" --numjobs="$nj"
		--group_reporting --unified_rw_reporting=both --norandommap --randrepeat=0
		--lat_percentiles=1 --clat_percentiles=1 --time_based)
	[ -n "$J_MIX" ] && args+=(--rwmixread="$J_MIX")
	if [ "$nj" -gt 1 ]; then
		# one job per CPU, hence per blk-mq hardware queue (= connection or
		# nvme I/O queue); sequential jobs each get their own region
		[ "$nj" -le "$NCPU" ] && args+=(--cpus_allowed="0-$((nj - 1))" --cpus_allowed_policy=split)
		case $J_RW in read | write)
			args+=(--size=$((devsz / nj / 1048576 * 1048576)) --offset_increment=$((devsz / nj / 1048576 * 1048576))) ;;
		esac
	fi
	[ "$warmup" -gt 0 ] && args+=(--name=warm --runtime="$warmup")
	rm -f "$RAW/$id.pre" "$RAW/$id.post"
	args+=(--name=meas --stonewall --runtime="$runtime"
		--exec_prerun="$(snap_cmd "$RAW/$id.pre")" --exec_postrun="$(snap_cmd "$RAW/$id.post")")
	# (the cwd is $W/fio: fio leaves meas.prerun.txt/meas.postrun.txt there)
	if [ "$profile" = 0 ]; then
		with_timeout $((warmup + runtime + 120)) fio "${args[@]}" >"$RAW/$id.log" 2>&1
		return
	fi
	# perf mmaps its data file: on the guest tmpfs, not the 9p share
	local rc=0 ppid pdata=$W/perf.data
	# TCG's slow interrupts would make the kernel lower the sample rate
	echo 0 >/proc/sys/kernel/perf_cpu_time_max_percent 2>/dev/null
	echo 1000 >/proc/sys/kernel/perf_event_max_sample_rate 2>/dev/null
	# Under TCG perf takes seconds to start (kallsyms, every thread over
	# 9p): it starts disabled and fio waits for its ack of "enable".
	local cfd afd
	rm -f "$W/perf.ctl" "$W/perf.ack"
	mkfifo "$W/perf.ctl" "$W/perf.ack"
	exec {cfd}<>"$W/perf.ctl" {afd}<>"$W/perf.ack"
	perf record -a -e cpu-clock -F 1000 -D -1 --control "fifo:$W/perf.ctl,$W/perf.ack" \
		-o "$pdata" >"$RAW/$id.perf.log" 2>&1 &
	ppid=$!
	echo enable >&"$cfd"
	read -r -t 120 -u "$afd" _ || log "  perf: no ack of enable"
	exec {cfd}>&- {afd}>&-
	with_timeout $((warmup + runtime + 120)) fio "${args[@]}" >"$RAW/$id.log" 2>&1 || rc=$?
	kill -INT "$ppid" 2>/dev/null
	wait "$ppid" 2>/dev/null
	{
		echo "== by module (dso)"
		with_timeout 300 perf report -i "$pdata" --no-children --sort dso -g none --stdio 2>/dev/null |
			grep -v '^#' | grep -v '^$' | head -n 25
		echo "== by command"
		with_timeout 300 perf report -i "$pdata" --no-children --sort comm -g none --stdio 2>/dev/null |
			grep -v '^#' | grep -v '^$' | head -n 25
		echo "== by symbol"
		with_timeout 300 perf report -i "$pdata" --no-children --sort dso,sym -g none \
			--percent-limit 0.5 --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 80
	} >"$RAW/$id.perf.txt"
	rm -f "$pdata"
	return $rc
}

# fio_brief FILE: "iops=... MB/s=..." of the measured job (for the log)
fio_brief() {
	awk '/"jobname" : "meas"/ { m = 1 }
		m && /"mixed" : \{/ { x = 1 }
		x && /"bw_bytes" :/ { gsub(",", "", $3); bw = $3 }
		x && /"iops" :/ { gsub(",", "", $3); printf "iops=%.0f MB/s=%.1f", $3, bw / 1e6; exit }' "$1" 2>/dev/null
}

over_budget() { [ "$budget" -gt 0 ] && [ $((SECONDS - t0)) -ge "$budget" ]; }

declare -A BROKEN=()

# skip_pass KIND CONNS SERVER WHY NOTE: record the pass and its runs as skipped
skip_pass() {
	local kind=$1 c=$2 s=$3 job
	log "--- $s $kind C=$c: skipped ($4)"
	for job in $jobs; do
		record runs.jsonl id="${kind}_c${c}_${job}_$s" backing="$kind" conns="$c" job="$job" \
			server="$s" status=skipped note="$5"
	done
	record passes.jsonl backing="$kind" conns="$c" server="$s" status=skipped note="$5"
}

# server_pass KIND BACKING CONNS SERVER
server_pass() {
	local kind=$1 b=$2 c=$3 s=$4 job id rc fails=0 abort='' mark bad t1=$SECONDS st=ok sched note
	if [ -n "${BROKEN[$s]:-}" ]; then
		skip_pass "$kind" "$c" "$s" "${BROKEN[$s]}" "${BROKEN[$s]}"
		return
	fi
	if over_budget; then
		skip_pass "$kind" "$c" "$s" "time budget ${budget}s used up" "time budget"
		return
	fi
	log "--- $s on $kind, C=$c"
	# same starting point for everyone: nothing dirty, no clean cache
	with_timeout 120 sync
	echo 3 >/proc/sys/vm/drop_caches
	kmsg_mark_set "bench-$s-$kind-$c"
	mark=$KMSG_MARK
	T_WHY=''
	if ! srv_up "$s" "$kind" "$b" "$c"; then
		st=setup-failed
		abort="setup failed: $T_WHY"
		log "  $s: $abort"
	else
		sched=none
		[ -w "/sys/block/${DEV#/dev/}/queue/scheduler" ] &&
			{ echo none >"/sys/block/${DEV#/dev/}/queue/scheduler"; } 2>/dev/null
		sched=$(bracketed_word "/sys/block/${DEV#/dev/}/queue/scheduler")
		log "  $s up on $DEV in $((SECONDS - t1))s: $SRV_NOTE"
	fi
	for job in $jobs; do
		id=${kind}_c${c}_${job}_$s
		if [ -n "$abort" ]; then
			record runs.jsonl id="$id" backing="$kind" conns="$c" job="$job" server="$s" \
				status=not-run note="$abort"
			continue
		fi
		if over_budget; then
			record runs.jsonl id="$id" backing="$kind" conns="$c" job="$job" server="$s" \
				status=skipped note="time budget"
			continue
		fi
		local tj=$SECONDS thp
		thp=$(thp_get)
		run_job "$id" "$job" "$c"
		rc=$?
		note=''
		if [ "$rc" = 0 ]; then
			fails=0
			log "  $s $kind C=$c $job: $(fio_brief "$RAW/$id.json") ($((SECONDS - tj))s)"
		else
			fails=$((fails + 1))
			note="fio exit $rc$([ "$rc" = 124 ] && echo ' (timed out)'): $(grep -v '^ *$' "$RAW/$id.log" 2>/dev/null | grep -iv 'Saving output' | tail -n 2 | tr '\n' ' ')"
			log "  $s $kind C=$c $job: FAILED: $note"
			st=errors
			if [ "$rc" = 124 ] || [ "$fails" -ge 2 ] || [ ! -b "$DEV" ]; then
				abort="aborted after $job failed ($note)"
			fi
		fi
		record runs.jsonl id="$id" backing="$kind" conns="$c" job="$job" server="$s" \
			status="$([ "$rc" = 0 ] && echo ok || echo failed)" rc="$rc" dev="$DEV" thp="$thp" \
			sched="$sched" wall_s=$((SECONDS - tj)) note="$note"
	done
	# what the server still had to write back is its cost, not the next one's
	with_timeout 120 sync || log "  sync after $s timed out"
	T_WHY=''
	if ! srv_down "$s"; then
		case $s in
		knbd | nvmet-tcp) BROKEN[$s]="teardown failed earlier ($kind C=$c: $T_WHY)" ;;
		esac
		log "  $s: teardown incomplete: $T_WHY"
		st="$st,teardown-failed"
	fi
	bad=$(dmesg_bad_since "$mark")
	# nbd.ko/nvme-tcp timeouts: a request the server sat on for -t seconds
	local tmo
	tmo=$(dmesg_since "$mark" | grep -E 'Connection timed out|Possible stuck request|I/O tag .* timeout|timeout.*nvme|nvme.*timeout' | head -n 3 | tr '\n' '|')
	if [ -n "$tmo" ]; then
		log "  request timeouts during $s: $tmo"
		st="$st,request-timeouts"
	fi
	if [ -n "$bad" ]; then
		log "  kernel problem report during $s: $bad"
		st="$st,kernel-report"
	fi
	if [ "$s" = knbd ] && [ -n "$bad" ] && [[ $bad == *knbd* ]]; then
		BROKEN[knbd]="kernel report in knbd ($kind C=$c)"
	fi
	record passes.jsonl backing="$kind" conns="$c" server="$s" status="$st" note="$SRV_NOTE" \
		abort="$abort" kernel="$bad" timeouts="$tmo" wall_s=$((SECONDS - t1))
}

# ---------------------------------------------------------------- backings --

# backing_up KIND: BACKING (path), prefilled
backing_up() {
	local kind=$1 bytes=$((size_mib * 1048576)) out
	case $kind in
	tmpfs)
		mkdir -p "$W/tmpfs"
		mount -t tmpfs -o "size=$((size_mib + 16))M,huge=never" tmpfs "$W/tmpfs" || { why "mount tmpfs"; return 1; }
		BACKING=$W/tmpfs/backing.img
		truncate -s "$bytes" "$BACKING" || { why "truncate $BACKING"; return 1; }
		out=$(with_timeout 600 fio --name=prefill --filename="$BACKING" --rw=write --bs=1M \
			--ioengine=psync --size="$bytes" 2>&1) || { why "prefill: $(echo "$out" | tail -n 2)"; return 1; }
		;;
	brd)
		[ -d /sys/module/brd ] && with_timeout 30 rmmod brd
		out=$(with_timeout 60 modprobe brd rd_nr=1 rd_size=$((size_mib * 1024)) max_part=0 2>&1) ||
			{ why "modprobe brd: $out"; return 1; }
		BACKING=/dev/ram0
		wait_until 10 test -b "$BACKING" || { why "no $BACKING"; return 1; }
		out=$(with_timeout 600 fio --name=prefill --filename="$BACKING" --rw=write --bs=1M \
			--ioengine=libaio --iodepth=8 --direct=1 --size="$bytes" 2>&1) ||
			{ why "prefill: $(echo "$out" | tail -n 2)"; return 1; }
		;;
	esac
}

backing_down() {
	case $1 in
	tmpfs) with_timeout 60 umount "$W/tmpfs" || log "umount $W/tmpfs failed" ;;
	brd) with_timeout 60 rmmod brd || log "rmmod brd failed (still in use?)" ;;
	esac
}

# -------------------------------------------------------------------- main --

thp0=$(thp_get)
thp_set "$thp" || log "cannot set THP to $thp (now: $(thp_get))"
modprobe nbd nbds_max=16 2>/dev/null
knbd_sha=$(sha256sum "$KNBD_KO" 2>/dev/null | cut -c1-16)
record meta.jsonl kernel="$(uname -r)" ncpu="$NCPU" mem_mib=$(($(awk '/MemTotal/ { print $2 }' /proc/meminfo) / 1024)) \
	servers="$servers" backings="$backings" jobs="$jobs" conns="$conns" runtime="$runtime" \
	warmup="$warmup" size_mib="$size_mib" quick="$quick" budget="$budget" thp="$thp" nvmet_thp="$nvmet_thp" \
	thp_boot="$thp0" knbd_ko="$KNBD_KO" knbd_sha256="$knbd_sha" knbd_attrs="${knbd_vattrs[*]} ${knbd_nattrs[*]} ${knbd_params[*]}" \
	fio="$(fio --version)" nbd_timeout="$NBD_T" user_hz="$(getconf CLK_TCK)"
log "compare: servers [$servers] backings [$backings] conns [$conns] jobs [$jobs];" \
	"${runtime}s measured + ${warmup}s warm-up per job, ${size_mib} MiB backings, $NCPU CPUs"

for kind in $backings; do
	tb=$SECONDS
	T_WHY=''
	if ! backing_up "$kind"; then
		log "backing $kind: $T_WHY"
		for c in $conns; do
			for s in $servers; do
				for job in $jobs; do
					record runs.jsonl id="${kind}_c${c}_${job}_$s" backing="$kind" conns="$c" job="$job" \
						server="$s" status=not-run note="backing setup failed: $T_WHY"
				done
			done
		done
		backing_down "$kind"
		continue
	fi
	log "backing $kind ($BACKING, ${size_mib} MiB) prefilled in $((SECONDS - tb))s"
	for c in $conns; do
		for s in $servers; do
			server_pass "$kind" "$BACKING" "$c" "$s"
		done
	done
	backing_down "$kind"
done

if knbd_loaded; then
	T_WHY=''
	knbd_unload || log "knbd unload: $T_WHY"
fi
[ -n "$thp0" ] && thp_set "$thp0"
record meta.jsonl wall_s=$((SECONDS - t0)) done=1
log "compare: all runs done in $((SECONDS - t0))s"

/usr/bin/python3 "$here/compare_report.py" "$RAW" --json "$KNBD_OUT/bench-compare.json" \
	--txt "$KNBD_OUT/bench-compare.txt" || { echo "compare: report failed" >&2; exit 1; }
cat "$KNBD_OUT/bench-compare.txt"
exit 0
