# shellcheck shell=bash
# Helpers for a group address in front of the members of group_lib.sh, inside
# the VM guest: an IPVS virtual service in the root network namespace (where
# the clients run), NAT (masquerading) to the members.  Source it after
# group_lib.sh.  Documentation/client-allocation.md explains the setup.
#
#   root ns:  VIP 192.0.2.100/32 on the bridge knbdtbr0; virtual service
#             TCP 192.0.2.100:10809 -> 192.0.2.<i>:10809 (-m), weight 1
#   clients:  connect to 192.0.2.100:10809 from the root namespace; IPVS
#             schedules them in LOCAL_OUT, rewrites the destination and
#             sends them over the bridge; the member answers the client's
#             address (the VIP itself: it is local, so the kernel picks it
#             as the source), and IPVS restores the VIP as the source of the
#             replies in LOCAL_IN.  No forwarding, no conntrack needed.
#
#   ipvs_up SCHED [DEST...]   load modules, VIP, service with scheduler SCHED
#                             (knbd, rr, ...); DEST: member index or IPv4
#                             address (default: members 1..GRP_N)
#   ipvs_down                 remove the service and the VIP, unload ip_vs_knbd
#   ipvs_conn_dest CPORT      real server (address) of the IPVS connection
#                             from client port CPORT
#   ipvs_conn_member CPORT    the same as a member index (or the address)
#   ipvs_active DEST          ActiveConn of a real server of the service
#   ipvs_spread               "a/b/c": ActiveConn of members 1..GRP_N
#   ipvs_holder_start, ipvs_hold nbd EXPORT | tcp, ipvs_holder_close_all,
#   ipvs_holder_stop          one background Python process holding many
#                             client connections to the VIP (idle: no load)
#   ipvs_extra_up ADDR..., ipvs_extra_down
#                             namespace knbdtx on the bridge with ADDRs and a
#                             plain TCP listener on :10809: real servers no
#                             knbd node knows (unknown load)
#
# The module: $IPVS_KO, else ip_vs_knbd.ko next to $KNBD_KO (lib.sh).  It
# uses knbd_group_load() of knbd.ko: insmod after knbd, rmmod before it.

IPVS_VIP=${IPVS_VIP:-192.0.2.100}
IPVS_PORT=${IPVS_PORT:-10809}
IPVS_KO=${IPVS_KO:-$(dirname "$KNBD_KO")/ip_vs_knbd.ko}
IPVS_XNS=knbdtx		# "knbdt" prefix: knbd_force_cleanup removes it
IPVS_HOLDER_PID=''
IPVS_HOLDER_FD=''
IPVS_HOLDER_N=0
IPVS_HOLDER_OUT=$KNBD_TMP/ipvs-holder.out
IPVS_HOLD_PORT=''
IPVS_XPID=''

ipvs_knbd_loaded() { [ -d /sys/module/ip_vs_knbd ]; }

# ipvs_dest_addr DEST: a member index or an address -> the address
ipvs_dest_addr() {
	case $1 in
	*.*) echo "$1" ;;
	*) grp_ip "$1" ;;
	esac
}

# ipvs_load SCHED: ip_vs, the scheduler's module (ip_vs_knbd from the repo,
# after knbd.ko), IPVS sysctls
ipvs_load() {
	local sched=$1 out
	if [ ! -d /sys/module/ip_vs ]; then
		out=$(modprobe ip_vs 2>&1) || { why "modprobe ip_vs: $out"; return 1; }
	fi
	case $sched in
	knbd)
		knbd_loaded || knbd_load || return 1
		if ! ipvs_knbd_loaded; then
			[ -f "$IPVS_KO" ] || { why "$IPVS_KO missing (run make first)"; return 1; }
			out=$(insmod "$IPVS_KO" 2>&1) || { why "insmod $IPVS_KO: $out"; return 1; }
		fi
		;;
	*)
		if [ ! -d "/sys/module/ip_vs_$sched" ]; then
			out=$(modprobe "ip_vs_$sched" 2>&1) || { why "modprobe ip_vs_$sched: $out"; return 1; }
		fi
		;;
	esac
	# connections to a removed real server go at once instead of lingering
	echo 1 >/proc/sys/net/ipv4/vs/expire_nodest_conn 2>/dev/null
	return 0
}

# ipvs_unload_knbd: rmmod ip_vs_knbd (bounded); fails while a service uses it
ipvs_unload_knbd() {
	local out
	ipvs_knbd_loaded || return 0
	out=$(with_timeout 60 rmmod ip_vs_knbd 2>&1) || { why "rmmod ip_vs_knbd: $out"; return 1; }
	! ipvs_knbd_loaded || { why "ip_vs_knbd still loaded after rmmod"; return 1; }
}

ipvs_svc() { echo "$IPVS_VIP:$IPVS_PORT"; }

# ipvs_up SCHED [DEST...]: the virtual service, fresh (an old one is removed)
ipvs_up() {
	local sched=$1 d a out
	shift
	local -a dests=("$@")
	if [ ${#dests[@]} -eq 0 ]; then
		for ((d = 1; d <= GRP_N; d++)); do
			dests+=("$d")
		done
	fi
	ipvs_load "$sched" || return 1
	ip -4 addr show dev "$GRP_BR" 2>/dev/null | grep -q "inet $IPVS_VIP/" ||
		out=$(ip addr add "$IPVS_VIP/32" dev "$GRP_BR" 2>&1) ||
		{ why "VIP $IPVS_VIP on $GRP_BR: $out"; return 1; }
	ipvsadm -D -t "$(ipvs_svc)" >/dev/null 2>&1
	out=$(ipvsadm -A -t "$(ipvs_svc)" -s "$sched" 2>&1) ||
		{ why "ipvsadm -A -t $(ipvs_svc) -s $sched: $out"; return 1; }
	for d in "${dests[@]}"; do
		a=$(ipvs_dest_addr "$d")
		out=$(ipvsadm -a -t "$(ipvs_svc)" -r "$a:$IPVS_PORT" -m -w 1 2>&1) ||
			{ why "ipvsadm -a -r $a:$IPVS_PORT -m: $out"; return 1; }
	done
	log "ipvs: $(ipvs_svc) -s $sched -> ${dests[*]}"
}

# ipvs_down: service and VIP gone, ip_vs_knbd unloaded (so that knbd can be);
# safe to call when nothing is up
ipvs_down() {
	if [ -d /sys/module/ip_vs ]; then
		ipvsadm -D -t "$(ipvs_svc)" >/dev/null 2>&1
	fi
	ip addr del "$IPVS_VIP/32" dev "$GRP_BR" >/dev/null 2>&1
	if ipvs_knbd_loaded && ! ipvsadm -Ln 2>/dev/null | grep -qE '^(TCP|UDP|SCTP|FWM) .* knbd( |$)'; then
		with_timeout 60 rmmod ip_vs_knbd >/dev/null 2>&1 || log "ipvs_down: rmmod ip_vs_knbd failed"
	fi
	return 0
}

# ipvs_conn_dest CPORT: "ADDR" of the real server the connection from client
# port CPORT to the VIP went to (an ESTABLISHED entry first); empty if none
ipvs_conn_dest() {
	ipvsadm -Lcn 2>/dev/null | awk -v p="$1" -v v="$(ipvs_svc)" '
		$1 == "TCP" && $5 == v {
			n = split($4, a, ":")
			if (a[n] != p)
				next
			sub(/:[0-9]+$/, "", $6)
			if ($3 == "ESTABLISHED") { print $6; found = 1; exit }
			if (other == "") other = $6
		}
		END { if (!found && other != "") print other }'
}

# ipvs_conn_member CPORT: member index of the connection's real server, or
# its address if it is not a member, or "?" if there is no such connection
ipvs_conn_member() {
	local a i
	a=$(ipvs_conn_dest "$1")
	[ -n "$a" ] || { echo "?"; return 0; }
	for ((i = 1; i <= GRP_N; i++)); do
		[ "$a" = "$(grp_ip "$i")" ] && { echo "$i"; return 0; }
	done
	echo "$a"
}

# ipvs_active DEST: ActiveConn of a real server of the service (0 if absent)
ipvs_active() {
	local a
	a=$(ipvs_dest_addr "$1")
	ipvsadm -Ln -t "$(ipvs_svc)" 2>/dev/null |
		awk -v r="$a:$IPVS_PORT" '$1 == "->" && $2 == r { print $5; f = 1 } END { if (!f) print 0 }'
}

# ipvs_spread: ActiveConn of members 1..GRP_N, "a/b/c"
ipvs_spread() {
	local i s=''
	for ((i = 1; i <= GRP_N; i++)); do
		s="$s/$(ipvs_active "$i")"
	done
	echo "${s#/}"
}

# ------------------------------------------------------- connection holder --

# Reads commands on stdin: "open nbd EXPORT" (connect, NBD handshake up to
# the transmission phase, then idle), "open tcp" (connect only),
# "closeall"; answers "OPEN n LOCALPORT" / "FAIL n reason" / "CLOSEDALL".
# shellcheck disable=SC2016
IPVS_HOLDER_PY='
import socket, sys
sys.path.insert(0, sys.argv[1])
from test_proto import Conn
host, port = sys.argv[2], int(sys.argv[3])
held, n = [], 0
while True:
    line = sys.stdin.readline()
    if not line:
        break
    w = line.split()
    if not w:
        continue
    if w[0] == "open":
        n += 1
        try:
            if w[1] == "tcp":
                s = socket.create_connection((host, port), timeout=30)
            else:
                c = Conn(host, port)
                c.start()
                c.go(w[2])
                s = c.sock
            held.append(s)
            print("OPEN %d %d" % (n, s.getsockname()[1]), flush=True)
        except Exception as e:
            print("FAIL %d %s: %s" % (n, type(e).__name__, e), flush=True)
    elif w[0] == "closeall":
        for s in held:
            s.close()
        held = []
        print("CLOSEDALL", flush=True)
'

# ipvs_holder_start [HOST] [PORT]: the holder, connecting to HOST:PORT
# (default the VIP)
ipvs_holder_start() {
	local fifo=$KNBD_TMP/ipvs-holder.fifo
	ipvs_holder_stop
	rm -f "$fifo"
	mkfifo "$fifo" || { why "mkfifo $fifo"; return 1; }
	: >"$IPVS_HOLDER_OUT"
	python3 -c "$IPVS_HOLDER_PY" "$KNBD_TESTS_DIR" "${1:-$IPVS_VIP}" "${2:-$IPVS_PORT}" \
		<"$fifo" >>"$IPVS_HOLDER_OUT" 2>&1 &
	IPVS_HOLDER_PID=$!
	exec {IPVS_HOLDER_FD}>"$fifo"
	IPVS_HOLDER_N=0
}

# ipvs_hold nbd EXPORT | ipvs_hold tcp: one more held connection; its client
# port in IPVS_HOLD_PORT (call it directly, not in $(...))
ipvs_hold() {
	local line re
	[ -n "$IPVS_HOLDER_FD" ] || { why "holder not started"; return 1; }
	IPVS_HOLDER_N=$((IPVS_HOLDER_N + 1))
	IPVS_HOLD_PORT=''
	echo "open $*" >&"$IPVS_HOLDER_FD" || { why "holder gone"; return 1; }
	re="^(OPEN|FAIL) $IPVS_HOLDER_N "
	wait_until 90 grep -qE "$re" "$IPVS_HOLDER_OUT" ||
		{ why "holder: no answer to open #$IPVS_HOLDER_N: $(tail -n 3 "$IPVS_HOLDER_OUT")"; return 1; }
	line=$(grep -E "$re" "$IPVS_HOLDER_OUT" | head -n 1)
	case $line in
	OPEN*) IPVS_HOLD_PORT=${line##* } ;;
	*) why "holder: $line"; return 1 ;;
	esac
}

_ipvs_closed_more() { [ "$(grep -c '^CLOSEDALL' "$IPVS_HOLDER_OUT")" -gt "$1" ]; }

# ipvs_holder_close_all: close every held connection (the holder stays)
ipvs_holder_close_all() {
	local before
	[ -n "$IPVS_HOLDER_FD" ] || return 0
	before=$(grep -c '^CLOSEDALL' "$IPVS_HOLDER_OUT")
	echo closeall >&"$IPVS_HOLDER_FD" || return 1
	wait_until 30 _ipvs_closed_more "$before" || { why "holder did not close its connections"; return 1; }
}

ipvs_holder_stop() {
	if [ -n "$IPVS_HOLDER_FD" ]; then
		exec {IPVS_HOLDER_FD}>&-
		IPVS_HOLDER_FD=''
	fi
	if [ -n "$IPVS_HOLDER_PID" ]; then
		wait_until 10 pid_gone "$IPVS_HOLDER_PID" || kill -KILL "$IPVS_HOLDER_PID" 2>/dev/null
		wait "$IPVS_HOLDER_PID" 2>/dev/null
		IPVS_HOLDER_PID=''
	fi
	return 0
}

# ------------------------------------------ real servers unknown to knbd --

# shellcheck disable=SC2016
IPVS_LISTENER_PY='
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(128)
print("LISTENING", flush=True)
held = []
while True:
    c, _ = s.accept()
    held.append(c)
'

# ipvs_extra_up ADDR...: namespace knbdtx on the bridge with these addresses
# and a plain TCP listener (no NBD) on :IPVS_PORT
ipvs_extra_up() {
	local a ns=$IPVS_XNS out=$KNBD_TMP/ipvs-listener.out
	ip netns add "$ns" || { why "ip netns add $ns"; return 1; }
	ip link add knbdtvx type veth peer name knbdtex || { why "veth knbdtvx"; return 1; }
	ip link set knbdtex netns "$ns" || { why "veth into $ns"; return 1; }
	ip link set knbdtvx master "$GRP_BR" && ip link set knbdtvx up || { why "knbdtvx on the bridge"; return 1; }
	for a; do
		ip -n "$ns" addr add "$a/24" dev knbdtex || { why "$a in $ns"; return 1; }
	done
	ip -n "$ns" link set knbdtex up && ip -n "$ns" link set lo up || { why "links up in $ns"; return 1; }
	nsenter --net="/run/netns/$ns" python3 -c "$IPVS_LISTENER_PY" "$IPVS_PORT" >"$out" 2>&1 &
	IPVS_XPID=$!
	wait_until 60 grep -q LISTENING "$out" || { why "listener in $ns: $(cat "$out")"; return 1; }
}

ipvs_extra_down() {
	if [ -n "$IPVS_XPID" ]; then
		kill -KILL "$IPVS_XPID" 2>/dev/null
		wait "$IPVS_XPID" 2>/dev/null
		IPVS_XPID=''
	fi
	ip netns pids "$IPVS_XNS" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
	ip netns del "$IPVS_XNS" 2>/dev/null
	ip link del knbdtvx 2>/dev/null
	return 0
}

# ipvs_group_cleanup: the EXIT trap of a group test behind the group address:
# its background PIDS killed, the virtual service and the group torn down
ipvs_group_cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	ipvs_down
	grp_teardown >/dev/null 2>&1
}
