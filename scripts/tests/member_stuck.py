#!/usr/bin/env python3
"""A raw knbd member (include/knbd/peer_proto.h) for test_configfs.sh.

  member_stuck.py HOST PORT --node-id N --group G \\
      --stuck VOL:ROUTING_FILE [--other VOL:ROUTING_FILE] --go FILE [--len L --sent S]

Opens a member connection and sends, for volume VOL, a WRITE frame that
announces L payload bytes (default 1 MiB) and carries only S of them
(default 64 KiB), then prints STUCK.  With --other, a second member
connection first writes and reads back 4 KiB of the other volume (B_OK1).
Then it waits (at most 120 s) for FILE to exist: meanwhile the test
disables or removes VOL.  Afterwards the other volume's connection must
still serve (B_OK2), and the stuck connection gets the rest of its
payload and must answer that WRITE: "A_REPLY status=S error=E", or
"A_CLOSED" if the server closed it.  Prints "FAILED: why" on any error.

The handshake lives in member_connect() alone, so that a change of the
member HELLO (authentication) is one function to change.
"""

import argparse
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peerwire import P, Member  # noqa: E402

MAGIC = P.MAGIC
VERSION = P.VERSION
HELLO, IO, IO_REPLY, LOAD, BIND = P.HELLO, P.IO, P.IO_REPLY, P.LOAD, P.BIND
CMD_READ, CMD_WRITE = 0, 1
HDR = ">IHHI"              # magic, version, type, len
IO_FMT = ">QQIHHQII"       # cookie, epoch, checksum, cmd, flags, offset, len, handle
REPLY_FMT = ">QIIQII"      # cookie, error, status, epoch, checksum, reserved
HDR_LEN = struct.calcsize(HDR)
REPLY_LEN = struct.calcsize(REPLY_FMT)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            raise EOFError("connection closed after %d of %d bytes" % (len(buf), n))
        buf += d
    return buf


def frame(ftype, body):
    return struct.pack(HDR, MAGIC, VERSION, ftype, len(body)) + body


KEY = None  # the group key (bytes), from --key


def member_connect(host, port, node_id, group_id, timeout=30):
    """An established, authenticated member connection (peerwire.py's handshake)."""
    m = Member(host, port, timeout=timeout)
    m.handshake(node_id, group_id, KEY)
    return m.s


def bind(s, handle, name):
    nb = name.encode()
    s.sendall(frame(BIND, struct.pack(">IHH", handle, len(nb), 0) + nb))


def routing_id(path):
    """(epoch, checksum) of a volume's routing table, from its configfs file."""
    epoch = checksum = None
    with open(path) as f:
        for line in f:
            w = line.split()
            if len(w) >= 3 and w[:2] == ["#", "checksum"]:
                checksum = int(w[2], 16)
            elif len(w) == 2 and w[0] == "epoch":
                epoch = int(w[1])
    if epoch is None or checksum is None:
        raise RuntimeError("no routing table in %s" % path)
    return epoch, checksum


def io_header(cookie, rid, cmd, offset, length, handle, payload_len):
    body = struct.pack(IO_FMT, cookie, rid[0], rid[1], cmd, 0, offset, length, handle)
    return struct.pack(HDR, MAGIC, VERSION, IO, len(body) + payload_len) + body


def reply(s):
    _m, _v, ftype, length = struct.unpack(HDR, recv_exact(s, HDR_LEN))
    if ftype != IO_REPLY or length < REPLY_LEN:
        raise RuntimeError("expected IO_REPLY, got type %d len %d" % (ftype, length))
    cookie, err, status, _e, _c, _r = struct.unpack(REPLY_FMT, recv_exact(s, REPLY_LEN))
    data = recv_exact(s, length - REPLY_LEN) if length > REPLY_LEN else b""
    return cookie, err, status, data


def roundtrip(s, rid, handle, cookie, tag):
    """WRITE 4 KiB at offset 0, READ it back; raises unless both succeed."""
    data = (tag * 4096)[:4096]
    s.sendall(io_header(cookie, rid, CMD_WRITE, 0, 4096, handle, 4096) + data)
    c, err, status, _ = reply(s)
    if (c, err, status) != (cookie, 0, 0):
        raise RuntimeError("WRITE on the other volume: cookie %d error %d status %d" % (c, err, status))
    s.sendall(io_header(cookie + 1, rid, CMD_READ, 0, 4096, handle, 0))
    c, err, status, back = reply(s)
    if (c, err, status) != (cookie + 1, 0, 0) or back != data:
        raise RuntimeError("READ on the other volume: cookie %d error %d status %d, data %s"
                           % (c, err, status, "right" if back == data else "wrong"))


def say(msg):
    print(msg, flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--node-id", type=int, required=True)
    p.add_argument("--group", type=int, default=1)
    p.add_argument("--key", default="", help="the group key in hex (empty: insecure)")
    p.add_argument("--stuck", required=True)
    p.add_argument("--other")
    p.add_argument("--go", required=True)
    p.add_argument("--len", type=int, default=1 << 20)
    p.add_argument("--sent", type=int, default=64 << 10)
    a = p.parse_args()
    global KEY
    KEY = bytes.fromhex(a.key) if a.key else None

    svol, sfile = a.stuck.split(":", 1)
    other = None
    if a.other:
        ovol, ofile = a.other.split(":", 1)
        b = member_connect(a.host, a.port, a.node_id, a.group)
        bind(b, 1, ovol)
        other = (b, routing_id(ofile))
        roundtrip(b, other[1], 1, 100, b"B")
        say("B_OK1")

    s = member_connect(a.host, a.port, a.node_id, a.group)
    bind(s, 0, svol)
    s.sendall(io_header(1, routing_id(sfile), CMD_WRITE, 0, a.len, 0, a.len)
              + b"A" * a.sent)
    say("STUCK")

    end = time.time() + 120
    while not os.path.exists(a.go):
        if time.time() > end:
            raise RuntimeError("no go file after 120 s")
        time.sleep(0.1)

    if other:
        roundtrip(other[0], other[1], 1, 200, b"C")
        say("B_OK2")
    try:
        s.sendall(b"A" * (a.len - a.sent))
        _c, err, status, _ = reply(s)
        say("A_REPLY status=%d error=%d" % (status, err))
    except (EOFError, ConnectionError) as e:
        say("A_CLOSED (%s)" % e)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, RuntimeError, EOFError, struct.error) as e:
        say("FAILED: %s" % e)
        sys.exit(1)
