#!/usr/bin/env python3
"""Member-port attacks and the legitimate member, for test_auth.sh.

Each subcommand connects to a member port (--host/--port) from --source and
prints one line "OK ..." or "FAIL: reason" (exit 0/1).  Run it in the
network namespace whose address it claims.

  member-ok     the right key from the peer's address: authenticated, a WRITE
                and READ of an extent the server owns round-trip; prints the
                AUTH it sent (hex) for the replay check
  replay MAC    the right HELLO, then a recorded AUTH: refused
  insecure      HELLO without a key (INSECURE): nothing answered, closed
  wrong-key     the server's MAC does not check; our AUTH with the wrong key
                is refused; an IO frame after it gets no reply
  skip-auth     HELLO, then an IO frame instead of AUTH: refused, no reply
  no-answer     the right key but the server must say nothing and close
                (a non-peer address, another group, an unknown id)
  forged-load   authenticated, LOAD for another member id: closed
  fuzz N SEED   N seeded cases of hostile member frames, before and after
                authentication; then member-ok must still pass
"""

import argparse
import os
import random
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdwire import W  # noqa: E402
from peerwire import P, Member, Closed, frame, mac, HELLO, IO, BIND, LOAD  # noqa: E402


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def conn(a):
    return Member(a.host, a.port, source=a.source, timeout=10)


def key_of(a):
    return bytes.fromhex(a.key) if a.key else None


def routing_id(path):
    """(epoch, checksum) of a volume's routing attribute."""
    epoch = csum = None
    with open(path) as f:
        for line in f:
            w = line.split()
            if len(w) >= 3 and w[0] == "#" and w[1] == "checksum":
                csum = int(w[2], 16)
            if len(w) >= 2 and w[0] == "epoch":
                epoch = int(w[1].rstrip(";"))
    if epoch is None or csum is None:
        fail("no epoch/checksum in %s" % path)
    return epoch, csum


def member_ok(a):
    m = conn(a)
    m.hello(a.node_id, a.group, key_of(a))
    if not m.server_proved:
        fail("the server's MAC does not check with the right key")
    if m.server_hello["node_id"] != a.server_id:
        fail("server says node %d, want %d" % (m.server_hello["node_id"], a.server_id))
    m.auth()
    epoch, csum = routing_id(a.routing)
    m.bind(3, a.volume)
    pattern = os.urandom(8192)
    m.io(101, W.CMD_WRITE, a.offset, len(pattern), 3, epoch, csum, pattern)
    cookie, err, status, _, _, _ = m.reply()
    if (cookie, err, status) != (101, 0, P.OK):
        fail("WRITE reply cookie %d error %d status %d" % (cookie, err, status))
    m.io(102, W.CMD_READ, a.offset, len(pattern), 3, epoch, csum)
    cookie, err, status, _, _, data = m.reply()
    if (cookie, err, status) != (102, 0, P.OK) or data != pattern:
        fail("READ reply cookie %d error %d status %d, data %s" %
             (cookie, err, status, "right" if data == pattern else "wrong"))
    if a.backing:
        with open(a.backing, "rb") as f:
            f.seek(a.offset)
            if f.read(len(pattern)) != pattern:
                fail("the backing file does not hold what the member WRITE sent")
    m.close()
    # the proof this session sent, for the replay check
    sent_mac = mac(m.key, False, m.node_id, m.server_id, m.group_id, m.flags, m.cnonce,
                   m.snonce)
    print("OK authenticated as member %d, 8 KiB written and read back; auth %s" %
          (a.node_id, sent_mac.hex()))


def ask_unproven(m, a, load=False):
    """Frames an unproven member sends for service: BIND + READ (+ LOAD); the
    server may have closed already."""
    try:
        m.bind(0, a.volume)
        m.io(7, W.CMD_READ, 0, 4096, 0)
        if load:
            m.load(a.node_id, 1, 1, 4242)
    except Closed:
        pass


def replay(a):
    m = conn(a)
    m.hello(a.node_id, a.group, key_of(a))
    m.auth(raw=bytes.fromhex(a.mac))
    ask_unproven(m, a)
    if not m.got_nothing_then_closed(5):
        fail("a replayed AUTH was not refused within 5 s")
    print("OK replayed AUTH refused")


def insecure(a):
    m = conn(a)
    m.send(frame(P.HELLO, HELLO.pack(a.node_id, a.group, P.HELLO_F_INSECURE, 0,
                                     os.urandom(P.NONCE_LEN), bytes(P.MAC_LEN))))
    if not m.got_nothing_then_closed(5):
        fail("HELLO without a key: the server answered or kept the connection 5 s")
    print("OK HELLO without a key: no answer, closed")


def wrong_key(a):
    m = conn(a)
    m.hello(a.node_id, a.group, os.urandom(32))
    if m.server_proved:
        fail("the server's MAC checks with a random key")
    h = m.server_hello
    if h["flags"] != 0:
        fail("server HELLO flags %#x" % h["flags"])
    m.auth()
    ask_unproven(m, a, load=True)
    if not m.got_nothing_then_closed(5):
        fail("after a wrong AUTH the server answered or kept the connection")
    print("OK wrong key: the server's MAC did not check, our AUTH refused, nothing served")


def skip_auth(a):
    m = conn(a)
    m.hello(a.node_id, a.group, key_of(a))
    ask_unproven(m, a)
    if not m.got_nothing_then_closed(5):
        fail("frames without AUTH were answered or the connection stayed")
    print("OK no AUTH: nothing served, closed")


def no_answer(a):
    m = conn(a)
    try:
        m.send(frame(P.HELLO, HELLO.pack(a.node_id, a.group, 0, 0, os.urandom(P.NONCE_LEN),
                                         bytes(P.MAC_LEN))))
    except Closed:
        pass
    if not m.got_nothing_then_closed(5):
        fail("the server answered (or held) a HELLO as member %d of group %d from %s" %
             (a.node_id, a.group, a.source))
    print("OK member %d of group %d from %s: no answer, closed" % (a.node_id, a.group, a.source))


def forged_load(a):
    m = conn(a)
    m.handshake(a.node_id, a.group, key_of(a))
    m.load(a.forge_id, 1, 10 ** 12, 4242)
    if not m.closed_within(5):
        fail("LOAD for member %d over member %d's link: not closed" % (a.forge_id, a.node_id))
    print("OK LOAD for member %d over member %d's link: closed" % (a.forge_id, a.node_id))


def fuzz(a):
    rnd = random.Random(a.seed)
    key = key_of(a)
    kinds = {}
    t0 = time.time()
    for i in range(a.cases):
        kind = rnd.choice(["garbage", "hello", "hdr", "postauth", "postauth-trunc"])
        kinds[kind] = kinds.get(kind, 0) + 1
        try:
            m = Member(a.host, a.port, source=a.source, timeout=3)
        except OSError as e:
            fail("case %d: cannot connect: %s" % (i, e))
        try:
            if kind == "garbage":
                m.send(os.urandom(rnd.randint(1, 200)))
            elif kind == "hello":
                body = bytearray(HELLO.pack(a.node_id, a.group, 0, 0, os.urandom(P.NONCE_LEN),
                                            bytes(P.MAC_LEN)))
                for _ in range(rnd.randint(1, 4)):
                    body[rnd.randrange(len(body))] ^= 1 << rnd.randrange(8)
                ver = rnd.choice([P.VERSION, P.VERSION, 2, 4, 0xffff])
                ln = rnd.choice([len(body), len(body), 0, len(body) - 1, 0xffffffff])
                m.send(frame(P.HELLO, bytes(body), version=ver, length=ln))
            elif kind == "hdr":
                m.send(struct.pack(">IHHI", rnd.choice([P.MAGIC, rnd.getrandbits(32)]),
                                   P.VERSION, rnd.randrange(0, 10), rnd.getrandbits(32)))
                m.send(os.urandom(rnd.randint(0, 100)))
            else:
                m.handshake(a.node_id, a.group, key)
                ftype = rnd.choice([P.IO, P.BIND, P.LOAD, P.HELLO, P.AUTH, P.IO_REPLY, 0, 99])
                if ftype == P.IO:
                    cmd = rnd.choice([W.CMD_READ, W.CMD_WRITE, W.CMD_FLUSH, W.CMD_TRIM,
                                      W.CMD_WRITE_ZEROES, 17])
                    ln = rnd.choice([0, 1, 512, 4096, 1 << 20, 32 << 20, (32 << 20) + 1,
                                     rnd.getrandbits(32)])
                    body = IO.pack(rnd.getrandbits(64), rnd.getrandbits(64), rnd.getrandbits(32),
                                   cmd, rnd.getrandbits(16), rnd.choice([0, 4096, rnd.getrandbits(64)]),
                                   ln, rnd.choice([0, 1, 63, 64, rnd.getrandbits(32)]))
                    flen = rnd.choice([len(body), len(body) + ln, len(body) + 4096,
                                       rnd.getrandbits(32)])
                    payload = os.urandom(min(ln, 8192)) if rnd.random() < 0.5 else b""
                    data = frame(P.IO, body, length=flen & 0xffffffff) + payload
                elif ftype == P.BIND:
                    name = os.urandom(rnd.choice([0, 1, 10, 255, 300]))
                    body = BIND.pack(rnd.choice([0, 63, 64, rnd.getrandbits(32)]),
                                     rnd.choice([len(name), 0, 256, 0xffff]), 0) + name
                    data = frame(P.BIND, body, length=rnd.choice([len(body), 8, 0xffff]))
                elif ftype == P.LOAD:
                    body = LOAD.pack(rnd.choice([a.node_id, rnd.getrandbits(32)]),
                                     rnd.getrandbits(32), rnd.getrandbits(64),
                                     rnd.getrandbits(32), rnd.getrandbits(32))
                    data = frame(P.LOAD, body, length=rnd.choice([len(body), len(body) + 1, 3]))
                else:
                    data = frame(ftype, os.urandom(rnd.randint(0, 120)))
                if kind == "postauth-trunc":
                    data = data[:rnd.randint(1, len(data))]
                m.send(data)
        except (Closed, OSError, ValueError):
            pass
        m.close()
    print("OK %d fuzz cases (seed %d: %s) in %.1f s" %
          (a.cases, a.seed, " ".join("%s=%d" % kv for kv in sorted(kinds.items())),
           time.time() - t0))
    member_ok(a)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd")
    ap.add_argument("args", nargs="*")
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, default=10810)
    ap.add_argument("--source")
    ap.add_argument("--node-id", type=int, required=True)
    ap.add_argument("--server-id", type=int, default=1)
    ap.add_argument("--group", type=int, default=7)
    ap.add_argument("--key", default="")
    ap.add_argument("--volume", default="av")
    ap.add_argument("--routing", default="")
    ap.add_argument("--backing", default="")
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--forge-id", type=int, default=3)
    a = ap.parse_args()
    try:
        if a.cmd == "member-ok":
            member_ok(a)
        elif a.cmd == "replay":
            a.mac = a.args[0]
            replay(a)
        elif a.cmd == "insecure":
            insecure(a)
        elif a.cmd == "wrong-key":
            wrong_key(a)
        elif a.cmd == "skip-auth":
            skip_auth(a)
        elif a.cmd == "no-answer":
            no_answer(a)
        elif a.cmd == "forged-load":
            forged_load(a)
        elif a.cmd == "fuzz":
            a.cases, a.seed = int(a.args[0]), int(a.args[1])
            fuzz(a)
        else:
            fail("unknown command " + a.cmd)
    except (Closed, OSError, ValueError) as e:
        fail("%s: %s" % (a.cmd, e))


if __name__ == "__main__":
    main()
