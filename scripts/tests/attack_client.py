#!/usr/bin/env python3
"""Hostile raw NBD clients for knbd's bounds test (test_attack.sh), in the VM.

  attack_client.py trickle HOST PORT EXPORT --conns C --len L
                   --expect-close SECS [--window W] [--mem-bound MIB]
      C connections each send the header of a WRITE of L bytes, then one
      byte of its payload per second.  Each must be closed by the server
      SECS (io_timeout) after its header, not before SECS - 1 nor after
      SECS + W.  With --mem-bound, the drop of MemAvailable while they are
      open (sampled every 0.2 s) must stay under MIB.

  attack_client.py slowread HOST PORT EXPORT --conns C --reqs R --len L
                   --expect-close SECS [--window W] [--mem-bound MIB]
      C connections each pipeline R READs of L bytes, then read one byte of
      the replies per second: each closed SECS after its READs were sent,
      not before SECS - 1 nor after SECS + W; MemAvailable as above.

  attack_client.py slowloris HOST PORT --conns C --expect-close SECS [--window W]
      C connections take the greeting, send the client flags and the
      header of an NBD_OPT_GO with 1000 bytes of data, then one byte of it
      per second: each closed SECS (handshake_timeout) after it connected.

  attack_client.py idle HOST PORT EXPORT --expect-close SECS [--window W] [--hold H]
      One connection goes through GO, does one READ and is silent.  SECS > 0:
      closed SECS (idle_timeout) after the READ.  SECS = 0: still open after
      H seconds, and a READ is still answered.

Each prints "ok: ..." lines and a last line "result: {json}"; the exit
status is 1 on any failure.
"""

import argparse
import os
import select
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdwire import W  # noqa: E402
from scale_client import Fail, handshake, ok, request, run_cmd, tcp_state, TCP_CLOSED  # noqa: E402


def mem_available():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) << 10
    raise Fail("no MemAvailable in /proc/meminfo")


class MemWatch:
    """The largest drop of MemAvailable since it was created."""

    def __init__(self):
        self.base = mem_available()
        self.drop = 0

    def sample(self):
        self.drop = max(self.drop, self.base - mem_available())


def closed(s):
    return tcp_state(s) in TCP_CLOSED


def wait_closes(conns, starts, a, step, mem=None):
    """Run step(i, sock) once a second on the open ones until all are closed."""
    end = max(starts) + a.expect_close + a.window
    when = {}
    next_step = time.monotonic()
    while len(when) < len(conns) and time.monotonic() < end:
        now = time.monotonic()
        for i, s in enumerate(conns):
            if i not in when and closed(s):
                when[i] = now - starts[i]
        if now >= next_step:
            for i, s in enumerate(conns):
                if i not in when:
                    try:
                        step(i, s)
                    except OSError:
                        pass	# reset: the state says so at the next look
            next_step = now + a.interval
        if mem:
            mem.sample()
        time.sleep(0.2)
    times = sorted(when.values())
    if len(when) < len(conns):
        raise Fail("%d of %d connections still open %d s after they began (closed after %s)"
                   % (len(conns) - len(when), len(conns), a.expect_close + a.window,
                      [round(x, 1) for x in times]))
    if times[0] < a.expect_close - 1:
        raise Fail("a connection was closed after %.1f s, before the %d s deadline"
                   % (times[0], a.expect_close))
    return times


def check_mem(mem, a, what):
    if not mem:
        return {}
    mib = mem.drop / 2**20
    if a.mem_bound and mib > a.mem_bound:
        raise Fail("MemAvailable fell by %.0f MiB under %s, more than the bound %d MiB"
                   % (mib, what, a.mem_bound))
    ok("MemAvailable fell by %.0f MiB at most under %s (bound %s MiB)"
       % (mib, what, a.mem_bound or "-"))
    return {"mem_drop_mib": round(mib)}


def cmd_trickle(a):
    mem = MemWatch()
    conns = [handshake(a.host, a.port, a.export) for _ in range(a.conns)]
    starts = []
    for i, s in enumerate(conns):
        s.sendall(request(W.CMD_WRITE, i + 1, 0, a.len))
        starts.append(time.monotonic())
        s.setblocking(False)
    ok("%d connections sent a %d byte WRITE header each, then 1 byte/%g s"
       % (a.conns, a.len, a.interval))
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write("ready\n")
    times = wait_closes(conns, starts, a, lambda i, s: s.send(b"\xa5"), mem)
    ok("all %d closed %.1f..%.1f s after their header (io_timeout %d s)"
       % (a.conns, times[0], times[-1], a.expect_close))
    res = {"closed_after_s": [times[0], times[-1]]}
    res.update(check_mem(mem, a, "%d trickled WRITEs of %d bytes" % (a.conns, a.len)))
    return res


def cmd_slowread(a):
    mem = MemWatch()
    conns = [handshake(a.host, a.port, a.export) for _ in range(a.conns)]
    starts = []
    for i, s in enumerate(conns):
        s.sendall(b"".join(request(W.CMD_READ, i * a.reqs + r + 1, 0, a.len)
                           for r in range(a.reqs)))
        starts.append(time.monotonic())
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
    ok("%d connections sent %d READs of %d bytes each, read 1 byte/%g s"
       % (a.conns, a.reqs, a.len, a.interval))
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write("ready\n")
    times = wait_closes(conns, starts, a, lambda i, s: s.recv(1), mem)
    ok("all %d closed %.1f..%.1f s after their READs (io_timeout %d s)"
       % (a.conns, times[0], times[-1], a.expect_close))
    res = {"closed_after_s": [times[0], times[-1]]}
    res.update(check_mem(mem, a, "%d slow readers of %d x %d bytes"
                         % (a.conns, a.reqs, a.len)))
    return res


def cmd_slowloris(a):
    conns, starts = [], []
    for _ in range(a.conns):
        s = socket.create_connection((a.host, a.port), timeout=30)
        starts.append(time.monotonic())
        hello = b""
        while len(hello) < 18:
            chunk = s.recv(18 - len(hello))
            if not chunk:
                raise Fail("closed during the greeting")
            hello += chunk
        s.sendall(struct.pack(">I", W.CL_FLAG_FIXED_NEWSTYLE | W.CL_FLAG_NO_ZEROES))
        s.sendall(struct.pack(">QII", W.MAGIC_IHAVEOPT, W.OPT_GO, 1000))
        s.setblocking(False)
        conns.append(s)
    ok("%d connections sent the header of a 1000 byte NBD_OPT_GO, then 1 byte/%g s"
       % (a.conns, a.interval))
    times = wait_closes(conns, starts, a, lambda i, s: s.send(b"\0"))
    ok("all %d closed %.1f..%.1f s after they connected (handshake_timeout %d s)"
       % (a.conns, times[0], times[-1], a.expect_close))
    return {"closed_after_s": [times[0], times[-1]]}


def read_one(s, handle):
    s.setblocking(True)
    s.settimeout(30)
    s.sendall(request(W.CMD_READ, handle, 0, 4096))
    got = b""
    while len(got) < 16 + 4096:
        chunk = s.recv(16 + 4096 - len(got))
        if not chunk:
            raise Fail("closed while reading a reply")
        got += chunk
    magic, err, h = struct.unpack(">IIQ", got[:16])
    if magic != W.MAGIC_SIMPLE_REPLY or err or h != handle:
        raise Fail("bad READ reply: magic %#x error %d handle %d" % (magic, err, h))


def cmd_idle(a):
    s = handshake(a.host, a.port, a.export)
    read_one(s, 1)
    t0 = time.monotonic()
    if a.expect_close:
        times = wait_closes([s], [t0], a, lambda i, s: None)
        ok("the idle connection was closed %.1f s after its last request (idle_timeout %d s)"
           % (times[0], a.expect_close))
        return {"closed_after_s": times[0]}
    end = t0 + a.hold
    while time.monotonic() < end:
        if closed(s) or select.select([s], [], [], 0.2)[0]:
            raise Fail("the server closed an idle connection after %.1f s (idle_timeout 0)"
                       % (time.monotonic() - t0))
    read_one(s, 2)
    ok("an idle connection is still open and served after %.0f s (idle_timeout 0)" % a.hold)
    return {"held_s": a.hold}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("trickle", "slowread", "slowloris", "idle"):
        sp = sub.add_parser(name)
        sp.add_argument("host")
        sp.add_argument("port", type=int)
        if name != "slowloris":
            sp.add_argument("export")
        sp.add_argument("--expect-close", type=int, required=True)
        sp.add_argument("--window", type=int, default=5, help="allowed lateness, seconds")
        sp.add_argument("--interval", type=float, default=1.0)
        sp.add_argument("--conns", type=int, default=1)
        sp.add_argument("--ready-file")
    for name in ("trickle", "slowread"):
        sp = sub.choices[name]
        sp.add_argument("--len", type=int, default=32 << 20)
        sp.add_argument("--mem-bound", type=int, default=0, help="MiB")
    sub.choices["slowread"].add_argument("--reqs", type=int, default=1)
    sub.choices["idle"].add_argument("--hold", type=float, default=8)
    a = p.parse_args()
    return run_cmd({"trickle": cmd_trickle, "slowread": cmd_slowread,
                    "slowloris": cmd_slowloris, "idle": cmd_idle}, a)


if __name__ == "__main__":
    sys.exit(main())
