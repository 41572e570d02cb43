#!/usr/bin/env python3
"""Raw NBD checks for partitioned (group) volumes, used by test_group.sh.

  test_group_proto.py straddle HOST PORT EXPORT --size S --ext E --stripe 1,2,3
                      --window W --model FILE
      Requests that cross extent and member boundaries through one entry
      member: unaligned sizes, a 32 MiB request over every member (less in a
      window under 40 MiB), pipelined
      requests touching three members (exactly one reply each), FLUSH, a
      request over the end.  Keeps a model of the first W bytes and saves it
      to FILE at the end.

  test_group_proto.py compare HOST PORT EXPORT --model FILE
      Read the first len(FILE) bytes through HOST and compare with FILE.

  test_group_proto.py layout --size S --ext E --stripe 1,2,3 [--device DEV] FILE1 FILE2 ...
      FILEi is the backing file of member i (in stripe id order 1..n).  Checks
      that every member has nothing (holes or zeroes) in the extents it does
      not own, prints the md5 of the volume rebuilt from the owners' extents
      and how many bytes each member owns.  With --device, also compares 4 KiB
      inside each of the first --spot extents of FILE1 with the device.

  test_group_proto.py linkcut HOST PORT EXPORT --ext E --stripe 1,2,3 --cut-member M
                      --cut CMD --restore CMD --cut-secs S
      One 4 KiB block in each of the first 4 x len(stripe) extents, written
      round robin with a new pattern each pass.  CMD cuts member M's network
      (ip link set down) for S seconds, then is restored: writes to the other
      members' extents must all succeed throughout, those to M's fail (EIO)
      while it is cut, and succeed again once the link is back.  Then every
      block must hold its last acknowledged write (or one of the writes that
      failed after it: a failed write may or may not have landed); prints
      the bytes verified and the mismatches (must be 0).

Prints "ok: ..." progress lines; on failure the last line is "FAIL: reason"
and the exit status is 1.
"""

import argparse
import errno
import hashlib
import mmap
import os
import random
import select
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdwire import W  # noqa: E402

# The wire numbers come from the module's header (nbdwire.py reads it).
NBDMAGIC = W.MAGIC_INIT
IHAVEOPT = W.MAGIC_IHAVEOPT
OPT_REPLY_MAGIC = W.MAGIC_OPT_REPLY
REQUEST_MAGIC = W.MAGIC_REQUEST
SIMPLE_REPLY_MAGIC = W.MAGIC_SIMPLE_REPLY
OPT_GO = W.OPT_GO
REP_ACK = W.REP_ACK
REP_INFO = W.REP_INFO
FLAG_FIXED_NEWSTYLE = W.CL_FLAG_FIXED_NEWSTYLE
FLAG_NO_ZEROES = W.CL_FLAG_NO_ZEROES
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = W.CMD_READ, W.CMD_WRITE, W.CMD_DISC, W.CMD_FLUSH
CF_FUA = W.CMD_FLAG_FUA

TIMEOUT = 120.0  # per socket operation: TCG, forwarded pieces


class Fail(Exception):
    pass


T0 = time.monotonic()


def ok(msg):
    print("ok: [%6.1fs] %s" % (time.monotonic() - T0, msg), flush=True)


def expect(cond, msg):
    if not cond:
        raise Fail(msg)


def parse_size(s):
    s = s.strip()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if s and s[-1].upper() in mult:
        return int(s[:-1]) * mult[s[-1].upper()]
    return int(s)


class Conn:
    def __init__(self, host, port, export):
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.handle = random.getrandbits(32) << 16
        d = self.recv_exact(18)
        magic, opt, _hflags = struct.unpack(">QQH", d)
        expect(magic == NBDMAGIC and opt == IHAVEOPT, "bad greeting")
        self.sock.sendall(struct.pack(">I", FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
        nb = export.encode()
        data = struct.pack(">I", len(nb)) + nb + struct.pack(">H", 0)
        self.sock.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(data)) + data)
        self.size = None
        while True:
            magic, ropt, rtype, rlen = struct.unpack(">QIII", self.recv_exact(20))
            expect(magic == OPT_REPLY_MAGIC, "bad option reply magic")
            payload = self.recv_exact(rlen) if rlen else b""
            if rtype == REP_INFO:
                if struct.unpack(">H", payload[:2])[0] == 0:
                    self.size, self.tflags = struct.unpack(">QH", payload[2:12])
                continue
            expect(rtype == REP_ACK, "GO %r refused: reply type %#x" % (export, rtype))
            break
        expect(self.size is not None, "no NBD_INFO_EXPORT")

    def close(self):
        try:
            self.sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_DISC, 0, 0, 0))
        except OSError:
            pass
        self.sock.close()

    def recv_exact(self, n):
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            try:
                k = self.sock.recv_into(view[got:], min(n - got, 4 << 20))
            except socket.timeout:
                raise Fail("timed out waiting for %d bytes (got %d)" % (n, got))
            if not k:
                raise Fail("connection closed after %d of %d bytes" % (got, n))
            got += k
        return bytes(buf)

    def next_handle(self):
        self.handle += 1
        return self.handle

    def send_req(self, cmd, offset, length, payload=b"", flags=0):
        h = self.next_handle()
        self.sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, h, offset, length))
        if payload:
            self.sock.sendall(payload)
        return h

    def reply(self):
        magic, err, h = struct.unpack(">IIQ", self.recv_exact(16))
        expect(magic == SIMPLE_REPLY_MAGIC, "bad reply magic %#x" % magic)
        return err, h

    def cmd(self, cmd, offset, length, payload=b"", flags=0):
        h = self.send_req(cmd, offset, length, payload, flags)
        err, rh = self.reply()
        expect(rh == h, "reply handle %#x, want %#x" % (rh, h))
        data = self.recv_exact(length) if cmd == CMD_READ and err == 0 else b""
        return err, data

    def read(self, offset, length):
        err, data = self.cmd(CMD_READ, offset, length)
        expect(err == 0, "READ %d+%d failed: errno %d" % (offset, length, err))
        return data

    def write(self, offset, data, flags=0):
        err, _ = self.cmd(CMD_WRITE, offset, len(data), data, flags)
        expect(err == 0, "WRITE %d+%d failed: errno %d" % (offset, len(data), err))

    def quiet(self, wait=1.0):
        r, _, _ = select.select([self.sock], [], [], wait)
        return not r


def owners(off, length, ext, stripe):
    first, last = off // ext, (off + length - 1) // ext
    return sorted({stripe[i % len(stripe)] for i in range(first, last + 1)})


def first_diff(a, b):
    """Index of the first differing byte (len of the shorter if a prefix)."""
    n = min(len(a), len(b))
    step = 65536
    for base in range(0, n, step):
        if a[base:base + step] != b[base:base + step]:
            for i in range(base, min(base + step, n)):
                if a[i] != b[i]:
                    return i
    return n


def read_big(c, off, length, chunk=8 << 20):
    out = bytearray()
    while length:
        n = min(chunk, length)
        out += c.read(off, n)
        off += n
        length -= n
    return bytes(out)


def cmd_straddle(a):
    ext, size, window = a.ext, a.size, a.window
    stripe = a.stripe
    rnd = random.Random(a.seed)
    c = Conn(a.host, a.port, a.export)
    expect(c.size == size, "export size %d, want %d" % (c.size, size))
    model = bytearray(read_big(c, 0, window))
    ok("connected, size %d, read the %d MiB window" % (c.size, window >> 20))

    def wr(off, length, what, flags=0):
        data = rnd.randbytes(length)
        c.write(off, data, flags)
        model[off:off + length] = data
        got = c.read(off, length)
        if got != data:
            i = first_diff(got, data)
            raise Fail("%s: %d+%d reads back wrong at byte %d (device offset %d)" %
                       (what, off, length, i, off + i))
        ok("%s: %d+%d (members %s)" % (what, off, length, owners(off, length, ext, stripe)))

    # fixed shapes across boundaries
    wr(ext - 4096, 8192, "two members, 4 KiB each side")
    wr(2 * ext - 1536, ext + 3584, "three members, unaligned")
    wr(3 * ext - 512, 1024, "1 KiB across a boundary")
    wr(4 * ext - 512, 512, "last sector of an extent")
    wr(4 * ext, 512, "first sector of an extent")
    wr(ext + 512 * 3, ext - 512 * 6, "inside one remote extent, unaligned")
    # random shapes, multiples of 512, up to 3 extents (1.5 in a small window:
    # the data moved is what a debug-kernel run pays for)
    maxlen = 3 * ext if window >= 40 << 20 else ext + ext // 2
    for k in range(24):
        length = 512 * rnd.randint(1, maxlen // 512)
        off = 512 * rnd.randint(0, (window - length) // 512)
        wr(off, length, "random #%d" % k)
    # a 32 MiB request over every member, with FUA (what fits in a small window)
    off = 5 * ext + 512
    big = min(32 << 20, (window - off - 4096) // 512 * 512)
    expect(big > 2 * ext, "window too small for a request over every member")
    data = rnd.randbytes(big)
    c.write(off, data, CF_FUA)
    model[off:off + big] = data
    got = c.read(off, big)
    if got != data:
        raise Fail("%d KiB request reads back wrong at byte %d" % (big >> 10, first_diff(got, data)))
    ok("%d KiB write (FUA) + read at %d (members %s)" % (big >> 10, off, owners(off, big, ext, stripe)))
    # the neighbours of the big request are untouched
    got = c.read(off - 4096, 4096) + c.read(off + big, 4096)
    expect(got == bytes(model[off - 4096:off]) + bytes(model[off + big:off + big + 4096]),
           "the bytes around the big request changed")

    # pipelined: writes in the first half, reads in the second, all in flight
    half = window // 2
    plen = 2 * ext + 1024
    pairs = min(6, (half - 1024) // (plen + 4096))
    expect(pairs >= 1, "window too small for the pipelined requests")
    sent = {}
    for k in range(2 * pairs):
        if k % 2 == 0:
            woff = 512 + (k // 2) * (plen + 4096)
            expect(woff + plen <= half, "window too small for the pipelined writes")
            data = rnd.randbytes(plen)
            h = c.send_req(CMD_WRITE, woff, plen, data)
            sent[h] = ("W", woff, data)
        else:
            roff = half + 1024 + (k // 2) * (plen + 4096)
            expect(roff + plen <= window, "window too small for the pipelined reads")
            h = c.send_req(CMD_READ, roff, plen)
            sent[h] = ("R", roff, None)
    seen = set()
    for _ in range(len(sent)):
        err, h = c.reply()
        expect(h in sent, "reply with unknown handle %#x" % h)
        expect(h not in seen, "second reply for handle %#x" % h)
        seen.add(h)
        kind, off, data = sent[h]
        expect(err == 0, "pipelined %s %d+%d failed: errno %d" % (kind, off, plen, err))
        if kind == "R":
            got = c.recv_exact(plen)
            want = bytes(model[off:off + plen])
            if got != want:
                raise Fail("pipelined read %d+%d wrong at byte %d" % (off, plen, first_diff(got, want)))
    expect(c.quiet(1.0), "extra bytes after the last pipelined reply (a second reply?)")
    for kind, off, data in sent.values():
        if kind == "W":
            model[off:off + plen] = data
    for kind, off, data in sent.values():
        if kind == "W":
            expect(c.read(off, plen) == data, "pipelined write %d+%d reads back wrong" % (off, plen))
    ok("%d pipelined requests over 3 members, one reply each, data right" % (2 * pairs))

    err, _ = c.cmd(CMD_FLUSH, 0, 0)
    expect(err == 0, "FLUSH failed: errno %d" % err)
    ok("FLUSH")

    # over the end, straddling the last extent: an error, and the stream stays in step
    err, _ = c.cmd(CMD_READ, size - 4096, 8192)
    expect(err != 0, "READ over the end of the volume succeeded")
    err, _ = c.cmd(CMD_WRITE, size - 4096, 8192, bytes(8192))
    expect(err != 0, "WRITE over the end of the volume succeeded")
    expect(c.quiet(0.5), "bytes after the error replies over the end")
    expect(len(c.read(size - 4096, 4096)) == 4096, "last 4 KiB unreadable")
    ok("requests over the end fail cleanly (errno %d), connection in step" % err)

    got = read_big(c, 0, window)
    if got != bytes(model):
        i = first_diff(got, model)
        raise Fail("window differs from the model at offset %d (extent %d)" % (i, i // ext))
    ok("whole %d MiB window matches the model" % (window >> 20))
    c.close()
    with open(a.model, "wb") as f:
        f.write(model)


def cmd_compare(a):
    with open(a.model, "rb") as f:
        model = f.read()
    c = Conn(a.host, a.port, a.export)
    got = read_big(c, 0, len(model))
    if got != model:
        i = first_diff(got, model)
        raise Fail("through %s: offset %d (extent %d) differs from the data written through the "
                   "entry member" % (a.host, i, i // a.ext))
    c.close()
    ok("%d MiB through %s match" % (len(model) >> 20, a.host))


def cmd_layout(a):
    ext, size, stripe = a.ext, a.size, a.stripe
    expect(len(a.files) == len(stripe), "need one backing file per stripe id")
    ids = sorted(stripe)
    fds = {}
    for mid, path in zip(ids, a.files):
        fds[mid] = os.open(path, os.O_RDONLY)
    fsize = {m: os.fstat(fd).st_size for m, fd in fds.items()}
    zero = bytes(ext)
    md5 = hashlib.md5()
    owned = {m: 0 for m in ids}
    nonzero_owned = {m: 0 for m in ids}
    nr = (size + ext - 1) // ext

    def has_data(m, off, length):
        fd = fds[m]
        if off >= fsize[m]:
            return False
        try:
            d = os.lseek(fd, off, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return False
            return True
        return d < off + length

    for i in range(nr):
        off = i * ext
        length = min(ext, size - off)
        owner = stripe[i % len(stripe)]
        for m in ids:
            if m == owner:
                continue
            if has_data(m, off, length):
                chunk = os.pread(fds[m], length, off)
                if chunk.count(0) != len(chunk):
                    j = len(chunk) - len(chunk.lstrip(b"\0"))
                    raise Fail("member %d has data at offset %d in extent %d owned by member %d" %
                               (m, off + j, i, owner))
        chunk = os.pread(fds[owner], length, off) if has_data(owner, off, length) else b""
        chunk = chunk + zero[:length - len(chunk)]
        owned[owner] += length
        if chunk != zero[:length]:
            nonzero_owned[owner] += 1
        md5.update(chunk)
    if a.device:
        # explicit spot checks: 4 KiB inside extents 0..n-1 of the first
        # member's file against the device (O_DIRECT: no stale page cache)
        m = ids[0]
        dfd = os.open(a.device, os.O_RDONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, 4096)
        for i in range(min(a.spot, nr)):
            off = i * ext + 8192
            os.preadv(dfd, [buf], off)
            dev = bytes(buf)
            mine = os.pread(fds[m], 4096, off)
            mine = mine + bytes(4096 - len(mine))
            owner = stripe[i % len(stripe)]
            if owner == m:
                expect(mine == dev and dev != bytes(4096),
                       "member %d's file at %d (extent %d, its own) differs from the device "
                       "or is empty" % (m, off, i))
            else:
                expect(mine == bytes(4096), "member %d's file at %d (extent %d, owned by %d) "
                       "is not zero" % (m, off, i, owner))
        os.close(dfd)
        ok("spot checks of member %d's file in extents 0-%d against %s" %
           (m, min(a.spot, nr) - 1, a.device))
    for fd in fds.values():
        os.close(fd)
    ok("every member has only holes/zeroes outside its extents")
    print("owned " + " ".join("%d=%d" % (m, owned[m]) for m in ids))
    print("written_extents " + " ".join("%d=%d" % (m, nonzero_owned[m]) for m in ids))
    print("md5 " + md5.hexdigest())


def block_data(off, gen):
    return struct.pack(">QQ", off, gen) * 256


def cmd_linkcut(a):
    import subprocess
    c = Conn(a.host, a.port, a.export)
    n = 4 * len(a.stripe)
    blocks = [(e * a.ext + 4096 * (e % 7), a.stripe[e % len(a.stripe)]) for e in range(n)]
    acked = {}          # off -> the last acknowledged content
    maybe = {}          # off -> contents of writes that failed after it
    stats = {"ok": 0, "eio": 0, "cut_ok": 0}
    gen = [0]

    def write_all(phase, allow_fail_owner=None):
        gen[0] += 1
        fails = 0
        for off, owner in blocks:
            d = block_data(off, gen[0])
            err, _ = c.cmd(CMD_WRITE, off, len(d), d)
            if err == 0:
                acked[off] = d
                maybe[off] = []
                stats["ok"] += 1
                if owner == allow_fail_owner:
                    stats["cut_ok"] += 1
                continue
            expect(owner == allow_fail_owner,
                   "%s: WRITE at %d (member %d's extent) failed with errno %d" %
                   (phase, off, owner, err))
            expect(err == errno.EIO, "%s: WRITE at %d failed with errno %d, not EIO" %
                   (phase, off, err))
            maybe.setdefault(off, []).append(d)
            stats["eio"] += 1
            fails += 1
        return fails

    write_all("before the cut")
    ok("%d blocks written on %d members" % (n, len(a.stripe)))
    subprocess.run(a.cut, shell=True, check=True)
    t_cut = time.monotonic()
    passes = fails = 0
    while time.monotonic() - t_cut < a.cut_secs:
        fails += write_all("while member %d is cut" % a.cut_member, a.cut_member)
        passes += 1
    ok("member %d cut for %.1f s: %d passes, %d writes to its extents failed (EIO), "
       "%d succeeded; every write to the others succeeded" %
       (a.cut_member, time.monotonic() - t_cut, passes, fails, stats["cut_ok"]))
    expect(fails > 0, "no write to member %d's extents failed while it was cut" % a.cut_member)
    subprocess.run(a.restore, shell=True, check=True)
    t_back = time.monotonic()
    cut_blocks = [off for off, owner in blocks if owner == a.cut_member]
    while True:
        d = block_data(cut_blocks[0], 1 << 40)
        err, _ = c.cmd(CMD_WRITE, cut_blocks[0], len(d), d)
        if err == 0:
            acked[cut_blocks[0]] = d
            maybe[cut_blocks[0]] = []
            break
        maybe.setdefault(cut_blocks[0], []).append(d)
        expect(time.monotonic() - t_back < 60, "member %d's extents still fail 60 s after "
               "its network came back" % a.cut_member)
        time.sleep(0.5)
    ok("member %d serves again %.1f s after its network came back" %
       (a.cut_member, time.monotonic() - t_back))
    verified = mism = landed_failed = 0
    for off, owner in blocks:
        got = c.read(off, 4096)
        if got == acked[off]:
            verified += 4096
        elif got in maybe.get(off, []):
            landed_failed += 1
            verified += 4096
        else:
            mism += 1
    ok("verified %d bytes of acknowledged writes, %d blocks hold a write that failed "
       "after it, %d mismatches" % (verified, landed_failed, mism))
    expect(mism == 0, "%d blocks hold neither their last acknowledged write nor a later "
           "failed one" % mism)
    write_all("after the link came back")
    for off, _ in blocks:
        expect(c.read(off, 4096) == acked[off], "block %d does not read back after recovery" % off)
    ok("all %d blocks rewritten and read back after recovery; %d writes acknowledged, "
       "%d failed in all" % (n, stats["ok"], stats["eio"]))
    c.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["straddle", "compare", "layout", "linkcut"])
    p.add_argument("args", nargs="*")
    p.add_argument("--size", type=parse_size, default=256 << 20)
    p.add_argument("--ext", type=parse_size, default=1 << 20)
    p.add_argument("--stripe", default="1,2,3")
    p.add_argument("--window", type=parse_size, default=40 << 20)
    p.add_argument("--model")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--device", help="layout: also spot-check the first member's file against it")
    p.add_argument("--spot", type=int, default=9, help="layout: spot-check extents 0..SPOT-1")
    p.add_argument("--cut-member", type=int, default=3)
    p.add_argument("--cut", help="linkcut: shell command that cuts the member's network")
    p.add_argument("--restore", help="linkcut: shell command that restores it")
    p.add_argument("--cut-secs", type=float, default=15)
    a = p.parse_intermixed_args()
    a.stripe = [int(x) for x in a.stripe.split(",")]
    try:
        if a.what in ("straddle", "compare"):
            expect(len(a.args) == 3, "need HOST PORT EXPORT")
            a.host, a.port, a.export = a.args[0], int(a.args[1]), a.args[2]
            expect(a.model, "need --model")
            (cmd_straddle if a.what == "straddle" else cmd_compare)(a)
        elif a.what == "linkcut":
            expect(len(a.args) == 3 and a.cut and a.restore, "need HOST PORT EXPORT --cut --restore")
            a.host, a.port, a.export = a.args[0], int(a.args[1]), a.args[2]
            cmd_linkcut(a)
        else:
            a.files = a.args
            cmd_layout(a)
    except Fail as e:
        print("FAIL: %s" % e, flush=True)
        return 1
    except (OSError, struct.error) as e:
        print("FAIL: %s: %s" % (type(e).__name__, e), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
