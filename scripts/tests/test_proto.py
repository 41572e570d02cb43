#!/usr/bin/env python3
"""Raw-socket NBD protocol checks for knbd (run by test_proto.sh in the VM).

Speaks the NBD wire protocol directly (fixed newstyle handshake, options,
simple replies) to check what stock clients never send: every option path,
error replies, pipelining, hostile input, connection limits.

Each check prints "PASS: proto_NAME" or "FAIL: proto_NAME: reason" and appends
the line to --results. Exit status 1 if any check failed.

Works against any NBD server for debugging the checks themselves (e.g.
nbd-server or nbdkit on the host); only knbd is expected to pass all of them.
"""

import argparse
import os
import random
import select
import socket
import struct
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nbdwire import W  # noqa: E402

# The wire numbers come from the module's header (nbdwire.py reads it).
NBDMAGIC = W.MAGIC_INIT
IHAVEOPT = W.MAGIC_IHAVEOPT
OPT_REPLY_MAGIC = W.MAGIC_OPT_REPLY
REQUEST_MAGIC = W.MAGIC_REQUEST
SIMPLE_REPLY_MAGIC = W.MAGIC_SIMPLE_REPLY
STRUCTURED_REPLY_MAGIC = 0x668E33EF  # what knbd must never send (no structured replies)

FLAG_FIXED_NEWSTYLE = W.CL_FLAG_FIXED_NEWSTYLE
FLAG_NO_ZEROES = W.CL_FLAG_NO_ZEROES

OPT_EXPORT_NAME = W.OPT_EXPORT_NAME
OPT_ABORT = W.OPT_ABORT
OPT_LIST = W.OPT_LIST
OPT_PEEK_EXPORT = W.OPT_PEEK_EXPORT
OPT_STARTTLS = W.OPT_STARTTLS
OPT_INFO = W.OPT_INFO
OPT_GO = W.OPT_GO
OPT_STRUCTURED_REPLY = W.OPT_STRUCTURED_REPLY
OPT_LIST_META_CONTEXT = W.OPT_LIST_META_CONTEXT
OPT_SET_META_CONTEXT = W.OPT_SET_META_CONTEXT
OPT_EXTENDED_HEADERS = W.OPT_EXTENDED_HEADERS

REP_ACK = W.REP_ACK
REP_SERVER = W.REP_SERVER
REP_INFO = W.REP_INFO
REP_ERR = W.REP_FLAG_ERROR
REP_ERR_UNSUP = W.REP_ERR_UNSUP
REP_ERR_POLICY = W.REP_ERR_POLICY
REP_ERR_INVALID = W.REP_ERR_INVALID
REP_ERR_PLATFORM = W.REP_ERR_PLATFORM
REP_ERR_TLS_REQD = W.REP_ERR_TLS_REQD
REP_ERR_UNKNOWN = W.REP_ERR_UNKNOWN
REP_ERR_SHUTDOWN = W.REP_ERR_SHUTDOWN
REP_ERR_BLOCK_SIZE_REQD = W.REP_ERR_BLOCK_SIZE_REQD
REP_ERR_TOO_BIG = W.REP_ERR_TOO_BIG

REP_NAMES = {
    REP_ACK: "ACK", REP_SERVER: "SERVER", REP_INFO: "INFO",
    REP_ERR_UNSUP: "ERR_UNSUP", REP_ERR_POLICY: "ERR_POLICY",
    REP_ERR_INVALID: "ERR_INVALID", REP_ERR_PLATFORM: "ERR_PLATFORM",
    REP_ERR_TLS_REQD: "ERR_TLS_REQD", REP_ERR_UNKNOWN: "ERR_UNKNOWN",
    REP_ERR_SHUTDOWN: "ERR_SHUTDOWN", REP_ERR_BLOCK_SIZE_REQD: "ERR_BLOCK_SIZE_REQD",
    REP_ERR_TOO_BIG: "ERR_TOO_BIG",
}

INFO_EXPORT = W.INFO_EXPORT
INFO_NAME = W.INFO_NAME
INFO_DESCRIPTION = W.INFO_DESCRIPTION
INFO_BLOCK_SIZE = W.INFO_BLOCK_SIZE

TF_HAS_FLAGS = W.FLAG_HAS_FLAGS
TF_READ_ONLY = W.FLAG_READ_ONLY
TF_SEND_FLUSH = W.FLAG_SEND_FLUSH
TF_SEND_FUA = W.FLAG_SEND_FUA
TF_ROTATIONAL = W.FLAG_ROTATIONAL
TF_SEND_TRIM = W.FLAG_SEND_TRIM
TF_SEND_WRITE_ZEROES = W.FLAG_SEND_WRITE_ZEROES
TF_SEND_DF = W.FLAG_SEND_DF
TF_CAN_MULTI_CONN = W.FLAG_CAN_MULTI_CONN

CMD_READ = W.CMD_READ
CMD_WRITE = W.CMD_WRITE
CMD_DISC = W.CMD_DISC
CMD_FLUSH = W.CMD_FLUSH
CMD_TRIM = W.CMD_TRIM
CMD_CACHE = W.CMD_CACHE
CMD_WRITE_ZEROES = W.CMD_WRITE_ZEROES
CMD_BLOCK_STATUS = W.CMD_BLOCK_STATUS

CF_FUA = W.CMD_FLAG_FUA
CF_NO_HOLE = W.CMD_FLAG_NO_HOLE

EPERM = W.EPERM
EIO = W.EIO
EINVAL = W.EINVAL
ENOSPC = W.ENOSPC
ERRNAMES = {0: "OK", 1: "EPERM", 5: "EIO", 12: "ENOMEM", 22: "EINVAL", 28: "ENOSPC",
            75: "EOVERFLOW", 95: "ENOTSUP", 108: "ESHUTDOWN"}

MAX_PAYLOAD = 32 << 20
EXPECTED_FLAGS = (TF_HAS_FLAGS | TF_SEND_FLUSH | TF_SEND_FUA | TF_SEND_TRIM |
                  TF_SEND_WRITE_ZEROES | TF_CAN_MULTI_CONN)

TIMEOUT = 20.0  # per socket operation; TCG is slow


class CheckFailed(Exception):
    pass


class Closed(Exception):
    """The server closed the connection (EOF or reset)."""


def errname(e):
    return ERRNAMES.get(e, str(e))


def repname(t):
    return REP_NAMES.get(t, hex(t))


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


class Conn:
    """One TCP connection to the server, with NBD framing helpers."""

    def __init__(self, host, port, timeout=TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.hflags = None
        self.no_zeroes = False
        self.size = None
        self.tflags = None
        self.infos = {}

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    # ---- raw I/O
    def send(self, data):
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise Closed("send: %s" % e)

    def recv_exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except ConnectionResetError:
                raise Closed("connection reset after %d of %d bytes" % (len(buf), n))
            except socket.timeout:
                raise CheckFailed("timed out waiting for %d bytes (got %d)" % (n, len(buf)))
            if not chunk:
                raise Closed("EOF after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return bytes(buf)

    def wait_closed(self, timeout=10.0):
        """True if the server closes (EOF/RST) within timeout; data is discarded."""
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return False
            try:
                d = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return True
            except OSError:
                return True
            if not d:
                return True

    def nothing_pending(self, wait=0.3):
        """True if no bytes arrive within `wait` seconds (and not closed)."""
        r, _, _ = select.select([self.sock], [], [], wait)
        if not r:
            return True
        return False

    # ---- handshake
    def greeting(self):
        d = self.recv_exact(18)
        magic, opt, hflags = struct.unpack(">QQH", d)
        expect(magic == NBDMAGIC, "bad NBDMAGIC %#x" % magic)
        expect(opt == IHAVEOPT, "bad IHAVEOPT %#x (oldstyle?)" % opt)
        self.hflags = hflags
        return hflags

    def client_flags(self, cflags=FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES):
        self.no_zeroes = bool(cflags & FLAG_NO_ZEROES)
        self.send(struct.pack(">I", cflags))

    def start(self, cflags=FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES):
        self.greeting()
        self.client_flags(cflags)
        return self

    def send_opt(self, opt, data=b"", length=None):
        if length is None:
            length = len(data)
        self.send(struct.pack(">QII", IHAVEOPT, opt, length) + data)

    def opt_reply(self):
        d = self.recv_exact(20)
        magic, opt, rtype, rlen = struct.unpack(">QIII", d)
        expect(magic == OPT_REPLY_MAGIC, "bad option reply magic %#x" % magic)
        expect(rlen <= 1 << 20, "absurd option reply length %d" % rlen)
        data = self.recv_exact(rlen) if rlen else b""
        return opt, rtype, data

    def opt_simple(self, opt, data=b""):
        """Send an option expecting a single reply; returns (rtype, data)."""
        self.send_opt(opt, data)
        ropt, rtype, rdata = self.opt_reply()
        expect(ropt == opt, "reply for option %d carries option %d" % (opt, ropt))
        return rtype, rdata

    @staticmethod
    def info_payload(name, reqs=()):
        nb = name.encode()
        return (struct.pack(">I", len(nb)) + nb + struct.pack(">H", len(reqs)) +
                b"".join(struct.pack(">H", r) for r in reqs))

    def info_or_go(self, opt, name, reqs=()):
        """NBD_OPT_INFO/GO. Returns (final rtype, infos dict, list of all replies).
        infos: INFO_EXPORT -> (size, flags), INFO_NAME -> str,
               INFO_DESCRIPTION -> str, INFO_BLOCK_SIZE -> (min, pref, max)."""
        self.send_opt(opt, self.info_payload(name, reqs))
        infos = {}
        replies = []
        while True:
            ropt, rtype, data = self.opt_reply()
            replies.append((rtype, data))
            expect(ropt == opt, "reply for option %d carries option %d" % (opt, ropt))
            if rtype != REP_INFO:
                break
            expect(len(data) >= 2, "short NBD_REP_INFO (%d bytes)" % len(data))
            itype = struct.unpack(">H", data[:2])[0]
            if itype == INFO_EXPORT:
                expect(len(data) == 12, "NBD_INFO_EXPORT has length %d, want 12" % len(data))
                infos[itype] = struct.unpack(">QH", data[2:])
            elif itype == INFO_NAME:
                infos[itype] = data[2:].decode(errors="replace")
            elif itype == INFO_DESCRIPTION:
                infos[itype] = data[2:].decode(errors="replace")
            elif itype == INFO_BLOCK_SIZE:
                expect(len(data) == 14, "NBD_INFO_BLOCK_SIZE has length %d, want 14" % len(data))
                infos[itype] = struct.unpack(">III", data[2:])
            else:
                infos[itype] = data[2:]
        if rtype == REP_ACK:
            expect(INFO_EXPORT in infos, "%s ACKed without NBD_INFO_EXPORT" %
                   ("GO" if opt == OPT_GO else "INFO"))
            if opt == OPT_GO:
                self.size, self.tflags = infos[INFO_EXPORT]
                self.infos = infos
        return rtype, infos, replies

    def go(self, name, reqs=(INFO_BLOCK_SIZE,)):
        rtype, infos, _ = self.info_or_go(OPT_GO, name, reqs)
        expect(rtype == REP_ACK, "GO %r answered %s" % (name, repname(rtype)))
        return infos

    def export_name(self, name):
        self.send_opt(OPT_EXPORT_NAME, name.encode())
        d = self.recv_exact(10)
        self.size, self.tflags = struct.unpack(">QH", d)
        if not self.no_zeroes:
            z = self.recv_exact(124)
            expect(z == bytes(124), "124 reserved bytes after EXPORT_NAME are not zero")
        return self.size, self.tflags

    # ---- transmission
    def send_req(self, cmd, handle, offset, length, flags=0, payload=b"", magic=REQUEST_MAGIC):
        self.send(struct.pack(">IHHQQI", magic, flags, cmd, handle, offset, length) + payload)

    def reply(self):
        d = self.recv_exact(16)
        magic, err, handle = struct.unpack(">IIQ", d)
        expect(magic != STRUCTURED_REPLY_MAGIC, "structured reply without negotiation")
        expect(magic == SIMPLE_REPLY_MAGIC, "bad reply magic %#x" % magic)
        return err, handle

    def cmd(self, cmd, offset, length, flags=0, payload=b"", handle=None):
        """Send one request and wait for its reply. Returns (err, data)."""
        if handle is None:
            handle = random.getrandbits(64)
        self.send_req(cmd, handle, offset, length, flags, payload)
        err, h = self.reply()
        expect(h == handle, "reply handle %#x, want %#x" % (h, handle))
        data = b""
        if cmd == CMD_READ and err == 0:
            data = self.recv_exact(length)
        return err, data

    def read(self, offset, length, flags=0):
        err, data = self.cmd(CMD_READ, offset, length, flags)
        expect(err == 0, "READ %d+%d failed: %s" % (offset, length, errname(err)))
        return data

    def write(self, offset, data, flags=0):
        err, _ = self.cmd(CMD_WRITE, offset, len(data), flags, data)
        expect(err == 0, "WRITE %d+%d failed: %s" % (offset, len(data), errname(err)))

    def expect_err(self, want, cmd, offset, length, flags=0, payload=b"", what=""):
        err, _ = self.cmd(cmd, offset, length, flags, payload)
        if isinstance(want, (tuple, list, set)):
            expect(err in want, "%s: got %s, want one of %s" %
                   (what, errname(err), "/".join(errname(w) for w in want)))
        else:
            expect(err == want, "%s: got %s, want %s" % (what, errname(err), errname(want)))
        return err

    def alive(self, what="connection"):
        """Connection still in sync: a small READ gets the right reply."""
        try:
            self.read(0, 4096)  # a multiple of every block size
        except Closed as e:
            raise CheckFailed("%s was closed: %s" % (what, e))


# ---------------------------------------------------------------- harness --

class Harness:
    def __init__(self, args):
        self.a = args
        self.npass = 0
        self.nfail = 0
        self.failed = []
        self.results = open(args.results, "a") if args.results else None
        self.only = set(args.only.split(",")) if args.only else None

    def report(self, line):
        print(line, flush=True)
        if self.results:
            self.results.write(line + "\n")
            self.results.flush()

    def run(self, name, fn):
        full = "proto_" + name
        if self.only and name not in self.only and full not in self.only:
            return
        t0 = time.monotonic()
        try:
            fn()
        except CheckFailed as e:
            self.fail(full, str(e))
        except Closed as e:
            self.fail(full, "connection closed unexpectedly: %s" % e)
        except (ConnectionRefusedError, socket.timeout, OSError) as e:
            self.fail(full, "%s: %s" % (type(e).__name__, e))
        except Exception as e:  # a bug in the check itself
            self.fail(full, "test error %s: %s" % (type(e).__name__, e))
            traceback.print_exc()
        else:
            self.npass += 1
            self.report("PASS: %s" % full)
        sys.stderr.write("    (%s: %.1fs)\n" % (full, time.monotonic() - t0))

    def fail(self, name, reason):
        self.nfail += 1
        self.failed.append(name)
        self.report("FAIL: %s: %s" % (name, reason.replace("\n", " ")))


# ------------------------------------------------------------------ checks --

class Checks:
    def __init__(self, a):
        self.a = a
        self.host = a.host
        self.port = a.port
        self.rng = random.Random(a.seed)

    # ---- helpers
    def conn(self, port=None):
        return Conn(self.host, port or self.port)

    def go_conn(self, export=None, port=None, reqs=(INFO_BLOCK_SIZE,)):
        c = self.conn(port)
        try:
            c.start()
            c.go(export or self.a.export, reqs)
        except Exception:
            c.close()
            raise
        return c

    def rand(self, n):
        return self.rng.getrandbits(8 * n).to_bytes(n, "little") if n else b""

    def stats(self, vol):
        if not self.a.cfs_node:
            return None
        p = os.path.join(self.a.cfs_node, "volumes", vol, "stats")
        d = {}
        with open(p) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2:
                    try:
                        d[parts[0]] = int(parts[1])
                    except ValueError:
                        pass
        return d

    def clients_lines(self, cfs_node=None):
        node = cfs_node or self.a.cfs_node
        if not node:
            return None
        with open(os.path.join(node, "clients")) as f:
            return [line.rstrip("\n") for line in f if line.strip()]

    def backing_read(self, offset, length):
        with open(self.a.backing, "rb") as f:
            return os.pread(f.fileno(), length, offset)

    def server_alive(self):
        """A fresh connection negotiates and serves a read."""
        with self.go_conn() as c:
            c.alive("fresh connection")

    # ================================================================ handshake

    def hs_greeting(self):
        with self.conn() as c:
            d = c.recv_exact(18)
            magic, opt, hflags = struct.unpack(">QQH", d)
            expect(magic == NBDMAGIC, "NBDMAGIC is %#x" % magic)
            expect(opt == IHAVEOPT, "IHAVEOPT is %#x" % opt)
            expect(hflags == FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES,
                   "handshake flags %#x, want FIXED_NEWSTYLE|NO_ZEROES (0x3)" % hflags)
            expect(c.nothing_pending(0.3), "server sent more than the 18-byte greeting")

    def hs_unknown_client_flags(self):
        # "the server MUST close the TCP connection if it does not recognize
        # the client's flags"
        with self.conn() as c:
            c.greeting()
            c.client_flags(FLAG_FIXED_NEWSTYLE | 0x80000000)
            try:
                c.send_opt(OPT_LIST)
            except Closed:
                return
            expect(c.wait_closed(10), "connection not closed after unknown client flags")

    def hs_export_name_no_zeroes(self):
        with self.conn() as c:
            c.start(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)
            size, flags = c.export_name(self.a.export)
            expect(size == self.a.size, "size %d, want %d" % (size, self.a.size))
            expect(flags == EXPECTED_FLAGS, "flags %#x, want %#x" % (flags, EXPECTED_FLAGS))
            # no 124 zero bytes may follow: the first reply must start right away
            c.alive("connection after EXPORT_NAME with NO_ZEROES")

    def hs_export_name_zeroes(self):
        with self.conn() as c:
            c.start(FLAG_FIXED_NEWSTYLE)
            size, flags = c.export_name(self.a.export)  # reads and checks the 124 zeroes
            expect(size == self.a.size, "size %d, want %d" % (size, self.a.size))
            c.alive("connection after EXPORT_NAME without NO_ZEROES")

    def hs_export_name_unknown(self):
        with self.conn() as c:
            c.start()
            c.send_opt(OPT_EXPORT_NAME, b"no-such-export")
            expect(c.wait_closed(10), "EXPORT_NAME of an unknown export did not close the connection")
        self.server_alive()

    def hs_export_name_ro(self):
        with self.conn() as c:
            c.start()
            size, flags = c.export_name(self.a.ro_export)
            # the write-side flags (FUA, TRIM, WRITE_ZEROES) may be left out
            need = TF_HAS_FLAGS | TF_READ_ONLY | TF_CAN_MULTI_CONN
            expect(flags & need == need and not flags & ~(EXPECTED_FLAGS | TF_READ_ONLY),
                   "read-only export flags %#x, want %#x plus a subset of %#x" %
                   (flags, need, EXPECTED_FLAGS))

    def hs_bad_option_magic(self):
        with self.conn() as c:
            c.start()
            c.send(struct.pack(">QII", 0x1122334455667788, OPT_LIST, 0))
            expect(c.wait_closed(10), "bad option magic did not close the connection")
        self.server_alive()

    # ================================================================= options

    def opt_list(self):
        with self.conn() as c:
            c.start()
            c.send_opt(OPT_LIST)
            names = []
            details = {}
            while True:
                opt, rtype, data = c.opt_reply()
                expect(opt == OPT_LIST, "LIST reply carries option %d" % opt)
                if rtype == REP_SERVER:
                    expect(len(data) >= 4, "short NBD_REP_SERVER")
                    n = struct.unpack(">I", data[:4])[0]
                    expect(4 + n <= len(data), "NBD_REP_SERVER name length %d > payload" % n)
                    names.append(data[4:4 + n].decode())
                    details[names[-1]] = data[4 + n:].decode(errors="replace")
                    continue
                expect(rtype == REP_ACK, "LIST ended with %s" % repname(rtype))
                break
            for e in (self.a.export, self.a.ro_export, self.a.bs_export):
                expect(e in names, "export %r missing from LIST %r" % (e, names))
            expect(len(names) == len(set(names)), "duplicate names in LIST %r" % names)
            # the free-text tail of NBD_REP_SERVER carries the description
            # (what nbdinfo --list shows)
            if self.a.desc:
                expect(details.get(self.a.export) == self.a.desc,
                       "LIST entry of %r has details %r, want the description %r" %
                       (self.a.export, details.get(self.a.export), self.a.desc))
            if self.a.disabled_export:
                expect(self.a.disabled_export not in names,
                       "disabled volume %r is listed" % self.a.disabled_export)
            # negotiation goes on after LIST
            c.go(self.a.export)
            c.alive()

    def opt_list_with_data(self):
        with self.conn() as c:
            c.start()
            rtype, _ = c.opt_simple(OPT_LIST, b"junk")
            expect(rtype & REP_ERR, "LIST with a payload answered %s, want an error "
                   "(ERR_INVALID)" % repname(rtype))
            c.go(self.a.export)
            c.alive()

    def opt_info_rw(self):
        with self.conn() as c:
            c.start()
            rtype, infos, _ = c.info_or_go(
                OPT_INFO, self.a.export, (INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE))
            expect(rtype == REP_ACK, "INFO answered %s" % repname(rtype))
            size, flags = infos[INFO_EXPORT]
            expect(size == self.a.size, "INFO_EXPORT size %d, want %d" % (size, self.a.size))
            expect(flags == EXPECTED_FLAGS, "INFO_EXPORT flags %#x, want %#x" % (flags, EXPECTED_FLAGS))
            expect(infos.get(INFO_NAME) == self.a.export,
                   "INFO_NAME %r, want %r" % (infos.get(INFO_NAME), self.a.export))
            expect(infos.get(INFO_DESCRIPTION) == self.a.desc,
                   "INFO_DESCRIPTION %r, want %r" % (infos.get(INFO_DESCRIPTION), self.a.desc))
            bs = infos.get(INFO_BLOCK_SIZE)
            expect(bs == (512, 4096, MAX_PAYLOAD), "INFO_BLOCK_SIZE %r, want (512, 4096, %d)" %
                   (bs, MAX_PAYLOAD))
            # INFO does not end negotiation; GO on the same connection works
            c.go(self.a.export)
            c.alive("connection after INFO+GO")

    def opt_info_ro(self):
        with self.conn() as c:
            c.start()
            rtype, infos, _ = c.info_or_go(OPT_INFO, self.a.ro_export, (INFO_BLOCK_SIZE,))
            expect(rtype == REP_ACK, "INFO answered %s" % repname(rtype))
            size, flags = infos[INFO_EXPORT]
            expect(size == self.a.ro_size, "size %d, want %d" % (size, self.a.ro_size))
            expect(flags & TF_READ_ONLY, "read-only export lacks NBD_FLAG_READ_ONLY (flags %#x)" % flags)

    def opt_info_bs4k(self):
        with self.conn() as c:
            c.start()
            rtype, infos, _ = c.info_or_go(OPT_INFO, self.a.bs_export, (INFO_BLOCK_SIZE,))
            expect(rtype == REP_ACK, "INFO answered %s" % repname(rtype))
            bs = infos.get(INFO_BLOCK_SIZE)
            expect(bs == (4096, 4096, MAX_PAYLOAD), "INFO_BLOCK_SIZE %r, want (4096, 4096, %d)" %
                   (bs, MAX_PAYLOAD))

    def opt_go_no_block_size_request(self):
        with self.conn() as c:
            c.start()
            rtype, infos, _ = c.info_or_go(OPT_GO, self.a.export, ())
            expect(rtype == REP_ACK, "GO without info requests answered %s" % repname(rtype))
            expect(infos[INFO_EXPORT] == (self.a.size, EXPECTED_FLAGS),
                   "INFO_EXPORT %r, want (%d, %#x)" % (infos[INFO_EXPORT], self.a.size, EXPECTED_FLAGS))
            c.alive("connection after GO")

    def opt_go_block_size_request(self):
        with self.conn() as c:
            c.start()
            rtype, infos, _ = c.info_or_go(OPT_GO, self.a.bs_export, (INFO_BLOCK_SIZE,))
            expect(rtype == REP_ACK, "GO answered %s" % repname(rtype))
            bs = infos.get(INFO_BLOCK_SIZE)
            expect(bs is not None and bs[0] == 4096, "GO INFO_BLOCK_SIZE %r, want min 4096" % (bs,))
            d = c.read(4096, 4096)
            expect(len(d) == 4096, "short read")

    def opt_info_unknown(self):
        with self.conn() as c:
            c.start()
            rtype, _, _ = c.info_or_go(OPT_INFO, "no-such-export", (INFO_BLOCK_SIZE,))
            expect(rtype == REP_ERR_UNKNOWN, "INFO unknown export answered %s, want ERR_UNKNOWN" %
                   repname(rtype))
            rtype, _, _ = c.info_or_go(OPT_GO, "no-such-export", ())
            expect(rtype == REP_ERR_UNKNOWN, "GO unknown export answered %s, want ERR_UNKNOWN" %
                   repname(rtype))
            if self.a.disabled_export:
                rtype, _, _ = c.info_or_go(OPT_GO, self.a.disabled_export, ())
                expect(rtype & REP_ERR, "GO on disabled volume %r answered %s, want an error" %
                       (self.a.disabled_export, repname(rtype)))
            rtype, _, _ = c.info_or_go(OPT_GO, "", ())
            expect(rtype & REP_ERR, "GO on the empty (default) export name answered %s, "
                   "want an error (no such volume)" % repname(rtype))
            # session continues
            c.go(self.a.export)
            c.alive("connection after ERR_UNKNOWN")

    def opt_unsupported(self):
        with self.conn() as c:
            c.start()
            for opt, data in ((OPT_STARTTLS, b""), (OPT_STRUCTURED_REPLY, b""),
                              (OPT_LIST_META_CONTEXT, b""), (OPT_SET_META_CONTEXT, b""),
                              (OPT_PEEK_EXPORT, b""), (OPT_EXTENDED_HEADERS, b""),
                              (0x4242, b""), (0x7fffffff, self.rand(100)),
                              (0x4243, self.rand(4096))):
                rtype, _ = c.opt_simple(opt, data)
                expect(rtype == REP_ERR_UNSUP, "option %#x (len %d) answered %s, want ERR_UNSUP" %
                       (opt, len(data), repname(rtype)))
            # the session still negotiates normally
            c.go(self.a.export)
            err, _ = c.cmd(CMD_READ, 0, 4096)
            expect(err == 0, "READ after STRUCTURED_REPLY refusal: %s" % errname(err))

    def opt_many_unsupported(self):
        with self.conn() as c:
            c.start()
            for i in range(16):
                rtype, _ = c.opt_simple(0x1000 + i, b"x" * (i % 7))
                expect(rtype == REP_ERR_UNSUP, "option #%d answered %s" % (i, repname(rtype)))
            c.go(self.a.export)
            c.alive()

    def opt_abort(self):
        with self.conn() as c:
            c.start()
            c.send_opt(OPT_ABORT)
            # the server may ACK; either way it must close
            try:
                opt, rtype, _ = c.opt_reply()
                expect(opt == OPT_ABORT and rtype == REP_ACK,
                       "ABORT answered option %d %s, want ACK or close" % (opt, repname(rtype)))
            except Closed:
                return
            expect(c.wait_closed(10), "connection still open 10 s after ABORT")

    def opt_info_garbage_lengths(self):
        cases = [
            # (description, option data)
            ("name length beyond option", struct.pack(">I", 1000) + b"abc" + struct.pack(">H", 0)),
            ("truncated (2 bytes)", b"\x00\x00"),
            ("request count beyond option",
             struct.pack(">I", len(self.a.export)) + self.a.export.encode() + struct.pack(">HH", 50, 3)),
            ("name length 0xffffffff", struct.pack(">I", 0xFFFFFFFF) + b"\x00" * 8),
            ("trailing garbage", self.info_payload(self.a.export) + b"garbage"),
        ]
        for desc, data in cases:
            for opt in (OPT_INFO, OPT_GO):
                with self.conn() as c:
                    c.start()
                    c.send_opt(opt, data)
                    try:
                        ropt, rtype, _ = c.opt_reply()
                    except Closed:
                        continue  # closing on malformed input is allowed
                    expect(rtype & REP_ERR, "%s with %s answered %s, want ERR_INVALID" %
                           ("INFO" if opt == OPT_INFO else "GO", desc, repname(rtype)))
                    # negotiation goes on (the server consumed exactly the option)
                    try:
                        c.go(self.a.export)
                    except Closed:
                        continue
                    c.alive()
        self.server_alive()

    @staticmethod
    def info_payload(name, reqs=()):
        return Conn.info_payload(name, reqs)

    def opt_oversized(self):
        # 1 MiB option payload: error reply (after skipping it) or close
        with self.conn() as c:
            c.start()
            big = self.rand(1 << 20)
            try:
                c.send_opt(OPT_INFO, big)
                ropt, rtype, _ = c.opt_reply()
                expect(rtype & REP_ERR, "1 MiB INFO option answered %s" % repname(rtype))
                c.go(self.a.export)
                c.alive()
            except Closed:
                pass
        # announce 4 GiB, send a little, hang up
        with self.conn() as c:
            c.start()
            c.send_opt(0x4242, b"x" * 100, length=0xFFFFFFFF)
            time.sleep(0.2)
        with self.conn() as c:
            c.start()
            c.send_opt(OPT_GO, b"", length=0xFFFFFFFF)
            closed = c.wait_closed(3)
            # either it closed (refused the length) or it is still reading: both fine
        # EXPORT_NAME with an absurd name length
        with self.conn() as c:
            c.start()
            c.send_opt(OPT_EXPORT_NAME, b"x" * 16, length=0x7FFFFFFF)
            time.sleep(0.2)
        self.server_alive()

    # ============================================================ transmission

    def io_roundtrip(self):
        with self.go_conn() as c:
            size = self.a.size
            for off, ln in ((0, 65536), (1 << 20, 4096), (3 << 20 | 512, 512 * 7),
                            (size - 65536, 65536), (size - 512, 512)):
                data = self.rand(ln)
                c.write(off, data)
                got = c.read(off, ln)
                expect(got == data, "read-back mismatch at %d+%d" % (off, ln))
                if self.a.backing:
                    b = self.backing_read(off, ln)
                    expect(b == data, "backing file differs from written data at %d+%d" % (off, ln))
            # data written through the backing file is what READ returns
            if self.a.backing:
                data = self.rand(8192)
                with open(self.a.backing, "r+b") as f:
                    os.pwrite(f.fileno(), data, 5 << 20)
                got = c.read(5 << 20, 8192)
                expect(got == data, "READ does not return the backing file's bytes")

    def io_read_out_of_range(self):
        size = self.a.size
        with self.go_conn() as c:
            for off, ln in ((size, 512), (size - 512, 1024), (size + (1 << 30), 512),
                            (1 << 63, 512), ((1 << 64) - 512, 1024)):
                c.expect_err(EINVAL, CMD_READ, off, ln, what="READ %d+%d beyond the end" % (off, ln))
            c.alive()

    def io_write_out_of_range(self):
        size = self.a.size
        with self.go_conn() as c:
            tail = c.read(size - 512, 512)
            for off, ln in ((size, 512), (size - 512, 1024), (size + (1 << 30), 4096)):
                c.expect_err(ENOSPC, CMD_WRITE, off, ln, payload=self.rand(ln),
                             what="WRITE %d+%d beyond the end" % (off, ln))
            # offset + length wraps around 2^64
            c.expect_err((ENOSPC, EINVAL), CMD_WRITE, (1 << 64) - 512, 1024, payload=self.rand(1024),
                         what="WRITE with wrapping offset")
            # proto.md: ENOSPC for writes past the end, EINVAL for read and trim
            for cmd, nm, want in ((CMD_TRIM, "TRIM", EINVAL),
                                  (CMD_WRITE_ZEROES, "WRITE_ZEROES", ENOSPC)):
                c.expect_err(want, cmd, size, 4096, what="%s beyond the end" % nm)
                c.expect_err(want, cmd, size - 512, 4096, what="%s across the end" % nm)
                c.expect_err((ENOSPC, EINVAL), cmd, (1 << 64) - 512, 1024,
                             what="%s with wrapping offset" % nm)
            # payloads were consumed: the stream is in sync, nothing was written
            c.alive()
            expect(c.read(size - 512, 512) == tail, "a refused request changed the last block")

    def io_misaligned(self):
        with self.go_conn(self.a.bs_export) as c:
            before = c.read(0, 8192)
            cases = [
                (CMD_READ, 512, 4096, b"", "READ offset 512 on a 4096-block export"),
                (CMD_READ, 0, 512, b"", "READ length 512 on a 4096-block export"),
                (CMD_WRITE, 512, 4096, self.rand(4096), "WRITE offset 512"),
                (CMD_WRITE, 0, 1024, self.rand(1024), "WRITE length 1024"),
                (CMD_TRIM, 512, 4096, b"", "TRIM offset 512"),
                (CMD_WRITE_ZEROES, 0, 2048, b"", "WRITE_ZEROES length 2048"),
            ]
            for cmd, off, ln, pl, what in cases:
                c.expect_err(EINVAL, cmd, off, ln, payload=pl, what=what)
            c.alive()
            expect(c.read(0, 8192) == before, "a refused misaligned request changed data")
        with self.go_conn(self.a.export) as c:
            c.expect_err(EINVAL, CMD_READ, 1, 512, what="READ offset 1 on a 512-block export")
            c.expect_err(EINVAL, CMD_READ, 0, 100, what="READ length 100 on a 512-block export")
            c.expect_err(EINVAL, CMD_WRITE, 100, 512, payload=self.rand(512), what="WRITE offset 100")
            c.alive()

    def io_unknown_command(self):
        with self.go_conn() as c:
            for cmd in (CMD_CACHE, CMD_BLOCK_STATUS, 8, 99, 0xFFFF):
                c.expect_err(EINVAL, cmd, 0, 4096, what="command type %d" % cmd)
            c.alive()

    def io_unknown_flags(self):
        with self.go_conn() as c:
            data = self.rand(4096)
            c.write(1 << 20, data)
            c.expect_err(EINVAL, CMD_READ, 1 << 20, 4096, flags=0x8000, what="READ with flag 0x8000")
            c.expect_err(EINVAL, CMD_WRITE, 1 << 20, 4096, flags=0x4000, payload=self.rand(4096),
                         what="WRITE with flag 0x4000")
            c.expect_err(EINVAL, CMD_FLUSH, 0, 0, flags=0x100, what="FLUSH with flag 0x100")
            c.alive()
            expect(c.read(1 << 20, 4096) == data, "WRITE with unknown flags changed data")

    def io_read_only(self):
        with self.go_conn(self.a.ro_export) as c:
            expect(c.tflags & TF_READ_ONLY, "flags %#x lack READ_ONLY" % c.tflags)
            before = c.read(0, 65536)
            c.expect_err(EPERM, CMD_WRITE, 0, 4096, payload=self.rand(4096), what="WRITE on read-only")
            c.expect_err(EPERM, CMD_WRITE, 0, 4096, flags=CF_FUA, payload=self.rand(4096),
                         what="FUA WRITE on read-only")
            c.expect_err(EPERM, CMD_TRIM, 0, 4096, what="TRIM on read-only")
            c.expect_err(EPERM, CMD_WRITE_ZEROES, 0, 4096, what="WRITE_ZEROES on read-only")
            c.alive()
            expect(c.read(0, 65536) == before, "read-only export data changed")
            if self.a.ro_backing:
                with open(self.a.ro_backing, "rb") as f:
                    expect(os.pread(f.fileno(), 65536, 0) == before,
                           "read-only export READ differs from its backing file")

    def io_zero_length(self):
        with self.go_conn() as c:
            data = self.rand(512)
            c.write(2 << 20, data)
            for cmd, nm in ((CMD_READ, "READ"), (CMD_WRITE, "WRITE"), (CMD_TRIM, "TRIM"),
                            (CMD_WRITE_ZEROES, "WRITE_ZEROES")):
                h = self.rng.getrandbits(64)
                c.send_req(cmd, h, 2 << 20, 0)
                err, rh = c.reply()
                expect(rh == h, "%s len 0: reply handle mismatch" % nm)
                expect(err in (0, EINVAL), "%s len 0 answered %s, want OK or EINVAL" % (nm, errname(err)))
            c.alive()
            expect(c.read(2 << 20, 512) == data, "zero-length requests changed data")

    def _zeroes_case(self, c, flags, label):
        base = 8 << 20
        data = self.rand(131072)
        c.write(base, data)
        err, _ = c.cmd(CMD_WRITE_ZEROES, base + 16384, 65536, flags)
        expect(err == 0, "WRITE_ZEROES (%s) failed: %s" % (label, errname(err)))
        got = c.read(base, 131072)
        expect(got[16384:16384 + 65536] == bytes(65536), "WRITE_ZEROES (%s) range not zero" % label)
        expect(got[:16384] == data[:16384] and got[16384 + 65536:] == data[16384 + 65536:],
               "WRITE_ZEROES (%s) changed data outside its range" % label)
        if self.a.backing:
            expect(self.backing_read(base + 16384, 65536) == bytes(65536),
                   "backing file not zeroed by WRITE_ZEROES (%s)" % label)

    def io_write_zeroes(self):
        with self.go_conn() as c:
            self._zeroes_case(c, 0, "no flags")
            self._zeroes_case(c, CF_NO_HOLE, "NO_HOLE")
            self._zeroes_case(c, CF_FUA, "FUA")
            self._zeroes_case(c, CF_FUA | CF_NO_HOLE, "FUA|NO_HOLE")

    def io_trim(self):
        with self.go_conn() as c:
            base = 12 << 20
            c.write(base, self.rand(1 << 20))
            keep = self.rand(4096)
            c.write(base + (1 << 20), keep)
            err, _ = c.cmd(CMD_TRIM, base, 1 << 20)
            expect(err == 0, "TRIM failed: %s" % errname(err))
            err, _ = c.cmd(CMD_TRIM, base, 1 << 20, CF_FUA)
            expect(err == 0, "TRIM with FUA failed: %s" % errname(err))
            expect(c.read(base + (1 << 20), 4096) == keep, "TRIM changed data after its range")
            # one TRIM of the whole export (nbd.ko sends discards up to 4 GiB)
            err, _ = c.cmd(CMD_TRIM, 0, self.a.size)
            expect(err == 0, "TRIM of the whole export failed: %s" % errname(err))
            c.alive()

    def io_flush_fua(self):
        with self.go_conn() as c:
            err, _ = c.cmd(CMD_FLUSH, 0, 0)
            expect(err == 0, "FLUSH failed: %s" % errname(err))
            data = self.rand(65536)
            c.write(16 << 20, data, CF_FUA)
            expect(c.read(16 << 20, 65536) == data, "FUA write read-back mismatch")
            if self.a.backing:
                expect(self.backing_read(16 << 20, 65536) == data, "FUA write not in the backing file")
            err, _ = c.cmd(CMD_FLUSH, 0, 0)
            expect(err == 0, "second FLUSH failed: %s" % errname(err))

    def io_stats(self):
        if not self.a.cfs_node:
            raise CheckFailed("no --cfs-node given")
        with self.go_conn() as c:
            c.alive()
            s0 = self.stats(self.a.export)
            for k in ("reads", "writes", "read_bytes", "write_bytes", "flushes", "trims",
                      "write_zeroes", "errors"):
                expect(k in s0, "stats lacks %r: %r" % (k, s0))
            c.read(0, 4096)
            c.read(8192, 512)
            c.write(20 << 20, self.rand(8192))
            c.write(20 << 20, self.rand(4096), CF_FUA)
            c.cmd(CMD_FLUSH, 0, 0)
            c.cmd(CMD_TRIM, 21 << 20, 65536)
            c.cmd(CMD_WRITE_ZEROES, 22 << 20, 65536)
            c.cmd(CMD_WRITE_ZEROES, 22 << 20, 65536, CF_NO_HOLE)
            s1 = self.stats(self.a.export)
            want = {"reads": 2, "read_bytes": 4096 + 512, "writes": 2, "write_bytes": 12288,
                    "flushes": 1, "trims": 1, "write_zeroes": 2}
            bad = ["%s +%d (want +%d)" % (k, s1[k] - s0[k], v) for k, v in want.items()
                   if s1[k] - s0[k] != v]
            expect(not bad, "stats deltas wrong: " + ", ".join(bad))
            expect(s1["errors"] == s0["errors"], "errors counter moved on successful I/O")

    def io_pipeline(self):
        """Many requests in flight at once: every handle answered exactly once."""
        with self.go_conn() as c:
            base = 24 << 20
            n_regions = 64
            blk = 16384
            regions = [self.rand(blk) for _ in range(n_regions)]
            reqs = {}  # handle -> (cmd, offset, length, expected data or None)
            order = []
            for i in range(n_regions):
                h = self.rng.getrandbits(64)
                reqs[h] = (CMD_WRITE, base + i * blk, blk, None)
                order.append((h, CMD_WRITE, base + i * blk, blk, regions[i]))
            # reads of a region already written earlier (previous content known)
            for i in range(n_regions):
                h = self.rng.getrandbits(64)
                reqs[h] = (CMD_READ, 0, 4096, "any")
                order.append((h, CMD_READ, 0, 4096, b""))
            for _ in range(64):
                h = self.rng.getrandbits(64)
                reqs[h] = (CMD_FLUSH, 0, 0, None)
                order.append((h, CMD_FLUSH, 0, 0, b""))
            self.rng.shuffle(order)
            expect(len(reqs) == len(order), "handle collision in the test itself")
            got = {}
            problems = []

            def reader():
                try:
                    while len(got) < len(order):
                        err, h = c.reply()
                        if h not in reqs:
                            problems.append("reply with unknown handle %#x" % h)
                            return
                        if h in got:
                            problems.append("second reply for handle %#x" % h)
                            return
                        cmd, off, ln, _ = reqs[h]
                        data = c.recv_exact(ln) if (cmd == CMD_READ and err == 0) else b""
                        got[h] = (err, data)
                except Exception as e:  # noqa
                    problems.append("reader: %s: %s" % (type(e).__name__, e))

            t = threading.Thread(target=reader, daemon=True)
            t.start()
            for h, cmd, off, ln, pl in order:
                c.send_req(cmd, h, off, ln, 0, pl)
            t.join(120)
            expect(not t.is_alive(), "only %d of %d replies after 120 s" % (len(got), len(order)))
            expect(not problems, "; ".join(problems))
            errs = [(hex(h), errname(e)) for h, (e, _) in got.items() if e]
            expect(not errs, "errors in pipelined replies: %r" % errs[:5])
            expect(c.nothing_pending(0.5), "extra data after the last expected reply")
            # the writes all landed
            for i in range(n_regions):
                if c.read(base + i * blk, blk) != regions[i]:
                    raise CheckFailed("pipelined write %d read back wrong" % i)
            # a pipeline of reads of known data: each answer carries its own data
            order = []
            expect_data = {}
            for i in self.rng.sample(range(n_regions), n_regions):
                h = self.rng.getrandbits(64)
                reqs[h] = (CMD_READ, base + i * blk, blk, None)
                expect_data[h] = regions[i]
                order.append(h)
            got.clear()
            problems.clear()
            t = threading.Thread(target=reader, daemon=True)
            t.start()
            for h in order:
                c.send_req(CMD_READ, h, reqs[h][1], blk)
            t.join(120)
            expect(not t.is_alive(), "only %d of %d read replies after 120 s" % (len(got), len(order)))
            expect(not problems, "; ".join(problems))
            for h in order:
                expect(got[h][0] == 0, "pipelined read failed: %s" % errname(got[h][0]))
                expect(got[h][1] == expect_data[h], "pipelined read %#x returned another "
                       "request's data" % h)

    def io_max_sizes(self):
        with self.go_conn() as c:
            data = self.rand(MAX_PAYLOAD)
            c.write(0, data)
            got = c.read(0, MAX_PAYLOAD)
            expect(got == data, "32 MiB write/read mismatch")
            c.expect_err(EINVAL, CMD_READ, 0, MAX_PAYLOAD + 512, what="READ of 32 MiB + 512")
            c.alive("connection after an oversized READ")
            # TRIM / WRITE_ZEROES carry no payload: larger lengths are fine in range
            err, _ = c.cmd(CMD_WRITE_ZEROES, 0, min(self.a.size, 48 << 20))
            expect(err == 0, "WRITE_ZEROES of 48 MiB failed: %s" % errname(err))
            expect(c.read(MAX_PAYLOAD - 4096, 4096) == bytes(4096), "48 MiB WRITE_ZEROES did not zero")

    def io_disc(self):
        with self.go_conn() as c:
            data = self.rand(4096)
            h1, h2, h3 = 1, 2, 3
            c.send_req(CMD_WRITE, h1, 30 << 20, 4096, 0, data)
            c.send_req(CMD_READ, h2, 30 << 20, 4096)
            c.send_req(CMD_DISC, h3, 0, 0)
            seen = {}
            for _ in range(2):
                err, h = c.reply()
                expect(h in (h1, h2), "unexpected reply handle %#x (DISC must not be answered)" % h)
                seen[h] = err
                if h == h2 and err == 0:
                    c.recv_exact(4096)
            expect(seen.get(h1) == 0, "write before DISC: %r" % seen)
            expect(c.wait_closed(10), "connection not closed after DISC")
        with self.go_conn() as c:
            expect(c.read(30 << 20, 4096) == data, "write sent before DISC was lost")

    def _node_stat(self, name):
        with open(os.path.join(self.a.cfs_node, "stats")) as f:
            for line in f:
                v = line.split()
                if name in v[:-1]:
                    return int(v[v.index(name) + 1])
        raise CheckFailed("no %r in the node's stats" % name)

    def io_drain_busy(self):
        """A client that never pauses (8 WRITEs of 1 MiB in flight, a new one
        sent on each reply), drained by the admin: the drain stops reading
        after its read time (2 s) and closes within 10 s, and every request
        whose send succeeded is answered before the reset (a request left
        unanswered waits for the client's timeout)."""
        if not self.a.cfs_node:
            raise CheckFailed("no --cfs-node given")
        self._clients_settle()
        dropped0, late0 = self._node_stat("drain_dropped"), self._node_stat("drain_late")
        size, depth, span = 1 << 20, 8, 8 << 20
        payload = self.rand(size)
        c = self.go_conn()
        sent, answered, nxt, drained = {}, 0, 0, None
        try:
            me = "127.0.0.1:%d" % c.sock.getsockname()[1]
            mine = [ln.split()[0] for ln in self.clients_lines() if ln.split()[1] == me]
            expect(len(mine) == 1, "clients has no single line for %s" % me)

            def send_one():
                nonlocal nxt
                h = nxt + 1
                try:
                    c.send_req(CMD_WRITE, h, (nxt * size) % span, size, 0, payload)
                except (Closed, OSError):
                    return False        # reset: as nbd.ko, resend it elsewhere
                sent[h] = time.monotonic()
                nxt += 1
                return True

            for _ in range(depth):
                send_one()
            start = time.monotonic()
            end = start + 20
            while time.monotonic() < end:
                if drained is None and time.monotonic() > start + 0.5:
                    with open(os.path.join(self.a.cfs_node, "drain"), "w") as f:
                        f.write(mine[0])
                    drained = time.monotonic()
                try:
                    err, h = c.reply()
                except (Closed, OSError):
                    break
                expect(err == 0 and h in sent, "reply err %d handle %d" % (err, h))
                del sent[h]
                answered += 1
                send_one()
            else:
                raise CheckFailed("still open 20 s after the drain began")
        finally:
            c.close()
        took = time.monotonic() - drained
        dropped, late = self._node_stat("drain_dropped") - dropped0, self._node_stat("drain_late") - late0
        print("proto_io_drain_busy: %d WRITEs answered, closed %.1f s after the drain; "
              "%d served in its last step, %d dropped" % (answered, took, late, dropped),
              file=sys.stderr, flush=True)
        expect(took <= 10, "the drained connection closed only %.1f s after the drain" % took)
        expect(not sent, "%d request(s) sent before the reset never answered (drain_dropped +%d): "
               "the client would wait its timeout for them" % (len(sent), dropped))
        expect(dropped == 0, "drain_dropped grew by %d" % dropped)

    def io_clients_file(self):
        if not self.a.cfs_node:
            raise CheckFailed("no --cfs-node given")
        self._clients_settle()
        base = len([ln for ln in self.clients_lines() if ln.split()[2:3] == [self.a.export]])
        c1 = self.go_conn()
        c2 = self.go_conn()
        try:
            c1.alive()
            c2.alive()
            lines = self.clients_lines()
            mine = [ln for ln in lines if ln.split()[2:3] == [self.a.export]]
            expect(len(mine) == base + 2, "clients lists %d connections to %s, want %d: %r" %
                   (len(mine), self.a.export, base + 2, lines))
            for ln in mine:
                f = ln.split()
                expect(any(x.startswith("inflight=") and x[9:].isdigit() for x in f[3:]),
                       "clients line %r lacks an 'inflight=<n>' field" % ln)
                expect("127.0.0.1" in f[1], "clients line %r: peer is not 127.0.0.1" % ln)
            ids = [ln.split()[0] for ln in lines]
            expect(len(ids) == len(set(ids)), "duplicate connection ids in clients: %r" % lines)
        finally:
            c1.close()
            c2.close()
        end = time.monotonic() + 10
        while time.monotonic() < end:
            mine = [ln for ln in self.clients_lines() if ln.split()[2:3] == [self.a.export]]
            if len(mine) == base:
                return
            time.sleep(0.2)
        raise CheckFailed("closed connections still listed in clients after 10 s: %r" % mine)

    # ================================================================= hostile

    def bad_magic(self):
        a = self.go_conn()
        b = self.go_conn()
        try:
            data = self.rand(4096)
            b.write(40 << 20, data)
            a.send_req(CMD_READ, 7, 0, 512, magic=0xDEADBEEF)
            expect(a.wait_closed(10), "bad request magic did not close the connection")
            # the other connection is unaffected
            expect(b.read(40 << 20, 4096) == data, "other connection returned wrong data")
            b.write(40 << 20, data[::-1])
            expect(b.read(40 << 20, 4096) == data[::-1], "other connection broke after bad magic")
        finally:
            a.close()
            b.close()

    def write_too_long(self):
        for ln in (0xFFFFFFFF, MAX_PAYLOAD + 512):
            with self.go_conn() as c:
                c.send_req(CMD_WRITE, 9, 0, ln, 0, self.rand(4096))
                expect(c.wait_closed(15), "WRITE with length %#x did not close the connection" % ln)
        self.server_alive()

    def truncated(self):
        # header cut short
        with self.go_conn() as c:
            c.send(struct.pack(">IHHQ", REQUEST_MAGIC, 0, CMD_READ, 5)[:14])
        # write payload cut short
        with self.go_conn() as c:
            c.send_req(CMD_WRITE, 6, 0, 65536, 0, self.rand(1000))
        # greeting / client flags / option header cut short
        with self.conn() as c:
            pass
        with self.conn() as c:
            c.greeting()
            c.send(b"\x00\x00")
        with self.conn() as c:
            c.start()
            c.send(struct.pack(">Q", IHAVEOPT) + b"\x00\x00\x00")
        with self.conn() as c:
            c.start()
            c.send_opt(OPT_GO, self.info_payload(self.a.export)[:5], length=50)
        # read reply not consumed: close while the server is sending 32 MiB
        with self.go_conn() as c:
            c.send_req(CMD_READ, 10, 0, MAX_PAYLOAD)
            c.sock.recv(100)
        time.sleep(0.5)
        self.server_alive()
        self._clients_settle()

    def _clients_settle(self, timeout=15):
        """All of this test's closed connections vanish from `clients`."""
        if not self.a.cfs_node:
            return
        end = time.monotonic() + timeout
        lines = self.clients_lines()
        while time.monotonic() < end:
            lines = self.clients_lines()
            if len(lines) <= self.a.idle_clients:
                return
            time.sleep(0.2)
        raise CheckFailed("%d connections still listed in clients %ds after their clients "
                          "closed: %r" % (len(lines), timeout, lines[:5]))

    def fuzz(self):
        """Seeded random garbage at every stage; the server must keep serving."""
        r = random.Random(self.a.seed ^ 0x5EED)
        n = self.a.fuzz_iters
        t_end = time.monotonic() + self.a.fuzz_seconds
        done = 0
        for i in range(n):
            if time.monotonic() > t_end:
                break
            stage = r.randrange(6)
            try:
                c = self.conn()
            except OSError as e:
                raise CheckFailed("connect #%d failed: %s" % (i, e))
            c.sock.settimeout(5)
            try:
                if stage == 0:  # raw garbage instead of client flags
                    c.send(bytes(r.getrandbits(8) for _ in range(r.randrange(1, 64))))
                elif stage == 1:  # garbage options
                    c.start()
                    for _ in range(r.randrange(1, 8)):
                        opt = r.choice([r.randrange(1, 12), r.getrandbits(32)])
                        ln = r.choice([0, r.randrange(0, 64), r.getrandbits(32)])
                        body = bytes(r.getrandbits(8) for _ in range(min(ln, r.randrange(0, 80))))
                        c.send(struct.pack(">QII", IHAVEOPT, opt, ln) + body)
                elif stage == 2:  # INFO/GO with random payloads
                    c.start()
                    body = bytes(r.getrandbits(8) for _ in range(r.randrange(0, 40)))
                    c.send_opt(r.choice([OPT_INFO, OPT_GO]), body)
                else:  # transmission: random requests with a valid magic, and garbage
                    c.start()
                    c.go(self.a.fuzz_export)
                    for _ in range(r.randrange(1, 16)):
                        if r.random() < 0.15:
                            c.send(bytes(r.getrandbits(8) for _ in range(r.randrange(1, 40))))
                            break
                        cmd = r.choice([0, 1, 2, 3, 4, 6, r.randrange(0, 16), r.getrandbits(16)])
                        flags = r.choice([0, 1, 2, 3, r.getrandbits(16)])
                        off = r.choice([0, r.randrange(0, self.a.fuzz_size),
                                        r.getrandbits(64), self.a.fuzz_size - 512])
                        off -= off % 512 if r.random() < 0.7 else 0
                        ln = r.choice([0, 512, 4096, r.randrange(0, 1 << 17), r.getrandbits(32)])
                        pl = b""
                        if cmd == CMD_WRITE:
                            pl = bytes(r.getrandbits(8) for _ in range(min(ln, r.randrange(0, 8192))))
                        c.send_req(cmd, r.getrandbits(64), off, ln, flags, pl)
                # read whatever comes back for a moment, then hang up
                end = time.monotonic() + 0.05
                while time.monotonic() < end:
                    rr, _, _ = select.select([c.sock], [], [], 0.02)
                    if rr:
                        try:
                            if not c.sock.recv(1 << 16):
                                break
                        except OSError:
                            break
            except (Closed, OSError, CheckFailed):
                pass
            finally:
                c.close()
            done += 1
        sys.stderr.write("    fuzz: %d connections\n" % done)
        expect(done >= min(n, 20), "only %d fuzz iterations ran" % done)
        time.sleep(0.5)
        self.server_alive()
        with self.go_conn(self.a.fuzz_export) as c:
            data = self.rand(4096)
            c.write(4096, data)
            expect(c.read(4096, 4096) == data, "fuzzed export no longer reads back")
        self._clients_settle(20)

    def flood(self):
        """max_connections on the flood node: excess connections never reach transmission."""
        a = self.a
        if not a.flood_port:
            raise CheckFailed("no --flood-port given")
        m = a.flood_max
        held = []
        try:
            for i in range(m):
                c = self.go_conn(a.flood_export, port=a.flood_port)
                held.append(c)
            for c in held:
                c.alive("connection within max_connections")
            served, hung = [], []
            for i in range(m + 8):
                try:
                    c = Conn(self.host, a.flood_port, timeout=5)
                except OSError:
                    continue  # refused at connect: fine
                held.append(c)
                try:
                    c.start()
                    rtype, _, _ = c.info_or_go(OPT_GO, a.flood_export, ())
                    if rtype == REP_ACK:
                        served.append(m + i + 1)
                    # an error reply is a refusal too
                except Closed:
                    pass
                except OSError:
                    pass
                except CheckFailed as e:
                    # no greeting/reply within 5 s and not closed either
                    if not c.wait_closed(0.5):
                        hung.append("%d (%s)" % (m + i + 1, e))
            expect(not served, "connections %r beyond max_connections=%d reached transmission" %
                   (served, m))
            expect(not hung, "excess connections neither served nor closed: %s" % "; ".join(hung[:3]))
            if a.flood_cfs:
                lines = self.clients_lines(a.flood_cfs)
                expect(len(lines) <= m, "clients lists %d connections with max_connections=%d" %
                       (len(lines), m))
            for c in held[:m]:
                c.alive("connection within max_connections after the flood")
        finally:
            for c in held:
                c.close()
        # slots free again once the clients are gone
        end = time.monotonic() + 15
        last = None
        while time.monotonic() < end:
            try:
                cs = [self.go_conn(a.flood_export, port=a.flood_port) for _ in range(m)]
                for c in cs:
                    c.alive()
                    c.close()
                last = None
                break
            except (Closed, CheckFailed, OSError) as e:
                last = e
                time.sleep(0.5)
        expect(last is None, "after closing the flood, %d new connections do not all work: %s" % (m, last))
        # the main node never noticed
        self.server_alive()


ALL = [
    ("hs_greeting", "hs_greeting"),
    ("hs_unknown_client_flags", "hs_unknown_client_flags"),
    ("hs_export_name_no_zeroes", "hs_export_name_no_zeroes"),
    ("hs_export_name_zeroes", "hs_export_name_zeroes"),
    ("hs_export_name_unknown", "hs_export_name_unknown"),
    ("hs_export_name_ro", "hs_export_name_ro"),
    ("hs_bad_option_magic", "hs_bad_option_magic"),
    ("opt_list", "opt_list"),
    ("opt_list_with_data", "opt_list_with_data"),
    ("opt_info_rw", "opt_info_rw"),
    ("opt_info_ro", "opt_info_ro"),
    ("opt_info_bs4k", "opt_info_bs4k"),
    ("opt_go_no_block_size_request", "opt_go_no_block_size_request"),
    ("opt_go_block_size_request", "opt_go_block_size_request"),
    ("opt_unknown_export", "opt_info_unknown"),
    ("opt_unsupported", "opt_unsupported"),
    ("opt_many_unsupported", "opt_many_unsupported"),
    ("opt_abort", "opt_abort"),
    ("opt_garbage_lengths", "opt_info_garbage_lengths"),
    ("opt_oversized", "opt_oversized"),
    ("io_roundtrip", "io_roundtrip"),
    ("io_read_out_of_range", "io_read_out_of_range"),
    ("io_write_out_of_range", "io_write_out_of_range"),
    ("io_misaligned", "io_misaligned"),
    ("io_unknown_command", "io_unknown_command"),
    ("io_unknown_flags", "io_unknown_flags"),
    ("io_read_only", "io_read_only"),
    ("io_zero_length", "io_zero_length"),
    ("io_write_zeroes", "io_write_zeroes"),
    ("io_trim", "io_trim"),
    ("io_flush_fua", "io_flush_fua"),
    ("io_stats", "io_stats"),
    ("io_pipeline", "io_pipeline"),
    ("io_max_sizes", "io_max_sizes"),
    ("io_disc", "io_disc"),
    ("io_clients_file", "io_clients_file"),
    ("io_drain_busy", "io_drain_busy"),
    ("bad_magic", "bad_magic"),
    ("write_too_long", "write_too_long"),
    ("truncated", "truncated"),
    ("fuzz", "fuzz"),
    ("flood", "flood"),
]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=10809)
    p.add_argument("--export", default="rw", help="read-write export (512-byte blocks)")
    p.add_argument("--size", type=int, required=True, help="size of --export")
    p.add_argument("--desc", default="", help="description of --export")
    p.add_argument("--backing", help="backing file of --export (checked directly)")
    p.add_argument("--ro-export", default="ro")
    p.add_argument("--ro-size", type=int, default=0)
    p.add_argument("--ro-backing")
    p.add_argument("--bs-export", default="bs4k", help="export with block_size 4096")
    p.add_argument("--disabled-export", help="a volume that exists but is not enabled")
    p.add_argument("--fuzz-export", help="export the fuzzer may scribble on (default --export)")
    p.add_argument("--fuzz-size", type=int, default=0)
    p.add_argument("--fuzz-iters", type=int, default=300)
    p.add_argument("--fuzz-seconds", type=float, default=90)
    p.add_argument("--cfs-node", help="configfs dir of the node (stats, clients)")
    p.add_argument("--idle-clients", type=int, default=0,
                   help="connections other clients keep open on the node")
    p.add_argument("--flood-port", type=int)
    p.add_argument("--flood-max", type=int, default=8)
    p.add_argument("--flood-export", default="fl")
    p.add_argument("--flood-cfs")
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--results", help="append PASS/FAIL lines to this file")
    p.add_argument("--only", help="comma-separated check names")
    p.add_argument("--list", action="store_true", help="list the checks")
    a = p.parse_args()
    if not a.fuzz_export:
        a.fuzz_export = a.export
        a.fuzz_size = a.size
    if a.list:
        for name, _ in ALL:
            print("proto_" + name)
        return 0
    random.seed(a.seed)
    h = Harness(a)
    ck = Checks(a)
    t0 = time.monotonic()
    for name, meth in ALL:
        h.run(name, getattr(ck, meth))
    sys.stderr.write("test_proto.py: %d passed, %d failed in %.0fs\n" %
                     (h.npass, h.nfail, time.monotonic() - t0))
    return 1 if h.nfail else 0


if __name__ == "__main__":
    sys.exit(main())
