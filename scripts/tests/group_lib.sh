# shellcheck shell=bash
# Helpers for partitioned-volume (group) tests and benchmarks inside the VM
# guest: a group of knbd members in one kernel, each node in its own network
# namespace, all joined by a bridge in the root namespace where the clients
# run.  Source it after (or instead of) lib.sh: it sources lib.sh itself.
#
#   root ns:  bridge knbdtbr0 192.0.2.254/24
#   member i: netns knbdtg<i>, veth knbdte<i> 192.0.2.<i>/24 (peer end knbdtv<i>
#             on the bridge), configfs node m<i>, node_id i, group_id 7,
#             group_key $GRP_KEY (random per run),
#             clients on :10809, members on peer_port 10810
#   volume V on member i: backing $KNBD_TMP/grp-m<i>-V.img (sparse, tmpfs)
#
# Names start with "knbdt" so that knbd_force_cleanup (lib.sh) also removes
# the namespaces after a crash of the test.  grp_teardown undoes everything.

GRP_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$GRP_LIB_DIR/lib.sh"

# lib.sh's _nap opens its pipe fd with "exec {fd}<> <(:) 2>/dev/null", which
# also sends this shell's stderr (log, why) to /dev/null for good: open it
# once here with stderr saved and restored.
if declare -F _nap >/dev/null && [ -z "${_KNBD_NAP_FD:-}" ]; then
	exec {_grp_stderr}>&2
	_nap 0
	exec 2>&"$_grp_stderr" {_grp_stderr}>&-
fi

GRP_N=${GRP_N:-3}
GRP_GROUP_ID=${GRP_GROUP_ID:-7}
# the member links' group key (hex), fresh for every run
GRP_KEY=${GRP_KEY:-$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')}
GRP_BR=knbdtbr0
GRP_NET=192.0.2
GRP_PORT=10809
GRP_NBD_TIMEOUT=${GRP_NBD_TIMEOUT:-60}	# nbd-client -t (TCG is slow)
GRP_DEVS=()	# nbd devices attached by grp_attach

grp_ns() { echo "knbdtg$1"; }
grp_ip() { echo "$GRP_NET.$1"; }
grp_node() { echo "m$1"; }
grp_node_dir() { echo "$KNBD_CFS/nodes/m$1"; }
grp_vol_dir() { echo "$KNBD_CFS/nodes/m$1/volumes/$2"; }
grp_backing() { echo "$KNBD_TMP/grp-m$1-$2.img"; }
# grp_in_ns I CMD...: run CMD in member I's network namespace (nsenter, not
# "ip netns exec", which remounts /sys and hides configfs)
grp_in_ns() {
	local i=$1
	shift
	nsenter --net="/run/netns/knbdtg$i" "$@"
}

# grp_net_up: bridge + one namespace and veth pair per member
grp_net_up() {
	local i ns
	modprobe bridge 2>/dev/null
	modprobe veth 2>/dev/null
	ip link add "$GRP_BR" type bridge 2>/dev/null || { why "cannot create bridge $GRP_BR"; return 1; }
	# forward at once (no STP/learning delays)
	ip link set "$GRP_BR" type bridge forward_delay 0 stp_state 0 2>/dev/null
	ip addr add "$GRP_NET.254/24" dev "$GRP_BR" || { why "address on $GRP_BR"; return 1; }
	ip link set "$GRP_BR" up || { why "$GRP_BR up"; return 1; }
	for ((i = 1; i <= GRP_N; i++)); do
		ns=knbdtg$i
		ip netns add "$ns" || { why "ip netns add $ns"; return 1; }
		ip link add "knbdtv$i" type veth peer name "knbdte$i" || { why "veth knbdtv$i"; return 1; }
		ip link set "knbdte$i" netns "$ns" || { why "veth into $ns"; return 1; }
		ip link set "knbdtv$i" master "$GRP_BR" && ip link set "knbdtv$i" up ||
			{ why "knbdtv$i on the bridge"; return 1; }
		ip -n "$ns" addr add "$GRP_NET.$i/24" dev "knbdte$i" &&
			ip -n "$ns" link set "knbdte$i" up &&
			ip -n "$ns" link set lo up || { why "addresses in $ns"; return 1; }
	done
}

grp_net_down() {
	local i
	for ((i = 1; i <= GRP_N; i++)); do
		ip netns pids "knbdtg$i" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
		ip netns del "knbdtg$i" 2>/dev/null
		ip link del "knbdtv$i" 2>/dev/null
	done
	ip link del "$GRP_BR" 2>/dev/null
	return 0
}

# grp_set FILE VALUE: write a configfs attribute without forking (TCG makes
# every fork expensive); why + 1 on failure
grp_set() {
	{ printf '%s\n' "$2" >"$1"; } 2>/dev/null && return 0
	why "write '$2' > $1 failed"
	return 1
}

# grp_nodes_create: configfs node m<i> with its peers (not enabled)
grp_nodes_create() {
	local i j d
	for ((i = 1; i <= GRP_N; i++)); do
		d=$KNBD_CFS/nodes/m$i
		mkdir "$d" || { why "mkdir $d"; return 1; }
		grp_set "$d/node_id" "$i" || return 1
		grp_set "$d/group_id" "$GRP_GROUP_ID" || return 1
		grp_set "$d/group_key" "$GRP_KEY" || return 1
		grp_set "$d/listen_addr" "$GRP_NET.$i" || return 1
		grp_set "$d/listen_port" "$GRP_PORT" || return 1
		for ((j = 1; j <= GRP_N; j++)); do
			[ "$j" = "$i" ] && continue
			mkdir "$d/peers/m$j" || { why "mkdir $d/peers/m$j"; return 1; }
			grp_set "$d/peers/m$j/addr" "$GRP_NET.$j" || return 1
			grp_set "$d/peers/m$j/node_id" "$j" || return 1
		done
	done
}

# grp_set_routing I VOL TEXT: write a routing table in ONE write()
grp_set_routing() {
	local f out
	f=$KNBD_CFS/nodes/m$1/volumes/$2/routing
	if out=$({ printf '%s\n' "$3" >"$f"; } 2>&1); then
		echo OK
	else
		errno_name "$out"
	fi
}

# grp_vol_add VOL SIZE EXTENT_SIZE ROUTING: the volume on every member, from a
# fresh empty backing file, routed and enabled (works on enabled nodes too)
grp_vol_add() {
	local vol=$1 size=$2 es=$3 rt=$4 i d b r
	for ((i = 1; i <= GRP_N; i++)); do
		d=$KNBD_CFS/nodes/m$i/volumes/$vol
		b=$KNBD_TMP/grp-m$i-$vol.img
		: >"$b" || { why "cannot create $b"; return 1; }
		mkdir "$d" || { why "mkdir $d"; return 1; }
		grp_set "$d/backing_path" "$b" || return 1
		grp_set "$d/size" "$size" || return 1
		grp_set "$d/extent_size" "$es" || return 1
		r=$(grp_set_routing "$i" "$vol" "$rt")
		[ "$r" = OK ] || { why "routing '$rt' on m$i/$vol: $r"; return 1; }
		grp_set "$d/enable" 1 || return 1
	done
}

# grp_node_enable I: enable member I from inside its namespace
grp_node_enable() {
	local out
	out=$(grp_in_ns "$1" sh -c "echo 1 > '$KNBD_CFS/nodes/m$1/enable'" 2>&1) ||
		{ why "enable m$1 in knbdtg$1: $out"; return 1; }
}

grp_node_disable() {
	with_timeout 60 sh -c "echo 0 > '$KNBD_CFS/nodes/m$1/enable'" ||
		{ why "disable m$1 failed or hung"; return 1; }
}

# grp_peer_state I J: link state (up/down/connecting) of member I towards J
grp_peer_state() {
	local k v
	read -r k v <"$KNBD_CFS/nodes/m$1/peers/m$2/state" 2>/dev/null
	[ "$k" = state ] && echo "$v"
}

# grp_links_up [I]: every link (of member I, or of all members) is up
# (no forks: it is polled)
grp_links_up() {
	local i j k v first=${1:-1} last=${1:-$GRP_N}
	for ((i = first; i <= last; i++)); do
		for ((j = 1; j <= GRP_N; j++)); do
			[ "$j" = "$i" ] && continue
			k=''
			v=''
			read -r k v <"$KNBD_CFS/nodes/m$i/peers/m$j/state" 2>/dev/null
			[ "$k $v" = "state up" ] || return 1
		done
	done
}

# grp_links_summary: "m1->m2=up m1->m3=up ..."
grp_links_summary() {
	local i j s=''
	for ((i = 1; i <= GRP_N; i++)); do
		for ((j = 1; j <= GRP_N; j++)); do
			[ "$j" = "$i" ] && continue
			s="$s m$i->m$j=$(grp_peer_state "$i" "$j")"
		done
	done
	echo "${s# }"
}

# grp_up: load modules, network, nodes, enable them all
grp_up() {
	knbd_load || return 1
	grp_net_up || return 1
	grp_nodes_create || return 1
}

grp_enable_all() {
	local i
	for ((i = 1; i <= GRP_N; i++)); do
		grp_node_enable "$i" || return 1
	done
}

# grp_stat I VOL KEY: one counter of a member's volume stats
grp_stat() {
	awk -v k="$3" '$1 == k { print $2; f = 1 } END { if (!f) print "" }' \
		"$KNBD_CFS/nodes/m$1/volumes/$2/stats" 2>/dev/null
}

# grp_attach DEV I VOL [CONNS]: nbd-client in the root namespace to member I
grp_attach() {
	grp_attach_addr "$1" "$GRP_NET.$2" "$3" "${4:-2}"
}

grp_detach() {
	nbd_detach "$1"
}

# dev_read DEV OFFSET LEN [OUTFILE]: direct read of LEN bytes at OFFSET (bounded)
dev_read() {
	with_timeout "${DEV_READ_TIMEOUT:-60}" dd if="$1" of="${4:-/dev/null}" bs="$3" count=1 \
		skip="$2" iflag=direct,skip_bytes status=none 2>/dev/null
}

# dev_md5 DEV OFFSET LEN: md5 of a range (direct, 4 MiB requests); empty on error
dev_md5() {
	local out
	out=$(with_timeout "${DEV_READ_TIMEOUT:-300}" bash -c \
		'set -o pipefail; dd if="$1" bs=4M skip="$2" count="$3" iflag=direct,skip_bytes,count_bytes status=none | md5sum' \
		_ "$1" "$2" "$3" 2>/dev/null) || return 1
	echo "${out%% *}"
}

# dev_write DEV OFFSET FILE: direct write of FILE at OFFSET (bounded)
dev_write() {
	with_timeout "${DEV_WRITE_TIMEOUT:-120}" dd if="$3" of="$1" bs=1M seek="$2" \
		oflag=direct,seek_bytes conv=notrunc,fsync status=none 2>/dev/null
}

# _grp_node_remove I: disable member I and remove its volumes, peers and node
_grp_node_remove() {
	local d=$KNBD_CFS/nodes/m$1 v rc=0
	[ -d "$d" ] || return 0
	{ echo 0 >"$d/enable"; } 2>/dev/null || rc=1
	for v in "$d"/volumes/* "$d"/peers/*; do
		[ -d "$v" ] || continue
		rmdir "$v" || { log "grp_teardown: rmdir $v failed"; rc=1; }
	done
	rmdir "$d" || { log "grp_teardown: rmdir $d failed"; rc=1; }
	return $rc
}

# grp_teardown: detach our nbd devices, remove the members (in parallel,
# bounded), rmmod knbd, remove the network and the backing files
grp_teardown() {
	local d i rc=0 deadline p
	local -a pids=()
	for d in "${GRP_DEVS[@]}"; do
		nbd_connected "$d" || [ -e "/sys/block/${d##*/}/pid" ] || continue
		nbd_detach "$d" >/dev/null 2>&1 || rc=1
	done
	GRP_DEVS=()
	if [ -d "$KNBD_CFS/nodes" ]; then
		for ((i = 1; i <= GRP_N; i++)); do
			_grp_node_remove "$i" &
			pids+=($!)
		done
		deadline=$((SECONDS + 120))
		for p in "${pids[@]}"; do
			while kill -0 "$p" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
				sleep 0.5
			done
			if kill -0 "$p" 2>/dev/null; then
				log "grp_teardown: removing a member hangs (pid $p)"
				rc=1
			else
				wait "$p" || rc=1
			fi
		done
	fi
	if knbd_loaded; then
		with_timeout 60 rmmod knbd 2>/dev/null || { log "grp_teardown: rmmod knbd failed"; rc=1; }
	fi
	grp_net_down
	rm -f "$KNBD_TMP"/grp-m*.img
	return $rc
}

# grp_monitor_start FILE [PERIOD]: background logger of the group's state
# (clients, links, nbd inflight, busy knbd workers) for diagnosing stalls;
# sets GRP_MON_PID. grp_monitor_stop ends it.
GRP_MON_PID=''
grp_monitor_start() {
	local f=$1 period=${2:-5}
	(
		while :; do
			{
				echo "=== $(date +%T) uptime $(cut -d' ' -f1 /proc/uptime)"
				for n in "$KNBD_CFS"/nodes/*/; do
					[ -d "$n" ] || continue
					echo "-- ${n%/}: $(tr '\n' ' ' <"$n/clients" 2>/dev/null)"
					for p in "$n"/peers/*/; do
						[ -d "$p" ] || continue
						echo "   peer ${p%/}: $(tr '\n' ' ' <"$p/state" 2>/dev/null)"
					done
				done
				for d in /sys/block/nbd*; do
					[ "$(cat "$d/size" 2>/dev/null)" = 0 ] && continue
					echo "   ${d##*/} inflight $(cat "$d/inflight" 2>/dev/null)"
				done
				ps -eo pid,stat,wchan:28,comm 2>/dev/null | awk '$4 ~ /knbd|nbd|fio|dd/ && $2 ~ /D/'
				# TCP queues/retransmits: where bytes wait (root ns = clients)
				d=0
				while read -r _ x _; do d=$((d + 0x$x)); done </proc/net/softnet_stat
				echo "   softnet drops: $d"
				ss -tnio state established '( dport = :10809 or sport = :10809 )' 2>/dev/null |
					awk 'NR > 1' | paste - - | awk '$1 > 0 || $2 > 0 || /retrans:[0-9]+\/[1-9]/' | sed 's/^/   root: /'
				for n in /run/netns/knbdtg*; do
					[ -e "$n" ] || continue
					nsenter --net="$n" ss -tnio state established 2>/dev/null |
						awk 'NR > 1' | paste - - | awk '$1 > 0 || $2 > 0 || /retrans:[0-9]+\/[1-9]/' | sed "s|^|   ${n##*/}: |"
				done
			} >>"$f" 2>&1
			sleep "$period"
		done
	) &
	GRP_MON_PID=$!
}

grp_monitor_stop() {
	[ -n "$GRP_MON_PID" ] && kill "$GRP_MON_PID" 2>/dev/null
	GRP_MON_PID=''
	return 0
}

# fio_json_get FILE PYEXPR: evaluate PYEXPR with j = fio's first job (JSON
# output, possibly after non-JSON lines)
fio_json_get() {
	python3 - "$1" "$2" <<'PY'
import json, sys
t = open(sys.argv[1]).read()
j = json.loads(t[t.index("{"):])["jobs"][0]
print(eval(sys.argv[2]))
PY
}

# file_4k FILE OFFSET: 4 KiB of FILE at a 4 KiB-aligned OFFSET on stdout
file_4k() {
	dd if="$1" bs=4096 count=1 skip=$(($2 / 4096)) status=none 2>/dev/null
}

# grp_attach_addr DEV ADDR VOL [CONNS]: nbd-client in the root namespace to
# ADDR (the group address, say), as grp_attach
grp_attach_addr() {
	local dev=$1 addr=$2 vol=$3 conns=${4:-2} out
	out=$(with_timeout 90 nbd-client "$addr" "$GRP_PORT" "$dev" -N "$vol" -C "$conns" \
		-t "$GRP_NBD_TIMEOUT" 2>&1) || {
		why "nbd-client $addr $dev -N $vol -C $conns failed: $(echo "$out" | tail -n 3)"
		return 1
	}
	GRP_DEVS+=("$dev")
	wait_until 20 nbd_connected "$dev" || { why "$dev has size 0 after nbd-client"; return 1; }
}
