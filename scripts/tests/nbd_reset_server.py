#!/usr/bin/env python3
"""A small NBD server that resets a connection with requests in flight, and a
reader that times O_DIRECT reads through /dev/nbdN (test_nbdpatch.sh).

    serve PORT SIZE TRAP_OFF TRAP_LEN [--hold-ms MS] [--pause-ms MS] [--arm-file F]
        Serves one export (any name) of SIZE bytes: block b (4 KiB) holds
        "%015x\\n" % b, 256 times; writes are kept. The first connection that
        gets a READ in [TRAP_OFF, TRAP_OFF + TRAP_LEN) leaves it unanswered,
        and every later one of that range on it, for MS ms (default 300), then
        resets that connection (SO_LINGER 0: RST) without answering them. Once:
        afterwards every connection is answered. --pause-ms: a connection
        accepted within MS ms after the reset gets its greeting only then (a
        reconnect has to wait).
        Prints READY, "CONN n", "HELD conn=n off=O" and
        "RESET conn=n held=K t=MONOTONIC" lines (flushed). --arm-file: no
        trap before F exists (keeps probes of the new device out of it).

    read DEV OFF[,OFF...] [--bs N] [--json FILE] [--server-log LOG]
        One thread per offset, all started together: pread of N bytes (default
        4096) with O_DIRECT; the results, a list of {"off", "t0", "t1"
        (CLOCK_MONOTONIC, the server's clock too), "ok" (data as served),
        "err" (errno name or null)}, as JSON on stdout or into FILE. With the
        server's LOG (waits up to 10 s for its RESET line), prints instead
        "reset=0|1 held=K ok=K errs=none|EIO,... lat_max=S after_reset_max=S
        others=N others_ok=N": of the reads the server held, how many returned
        the right data, the errors, the longest read and the latest completion
        after the reset (seconds); the reads it answered at once, and how many
        of those returned the right data.
"""

import argparse
import errno
import json
import mmap
import os
import re
import select
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdwire import W  # noqa: E402

BLK = 4096


def pattern(b):
    return (b"%015x\n" % b) * (BLK // 16)


class Store:
    def __init__(self, size):
        self.size = size
        self.blocks = {}
        self.lock = threading.Lock()

    def block(self, b):
        return self.blocks.get(b) or pattern(b)

    def read(self, off, length):
        out = bytearray()
        with self.lock:
            while length > 0:
                b, o = divmod(off, BLK)
                n = min(BLK - o, length)
                out += self.block(b)[o:o + n]
                off += n
                length -= n
        return bytes(out)

    def write(self, off, data):
        with self.lock:
            p = 0
            while p < len(data):
                b, o = divmod(off + p, BLK)
                n = min(BLK - o, len(data) - p)
                blk = bytearray(self.block(b))
                blk[o:o + n] = data[p:p + n]
                self.blocks[b] = bytes(blk)
                p += n


def say(line):
    print(line, flush=True)


class Server:
    def __init__(self, a):
        self.a = a
        self.store = Store(a.size)
        self.lock = threading.Lock()
        self.armed = True
        self.trapped = None       # connection number holding the trap
        self.reset_at = None      # when to reset it (monotonic)
        self.resume_at = 0.0      # no accept before this
        self.nconn = 0

    # ---- handshake ----
    def recv_exact(self, c, n, deadline=None):
        buf = bytearray()
        while len(buf) < n:
            if deadline is not None and not select.select([c], [], [], 0.02)[0]:
                if deadline():
                    raise ResetNow()
                continue
            d = c.recv(n - len(buf))
            if not d:
                raise EOFError()
            buf += d
        return bytes(buf)

    def opt_reply(self, c, opt, rtype, data=b""):
        c.sendall(struct.pack(">QIII", W.MAGIC_OPT_REPLY, opt, rtype, len(data)) + data)

    def tflags(self):
        return (W.FLAG_HAS_FLAGS | W.FLAG_SEND_FLUSH | W.FLAG_SEND_TRIM |
                W.FLAG_CAN_MULTI_CONN)

    def handshake(self, c):
        c.sendall(struct.pack(">QQH", W.MAGIC_INIT, W.MAGIC_IHAVEOPT,
                              W.HS_FLAG_FIXED_NEWSTYLE | W.HS_FLAG_NO_ZEROES))
        (cflags,) = struct.unpack(">I", self.recv_exact(c, 4))
        while True:
            magic, opt, ln = struct.unpack(">QII", self.recv_exact(c, 16))
            if magic != W.MAGIC_IHAVEOPT or ln > 65536:
                raise EOFError()
            data = self.recv_exact(c, ln)
            if opt == W.OPT_EXPORT_NAME:
                pad = b"" if cflags & W.CL_FLAG_NO_ZEROES else b"\0" * W.EXPORT_NAME_PAD
                c.sendall(struct.pack(">QH", self.a.size, self.tflags()) + pad)
                return
            if opt in (W.OPT_GO, W.OPT_INFO):
                self.opt_reply(c, opt, W.REP_INFO,
                               struct.pack(">HQH", W.INFO_EXPORT, self.a.size, self.tflags()))
                self.opt_reply(c, opt, W.REP_ACK)
                if opt == W.OPT_GO:
                    return
                continue
            if opt == W.OPT_ABORT:
                self.opt_reply(c, opt, W.REP_ACK)
                raise EOFError()
            self.opt_reply(c, opt, W.REP_ERR_UNSUP)

    # ---- transmission ----
    def reply(self, c, handle, err=0, data=b""):
        c.sendall(struct.pack(">IIQ", W.MAGIC_SIMPLE_REPLY, err, handle) + data)

    def trap(self, me, off, length):
        a = self.a
        if not (off < a.trap_off + a.trap_len and off + length > a.trap_off):
            return False
        if a.arm_file and not os.path.exists(a.arm_file):
            return False
        with self.lock:
            if not self.armed or self.trapped not in (None, me):
                return False
            if self.trapped is None:
                self.trapped = me
                self.reset_at = time.monotonic() + a.hold_ms / 1000.0
            return True

    def serve_conn(self, c, me):
        held = []
        # --pause-ms: a connection accepted in the pause waits for its end
        # (resume_at is set before the reset goes out: no reconnect is earlier)
        with self.lock:
            pause = self.resume_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)

        def due():
            return self.trapped == me and time.monotonic() >= self.reset_at

        try:
            self.handshake(c)
            while True:
                hdr = self.recv_exact(c, 28, due)
                magic, flags, typ, handle, off, ln = struct.unpack(">IHHQQI", hdr)
                if magic != W.MAGIC_REQUEST:
                    return
                if typ == W.CMD_READ:
                    if self.trap(me, off, ln):
                        held.append(off)
                        say("HELD conn=%d off=%d" % (me, off))
                        continue
                    if off + ln > self.a.size:
                        self.reply(c, handle, W.EINVAL)
                    else:
                        self.reply(c, handle, 0, self.store.read(off, ln))
                elif typ == W.CMD_WRITE:
                    data = self.recv_exact(c, ln)
                    self.store.write(off, data)
                    self.reply(c, handle)
                elif typ == W.CMD_DISC:
                    return
                else:
                    self.reply(c, handle)
        except ResetNow:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with self.lock:
                self.armed = False
                self.resume_at = time.monotonic() + self.a.pause_ms / 1000.0
            t = time.monotonic()
            c.close()
            say("RESET conn=%d held=%d t=%.6f" % (me, len(held), t))
        except (EOFError, OSError):
            pass
        finally:
            c.close()

    def run(self):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.a.port))
        ls.listen(16)
        say("READY")
        while True:
            c, _ = ls.accept()
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.nconn += 1
            say("CONN %d" % self.nconn)
            threading.Thread(target=self.serve_conn, args=(c, self.nconn), daemon=True).start()


class ResetNow(Exception):
    pass


def do_read(a):
    offs = [int(x) for x in a.offsets.split(",")]
    res = [None] * len(offs)
    go = threading.Barrier(len(offs))

    def one(i, off):
        buf = mmap.mmap(-1, a.bs)
        fd = os.open(a.dev, os.O_RDONLY | os.O_DIRECT)
        r = {"off": off, "ok": False, "err": None}
        try:
            go.wait()
            r["t0"] = time.monotonic()
            try:
                n = os.preadv(fd, [buf], off)
                r["ok"] = n == a.bs and buf[:] == b"".join(
                    pattern(b) for b in range(off // BLK, (off + a.bs) // BLK))
            except OSError as e:
                r["err"] = errno.errorcode.get(e.errno, str(e.errno))
            r["t1"] = time.monotonic()
        finally:
            os.close(fd)
        res[i] = r

    ts = [threading.Thread(target=one, args=(i, o)) for i, o in enumerate(offs)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f)
    if not a.server_log:
        print(json.dumps(res), flush=True)
        return
    # the reads the server held, against its reset (its log, same clock)
    log, end = "", time.monotonic() + 10
    while "RESET" not in log and time.monotonic() < end:
        time.sleep(0.1)
        with open(a.server_log) as f:
            log = f.read()
    held = {int(m) for m in re.findall(r"HELD conn=\d+ off=(\d+)", log)}
    m = re.search(r"RESET conn=\d+ held=\d+ t=([0-9.]+)", log)
    tr = float(m.group(1)) if m else float("nan")
    h = [r for r in res if r["off"] in held]
    o = [r for r in res if r["off"] not in held]
    print("reset=%d held=%d ok=%d errs=%s lat_max=%.3f after_reset_max=%.3f "
          "others=%d others_ok=%d" % (
              1 if m else 0, len(h), sum(r["ok"] for r in h),
              ",".join(sorted({r["err"] for r in h if r["err"]})) or "none",
              max((r["t1"] - r["t0"] for r in h), default=0),
              max((r["t1"] - tr for r in h), default=0),
              len(o), sum(r["ok"] for r in o)), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("port", type=int)
    s.add_argument("size", type=int)
    s.add_argument("trap_off", type=int)
    s.add_argument("trap_len", type=int)
    s.add_argument("--hold-ms", type=int, default=300)
    s.add_argument("--pause-ms", type=int, default=0)
    s.add_argument("--arm-file", default="")
    r = sub.add_parser("read")
    r.add_argument("dev")
    r.add_argument("offsets")
    r.add_argument("--bs", type=int, default=BLK)
    r.add_argument("--json", default="")
    r.add_argument("--server-log", default="")
    a = p.parse_args()
    if a.cmd == "serve":
        Server(a).run()
    else:
        do_read(a)


if __name__ == "__main__":
    main()
