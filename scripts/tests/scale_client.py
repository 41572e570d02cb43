#!/usr/bin/env python3
"""Raw NBD clients for knbd's scale tests (test_scale.sh), in the VM.

  scale_client.py many HOST PORT EXPORT --count N --offset O
      Open N connections at once (each through the whole handshake) and keep
      them all open; then send one 4 KiB READ on every one of them, collect
      the N replies and check each block's bytes (written by "pipeline
      --op write" with the same pattern).

  scale_client.py pipeline HOST PORT EXPORT --conns C --count N --offset O
                  --op write|read
      N requests of 4 KiB at consecutive blocks from O, spread over C
      connections, all sent as fast as the sockets take them while replies
      are read: a WRITE of each block's pattern, or a READ that checks it.

  scale_client.py stuck HOST PORT EXPORT --conns C --reqs R --len L
                  --expect-close SECS --window W
      C connections that each pipeline R READs of L bytes and never read a
      reply.  Waits for the server to close them: each must be closed after
      SECS - 1 and before SECS + W seconds (from when it stopped reading).

Each prints "ok: ..." lines and a last line "result: {json}"; the exit
status is 1 on any failure (an error reply, wrong data, a connection that
was not served or not closed in time).
"""

import argparse
import fcntl
import json
import random
import resource
import select
import socket
import struct
import sys
import termios
import time

sys.path.insert(0, __import__("os").path.dirname(__file__))
from nbdwire import W  # noqa: E402

BS = 4096
TIMEOUT = 60.0


class Fail(Exception):
    pass


def ok(msg):
    print("ok: " + msg, flush=True)


def pattern(off):
    """The bytes of the 4 KiB block at volume offset @off."""
    return random.Random(off).randbytes(BS)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise Fail("connection closed during the handshake")
        buf += chunk
    return buf


def handshake(host, port, export):
    s = socket.create_connection((host, port), timeout=TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    magic, opt_magic, _ = struct.unpack(">QQH", recv_exact(s, 18))
    if magic != W.MAGIC_INIT or opt_magic != W.MAGIC_IHAVEOPT:
        raise Fail("bad greeting")
    s.sendall(struct.pack(">I", W.CL_FLAG_FIXED_NEWSTYLE | W.CL_FLAG_NO_ZEROES))
    name = export.encode()
    data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
    s.sendall(struct.pack(">QII", W.MAGIC_IHAVEOPT, W.OPT_GO, len(data)) + data)
    while True:
        _, _, rtype, rlen = struct.unpack(">QIII", recv_exact(s, 20))
        recv_exact(s, rlen)
        if rtype == W.REP_ACK:
            return s
        if rtype & W.REP_FLAG_ERROR:
            raise Fail("GO refused: %#x" % rtype)


def request(cmd, handle, offset, length, payload=b""):
    return struct.pack(">IHHQQI", W.MAGIC_REQUEST, 0, cmd, handle, offset, length) + payload


class Stream:
    """One connection's outgoing bytes and incoming replies, non-blocking."""

    def __init__(self, sock):
        self.sock = sock
        sock.setblocking(False)
        self.out = bytearray()
        self.inb = bytearray()
        self.pending = {}	# handle -> (cmd, offset)

    def queue(self, cmd, handle, offset, payload=b""):
        self.out += request(cmd, handle, offset, BS, payload)
        self.pending[handle] = (cmd, offset)

    def replies(self):
        """Complete replies in the input: (handle, error, data)."""
        out = []
        while len(self.inb) >= 16:
            magic, err, handle = struct.unpack(">IIQ", self.inb[:16])
            if magic != W.MAGIC_SIMPLE_REPLY:
                raise Fail("bad reply magic %#x" % magic)
            if handle not in self.pending:
                raise Fail("reply for unknown handle %#x" % handle)
            cmd, _ = self.pending[handle]
            need = 16 + (BS if cmd == W.CMD_READ and not err else 0)
            if len(self.inb) < need:
                break
            out.append((handle, err, bytes(self.inb[16:need])))
            del self.inb[:need]
        return out


def run_streams(streams, deadline):
    """Send everything and collect every reply; returns (handle, err, data, stream)."""
    done = []
    left = sum(len(st.pending) for st in streams)
    by_fd = {st.sock.fileno(): st for st in streams}
    poller = select.poll()
    for st in streams:
        poller.register(st.sock, select.POLLIN | (select.POLLOUT if st.out else 0))
    while left:
        if time.monotonic() > deadline:
            raise Fail("%d replies missing at the deadline" % left)
        for fd, ev in poller.poll(1000):
            st = by_fd[fd]
            if ev & select.POLLOUT and st.out:
                try:
                    n = st.sock.send(st.out)
                    del st.out[:n]
                except BlockingIOError:
                    pass
                if not st.out:
                    poller.modify(st.sock, select.POLLIN)
            if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                try:
                    chunk = st.sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                except ConnectionError as e:
                    raise Fail("connection lost: %s (%d replies missing)" % (e, left))
                if not chunk:
                    raise Fail("server closed a connection (%d replies missing)" % left)
                st.inb += chunk
                for handle, err, data in st.replies():
                    cmd, off = st.pending.pop(handle)
                    done.append((cmd, off, err, data))
                    left -= 1
    return done


def check(done):
    errors = sum(1 for _, _, err, _ in done if err)
    bad = [off for cmd, off, err, data in done
           if cmd == W.CMD_READ and not err and data != pattern(off)]
    if errors:
        raise Fail("%d of %d requests failed" % (errors, len(done)))
    if bad:
        raise Fail("%d of %d READs returned wrong data (first at offset %d)"
                   % (len(bad), len(done), bad[0]))


def cmd_pipeline(a):
    streams = [Stream(handshake(a.host, a.port, a.export)) for _ in range(a.conns)]
    cmd = W.CMD_WRITE if a.op == "write" else W.CMD_READ
    for i in range(a.count):
        off = a.offset + i * BS
        streams[i % a.conns].queue(cmd, i + 1, off, pattern(off) if cmd == W.CMD_WRITE else b"")
    t0 = time.monotonic()
    done = run_streams(streams, t0 + a.timeout)
    secs = time.monotonic() - t0
    check(done)
    ok("%d %ss over %d connections in %.2f s, all answered, data right"
       % (a.count, a.op.upper(), a.conns, secs))
    return {"requests": a.count, "seconds": round(secs, 3)}


def cmd_many(a):
    lim = a.count + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < lim:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(lim, soft), max(lim, hard)))
    t0 = time.monotonic()
    socks = []
    for i in range(a.count):
        socks.append(handshake(a.host, a.port, a.export))
    t1 = time.monotonic()
    ok("%d connections open, every handshake done, in %.1f s" % (len(socks), t1 - t0))
    if a.hold_file:
        with open(a.hold_file, "w") as f:
            f.write("%d\n" % len(socks))
    if a.hold:
        time.sleep(a.hold)
    streams = [Stream(s) for s in socks]
    for i, st in enumerate(streams):
        st.queue(W.CMD_READ, i + 1, a.offset + (i % a.blocks) * BS)
    done = run_streams(streams, time.monotonic() + a.timeout)
    t2 = time.monotonic()
    check(done)
    ok("one READ on each of the %d connections: all answered, data right, in %.1f s"
       % (len(done), t2 - t1))
    for s in socks:
        s.close()
    return {"connections": len(socks), "connect_s": round(t1 - t0, 1),
            "serve_s": round(t2 - t1, 1)}


TCP_CLOSED = (7, 8, 9)	# CLOSE, CLOSE_WAIT, LAST_ACK


def tcp_state(s):
    return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]


def cmd_stuck(a):
    socks = [handshake(a.host, a.port, a.export) for _ in range(a.conns)]
    for s in socks:
        s.setblocking(False)
    reqs = b"".join(request(W.CMD_READ, i + 1, (i * a.len) % a.size, a.len)
                    for i in range(a.reqs))
    for s in socks:
        sent = 0
        t = time.monotonic()
        while sent < len(reqs) and time.monotonic() - t < 10:
            try:
                sent += s.send(reqs[sent:])
            except BlockingIOError:
                time.sleep(0.05)
    # Stuck once the server can send no more: our receive queues stop growing.
    last, since = -1, time.monotonic()
    while time.monotonic() - since < 1.5:
        queued = sum(struct.unpack("i", fcntl.ioctl(s, termios.FIONREAD, b"\0" * 4))[0]
                     for s in socks)
        if queued != last:
            last, since = queued, time.monotonic()
        time.sleep(0.1)
    t0 = since
    ok("%d connections sent %d READs of %d bytes each and read nothing (%d bytes of"
       " replies wait in their receive queues)" % (a.conns, a.reqs, a.len, last))
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write("stuck\n")
    closed = {}
    while len(closed) < len(socks) and time.monotonic() - t0 < a.expect_close + a.window:
        for i, s in enumerate(socks):
            if i not in closed and tcp_state(s) in TCP_CLOSED:
                closed[i] = time.monotonic() - t0
        time.sleep(0.2)
    times = sorted(closed.values())
    res = {"closed": len(closed), "of": len(socks), "after_s": [round(x, 1) for x in times]}
    if len(closed) < len(socks):
        raise Fail("%d of %d stuck connections still open after %d s (closed after %s)"
                   % (len(socks) - len(closed), len(socks), a.expect_close + a.window, times))
    if times[0] < a.expect_close - 1:
        raise Fail("a stuck connection was closed after %.1f s, before io_timeout (%d s)"
                   % (times[0], a.expect_close))
    ok("all %d stuck connections closed by the server after %.1f..%.1f s (io_timeout %d s)"
       % (len(socks), times[0], times[-1], a.expect_close))
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("many", "pipeline", "stuck"):
        sp = sub.add_parser(name)
        sp.add_argument("host")
        sp.add_argument("port", type=int)
        sp.add_argument("export")
        sp.add_argument("--timeout", type=float, default=300)
    sub.choices["many"].add_argument("--count", type=int, required=True)
    sub.choices["many"].add_argument("--offset", type=int, default=0)
    sub.choices["many"].add_argument("--blocks", type=int, default=1000,
                                     help="blocks written at --offset (reads cycle over them)")
    sub.choices["many"].add_argument("--hold", type=float, default=0,
                                     help="seconds to keep them all open before the READs")
    sub.choices["many"].add_argument("--hold-file", help="written once all are open")
    sp = sub.choices["pipeline"]
    sp.add_argument("--conns", type=int, default=1)
    sp.add_argument("--count", type=int, required=True)
    sp.add_argument("--offset", type=int, default=0)
    sp.add_argument("--op", choices=("read", "write"), required=True)
    sp = sub.choices["stuck"]
    sp.add_argument("--conns", type=int, default=8)
    sp.add_argument("--reqs", type=int, default=256)
    sp.add_argument("--len", type=int, default=128 << 10)
    sp.add_argument("--size", type=int, required=True, help="volume size")
    sp.add_argument("--expect-close", type=int, required=True, help="the node's io_timeout")
    sp.add_argument("--window", type=int, default=15, help="allowed lateness, seconds")
    sp.add_argument("--ready-file", help="written once the connections are stuck")
    a = p.parse_args()
    return run_cmd({"many": cmd_many, "pipeline": cmd_pipeline, "stuck": cmd_stuck}, a)


def run_cmd(cmds, a):
    """Run cmds[a.cmd](a); print its "result: JSON" line (or the error); exit status."""
    try:
        res = cmds[a.cmd](a)
    except (Fail, OSError) as e:
        print("FAIL %s: %s" % (a.cmd, e), flush=True)
        print("result: " + json.dumps({"error": str(e)}))
        return 1
    print("result: " + json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
