#!/bin/bash
# configfs files past one page, and the volume latency counters:
#
#   cfgbig_setup            node cb (700 connections, one volume) and node rt
#                           (peers 2 and 3, not enabled) with a volume of 4096
#                           extents of 64 KiB
#   cfgbig_clients_600      600 client connections open at once: clients lists
#                           600 lines (several pages), each well formed, the
#                           ids all distinct; read again and again while they
#                           close: every read whole lines, no NUL, no torn line
#   cfgbig_stats_latency    lat_ops grew by exactly the client requests served
#                           (16 WRITEs + 600 READs), lat_us_sum grew, the mean
#                           is sane
#   cfgbig_routing_table    a table of 4096 one-extent ranges alternating
#                           members 1 and 2 (> 3 pages) written to
#                           routing_table: routing_status "ok epoch 1", read
#                           back whole and equal (comment lines aside); routing
#                           (one page) ends in "# ... N more lines: read
#                           routing_table" with N right
#   cfgbig_routing_refused  big tables refused at close leave the old table
#                           and routing_status names the reason: overlapping
#                           ranges, an unknown member, over 4 MiB (EFBIG in the
#                           status; over the attribute's bound, write(2) fails
#                           EFBIG), an owner change of the enabled volume
#                           (EBUSY); the same owners with a new epoch are
#                           published; a routing write records its outcome too
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

PORT=10840
NCONNS=600
CB=$(knbd_node_dir cb)
RT=$(knbd_node_dir rt)
BIG=$RT/volumes/big
NEXT=4096		# extents of big
PY=$here/scale_client.py
PIDS=()

cleanup() {
	kill_bg "${PIDS[@]}" 2>/dev/null
	knbd_unload >/dev/null 2>&1
}
trap cleanup EXIT

chk_setup() {
	knbd_load || return 1
	knbd_backing "$KNBD_TMP/cb.img" $((16 << 20)) || return 1
	knbd_node_create cb "$PORT" 127.0.0.1 $((NCONNS + 100)) || return 1
	knbd_vol_create cb v "$KNBD_TMP/cb.img" || return 1
	knbd_node_enable cb || return 1
	knbd_node_create rt $((PORT + 1)) 127.0.0.1 || return 1
	for i in 2 3; do
		mkdir "$RT/peers/p$i" || { why "mkdir peer p$i"; return 1; }
		cfs_set "$RT/peers/p$i/addr" "127.0.0.$i" || return 1
		cfs_set "$RT/peers/p$i/node_id" "$i" || return 1
	done
	knbd_backing "$KNBD_TMP/big.img" $((NEXT << 16)) || return 1
	knbd_vol_create rt big "$KNBD_TMP/big.img" size=$((NEXT << 16)) extent_size=64K enable=0 || return 1
	[ "$(cfs_get "$BIG/routing_status")" = none ] ||
		{ why "routing_status before any table: '$(cfs_get "$BIG/routing_status")', want none"; return 1; }
	[ "$(wc -c <"$BIG/routing_table")" = 0 ] || { why "routing_table without a table is not empty"; return 1; }
}

# clients_check FILE: every line of a clients read whole; prints the line count.
# clients_check --until-empty FILE: read FILE again and again (120 s at most)
# until it lists nothing, each read checked; prints "READS PARTIAL" (reads
# with some of the connections gone).
clients_check() {
	python3 - "$@" <<'EOF'
import re, sys, time
LINE = re.compile(rb"^\d+ \S+ \S+ state=[a-z]+ inflight=\d+ ops=\d+ bytes=\d+ "
                  rb"load=\d+\.\d{3} lat_us=\d+ "
                  rb"client=(?:[0-9a-f]{8} movable=(?:multi|proven|no)|- movable=-) *$")

def check(data):
    if b"\0" in data:
        sys.exit("NUL byte in clients")
    if data and not data.endswith(b"\n"):
        sys.exit("clients does not end with a newline")
    lines = data.split(b"\n")[:-1]
    for i, l in enumerate(lines):
        last = i == len(lines) - 1
        # padding, when connections closed between configfs' sizing and
        # filling calls: trailing blanks on the last line, or a blank one
        if LINE.match(l) and (last or not l.endswith(b" ")):
            continue
        if last and not l.strip():
            continue
        sys.exit("torn or bad line %d of %d: %r" % (i + 1, len(lines), l[:200]))
    return len([l for l in lines if l.strip()])

if sys.argv[1] != "--until-empty":
    print(check(open(sys.argv[1], "rb").read()))
    sys.exit(0)
reads = partial = 0
deadline = time.monotonic() + 120
while True:
    with open(sys.argv[2], "rb") as f:
        n = check(f.read())
    reads += 1
    if n == 0:
        break
    partial += n < 600
    if time.monotonic() > deadline:
        sys.exit("clients still lists %d connections after 120 s" % n)
print(reads, partial)
EOF
}

LAT0=''
chk_clients_600() {
	local hold=$KNBD_TMP/cb-hold out=$KNBD_OUT/cfgbig-many.txt snap=$KNBD_TMP/clients.txt
	local pid n ids r rpid rout=$KNBD_TMP/clients-reads.txt
	LAT0="$(vol_stat cb v lat_ops) $(vol_stat cb v lat_us_sum)"
	# 16 blocks of a known pattern for the READs of "many"
	with_timeout 120 python3 "$PY" pipeline 127.0.0.1 "$PORT" v --conns 1 --count 16 --op write \
		>"$KNBD_OUT/cfgbig-fill.txt" 2>&1 || { why "fill: $(tail -n 2 "$KNBD_OUT/cfgbig-fill.txt")"; return 1; }
	rm -f "$hold"
	python3 "$PY" many 127.0.0.1 "$PORT" v --count "$NCONNS" --blocks 16 --hold 10 \
		--hold-file "$hold" --timeout 300 >"$out" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	wait_until 300 test -e "$hold" ||
		{ why "not all $NCONNS connections open: $(tail -n 2 "$out" | tr '\n' ' ')"; return 1; }
	cat "$CB/clients" >"$snap" || { why "reading clients failed"; return 1; }
	# read again and again from now on, while the clients read and close
	clients_check --until-empty "$CB/clients" >"$rout" 2>&1 &
	rpid=$!
	PIDS+=("$rpid")
	n=$(clients_check "$snap" 2>&1) || { why "clients with $NCONNS open: $n"; return 1; }
	log "    clients: $n lines, $(wc -c <"$snap") bytes"
	[ "$n" = "$NCONNS" ] || { why "clients lists $n connections, want $NCONNS"; return 1; }
	[ "$(wc -c <"$snap")" -gt 16384 ] || { why "clients is only $(wc -c <"$snap") bytes"; return 1; }
	ids=$(awk '{ print $1 }' "$snap" | sort -u | wc -l)
	[ "$ids" = "$NCONNS" ] || { why "$ids distinct connection ids in clients, want $NCONNS"; return 1; }
	[ "$(awk '$3 == "v" && $4 == "state=transmission"' "$snap" | wc -l)" = "$NCONNS" ] ||
		{ why "not every line is a connection to v in transmission: $(grep -v ' v state=transmission' "$snap" | head -n 2)"; return 1; }
	# every read while the clients read and closed stayed whole lines
	wait "$rpid" || { why "clients while connections close: $(tail -n 1 "$rout")"; return 1; }
	r=$(tail -n 1 "$rout")
	log "    ${r% *} reads of clients while the connections were used and closed, ${r#* } with some gone: all whole lines"
	wait "$pid" || { why "the $NCONNS clients: $(grep -E '^FAIL' "$out")"; return 1; }
	grep '^ok:' "$out" | sed 's/^/    /' >&2
}

chk_stats_latency() {
	local ops0=${LAT0% *} sum0=${LAT0#* } ops sum
	[ -n "$LAT0" ] || { why "no sample before the I/O"; return 1; }
	ops=$(vol_stat cb v lat_ops)
	sum=$(vol_stat cb v lat_us_sum)
	log "    lat_ops $ops0 -> $ops, lat_us_sum $sum0 -> $sum"
	[ -n "$ops" ] && [ -n "$sum" ] || { why "no lat_ops/lat_us_sum in stats: $(tr '\n' ' ' <"$CB/volumes/v/stats")"; return 1; }
	[ $((ops - ops0)) = $((16 + NCONNS)) ] ||
		{ why "lat_ops grew by $((ops - ops0)), want $((16 + NCONNS)) (16 WRITEs + $NCONNS READs)"; return 1; }
	[ "$sum" -gt "$sum0" ] || { why "lat_us_sum did not grow ($sum0 -> $sum)"; return 1; }
	# a mean between 1 us and 10 s per request
	[ $(((sum - sum0) / (ops - ops0))) -lt 10000000 ] && [ $((sum - sum0)) -ge $((ops - ops0)) ] ||
		{ why "mean latency $(((sum - sum0) / (ops - ops0))) us is not plausible"; return 1; }
}

# table FILE EPOCH [OWNER_EXPR]: NEXT one-extent ranges, owner by an awk expression of i
table() {
	awk -v n="$NEXT" -v e="$2" "BEGIN { print \"epoch \" e; for (i = 0; i < n; i++) print i, ${3:-1 + i % 2} }" >"$1"
}

# write_table FILE: cat FILE > routing_table (published at close); prints OK or the errno name
write_table() {
	local err
	if err=$(cat "$1" 2>&1 >"$BIG/routing_table"); then
		echo OK
	else
		errno_name "$err"
	fi
}

# status_is TEXT: routing_status
status_is() {
	local s
	s=$(cfs_get "$BIG/routing_status")
	[ "$s" = "$1" ] || { why "routing_status '$s', want '$1'"; return 1; }
}

# table_is FILE: routing_table reads FILE back (comment lines aside)
table_is() {
	grep -v '^#' "$BIG/routing_table" >"$KNBD_TMP/rt-read.txt"
	cmp -s "$1" "$KNBD_TMP/rt-read.txt" ||
		{ why "routing_table reads $(wc -c <"$KNBD_TMP/rt-read.txt") bytes, not the $(wc -c <"$1") of $(basename "$1"): $(diff "$1" "$KNBD_TMP/rt-read.txt" | head -n 3 | tr '\n' ' ')"; return 1; }
}

chk_routing_table() {
	local t1=$KNBD_TMP/t1.txt page=$KNBD_TMP/rt-page.txt r shown more
	table "$t1" 1
	[ "$(wc -c <"$t1")" -gt $((3 * 4096)) ] || { why "table only $(wc -c <"$t1") bytes"; return 1; }
	r=$(write_table "$t1")
	[ "$r" = OK ] || { why "writing $(wc -c <"$t1") bytes to routing_table: $r"; return 1; }
	status_is "ok epoch 1" || return 1
	table_is "$t1" || return 1
	sed -n 1p "$BIG/routing_table" | grep -q "^# checksum [0-9a-f]\{8\} extent_size 65536 extents $NEXT members 2$" ||
		{ why "routing_table header: $(sed -n 1p "$BIG/routing_table")"; return 1; }
	# routing (one page) is cut and says how to get the rest
	cat "$BIG/routing" >"$page"
	[ "$(wc -c <"$page")" -le 4096 ] || { why "routing read $(wc -c <"$page") bytes"; return 1; }
	shown=$(grep -cv '^#\|^epoch' "$page")
	more=$(tail -n 1 "$page" | sed -n 's/^# \.\.\. \([0-9]*\) more lines: read routing_table$/\1/p')
	[ -n "$more" ] || { why "routing's last line: '$(tail -n 1 "$page")'"; return 1; }
	[ $((shown + more)) = "$NEXT" ] || { why "routing shows $shown lines and says $more more, want $NEXT in all"; return 1; }
	head -n "$((shown + 2))" "$page" | cmp -s - <(sed -n "1,$((shown + 2))p" "$BIG/routing_table") ||
		{ why "routing and routing_table differ in their first lines"; return 1; }
}

# refused FILE STATUS: FILE written to routing_table is refused with STATUS; epoch 1 stays
refused() {
	local r
	r=$(write_table "$1")
	[ "$r" = OK ] || { why "write(2)/close of $(basename "$1"): $r (the table is refused at close only)"; return 1; }
	status_is "$2" || return 1
	table_is "$KNBD_TMP/${3:-t1}.txt" || return 1
}

chk_routing_refused() {
	local t=$KNBD_TMP/bad.txt r
	# overlapping ranges, at the end of a big table
	table "$t" 2
	echo "17 1" >>"$t"
	refused "$t" "refused: extent ranges overlap (EINVAL)" || return 1
	# a member that is neither this node nor a peer
	table "$t" 2 "i == $((NEXT - 1)) ? 9 : 1 + i % 2"
	refused "$t" "refused: names member 9, which is neither this node (1) nor a configured peer (EINVAL)" || return 1
	# 4 MiB + 1 bytes of text: over the limit, refused at close
	table "$t" 2
	python3 -c 'import os, sys; n = (4 << 20) + 1 - os.path.getsize(sys.argv[1]); open(sys.argv[1], "ab").write(b"#" * (n - 1) + b"\n")' "$t"
	[ "$(wc -c <"$t")" = $(((4 << 20) + 1)) ] || { why "test table is $(wc -c <"$t") bytes"; return 1; }
	refused "$t" "refused: table text of 4194305 bytes, more than 4194304 (EFBIG)" || return 1
	# past the attribute's bound write(2) fails
	head -c $((5 << 20)) /dev/zero | tr '\0' '#' >"$t"
	r=$(write_table "$t")
	[ "$r" = EFBIG ] || { why "writing 5 MiB to routing_table: $r, want EFBIG"; return 1; }
	table_is "$KNBD_TMP/t1.txt" || return 1
	# enabled: an owner change is refused (no routing_force at this size)...
	cfs_set "$BIG/enable" 1 || return 1
	table "$t" 2 "2 - i % 2"
	refused "$t" "refused: it moves $NEXT extent(s) of the enabled volume, first extent 0 (offset 0) from member 1 to member 2; knbd moves no data, write the table to routing_force to publish it anyway (EBUSY)" || return 1
	# ...the same owners with a new epoch are published
	table "$KNBD_TMP/t2.txt" 2
	r=$(write_table "$KNBD_TMP/t2.txt")
	[ "$r" = OK ] || { why "epoch 2, same owners: $r"; return 1; }
	status_is "ok epoch 2" || return 1
	table_is "$KNBD_TMP/t2.txt" || return 1
	# the text attribute records its outcome too
	r=$(cfs_try "$BIG/routing" "epoch 1; stripe 1 2")
	[ "$r" = EINVAL ] || { why "an older epoch through routing: $r, want EINVAL"; return 1; }
	status_is "refused: epoch 1 is older than the current 2 (EINVAL)" || return 1
	cfs_set "$BIG/enable" 0 || return 1
}

# knbd_unconfig leaves peers: they go first
chk_teardown() {
	rmdir "$RT"/peers/p* 2>/dev/null
	knbd_unload
}

t_run cfgbig_setup chk_setup
t_run cfgbig_clients_600 chk_clients_600
t_run cfgbig_stats_latency chk_stats_latency
t_run cfgbig_routing_table chk_routing_table
t_run cfgbig_routing_refused chk_routing_refused
t_run cfgbig_teardown chk_teardown
t_done
