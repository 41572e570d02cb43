#!/usr/bin/env python3
"""Raw NBD client with a chosen source address, for test_acl.sh.

Every command connects from SRC (a local address: 127.0.0.2, 2001:db8::5...)
to HOST PORT and prints one line; exit 0 when it could tell what the server
did, 3 when something unexpected happened (the line says what).

  acl_probe.py go SRC HOST PORT EXPORT         GO (+ a 4 KiB READ on ACK): ACK or the
                                               error reply's name (ERR_POLICY...)
  acl_probe.py info SRC HOST PORT EXPORT       INFO: ACK or the error reply's name
  acl_probe.py list SRC HOST PORT              LIST: "LIST name,name" or the error's name
  acl_probe.py export-name SRC HOST PORT EXPORT
                                               old-style EXPORT_NAME: "SIZE n" or CLOSED
  acl_probe.py live SRC HOST PORT EXPORT ATTR VALUE
                                               GO and READ, write VALUE to the configfs
                                               ATTR (allowed_hosts), then a new GO from
                                               SRC, then a READ on the first connection:
                                               "NEW <reply> OLD <READ OK|error>"
  acl_probe.py limit SRC HOST PORT OTHER MAX   MAX connections from SRC get the greeting,
                                               one more is closed unanswered, one from
                                               OTHER is served, and once one of SRC's
                                               closes SRC may connect again: OK or FAIL
"""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_proto import (Conn, Closed, CheckFailed, OPT_GO, OPT_INFO, OPT_LIST,  # noqa: E402
                        OPT_EXPORT_NAME, REP_ACK, REP_SERVER, TIMEOUT, repname)


def connect(src, host, port, timeout=TIMEOUT):
    """A test_proto.Conn whose socket is bound to SRC first."""
    c = Conn.__new__(Conn)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if family == socket.AF_INET6 and ":" not in src:
        src = "::ffff:" + src
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.bind((src, 0))
        s.connect((host, port))
    except OSError:
        s.close()
        raise
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.sock = s
    c.hflags = None
    c.no_zeroes = False
    c.size = None
    c.tflags = None
    c.infos = {}
    return c


def info_or_go(args, opt):
    src, host, port, export = args[0], args[1], int(args[2]), args[3]
    with connect(src, host, port) as c:
        c.start()
        rtype, _, _ = c.info_or_go(opt, export)
        if rtype == REP_ACK and opt == OPT_GO:
            c.read(0, 4096)
        return repname(rtype)


def cmd_list(args):
    src, host, port = args[0], args[1], int(args[2])
    names = []
    with connect(src, host, port) as c:
        c.start()
        c.send_opt(OPT_LIST)
        while True:
            _, rtype, data = c.opt_reply()
            if rtype == REP_SERVER:
                n = int.from_bytes(data[:4], "big")
                names.append(data[4:4 + n].decode(errors="replace"))
                continue
            if rtype != REP_ACK:
                return repname(rtype)
            return "LIST " + ",".join(names)


def cmd_export_name(args):
    src, host, port, export = args[0], args[1], int(args[2]), args[3]
    with connect(src, host, port) as c:
        c.start()
        c.send_opt(OPT_EXPORT_NAME, export.encode())
        try:
            size, _ = c.export_name_reply()
        except Closed:
            return "CLOSED"
        return "SIZE %d" % size


def export_name_reply(self):
    d = self.recv_exact(10)
    return int.from_bytes(d[:8], "big"), int.from_bytes(d[8:], "big")


Conn.export_name_reply = export_name_reply


def cmd_live(args):
    src, host, port, export, attr, value = (args[0], args[1], int(args[2]), args[3],
                                            args[4], args[5])
    with connect(src, host, port) as old:
        old.start()
        old.go(export)
        old.read(0, 4096)
        with open(attr, "w") as f:
            f.write(value + "\n")
        new = info_or_go([src, host, str(port), export], OPT_GO)
        try:
            old.read(4096, 4096)
            held = "READ-OK"
        except (Closed, CheckFailed, OSError) as e:
            held = "READ-FAILED(%s)" % e
        return "NEW %s OLD %s" % (new, held)


def greeted(c):
    """Did the server send its greeting (True) or close the connection (False)?"""
    try:
        c.greeting()
        return True
    except (Closed, ConnectionResetError):
        return False


def cmd_limit(args):
    src, host, port, other, mx = args[0], args[1], int(args[2]), args[3], int(args[4])
    held = []
    try:
        for i in range(mx):
            c = connect(src, host, port)
            held.append(c)
            if not greeted(c):
                return "FAIL: connection %d of %d from %s was closed" % (i + 1, mx, src)
        extra = connect(src, host, port)
        held.append(extra)
        if greeted(extra):
            return "FAIL: connection %d from %s was served (limit %d)" % (mx + 1, src, mx)
        c = connect(other, host, port)
        held.append(c)
        if not greeted(c):
            return "FAIL: a connection from %s was closed while %s was at its limit" % (
                other, src)
        # One of SRC's goes: the server frees it asynchronously, so retry a while.
        held.pop(0).close()
        end = time.monotonic() + 15
        while True:
            c = connect(src, host, port)
            held.append(c)
            if greeted(c):
                return "OK"
            if time.monotonic() > end:
                return "FAIL: %s still refused 15 s after one of its connections closed" % src
            time.sleep(0.5)
    finally:
        for c in held:
            c.close()


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    handlers = {
        "go": lambda a: info_or_go(a, OPT_GO),
        "info": lambda a: info_or_go(a, OPT_INFO),
        "list": cmd_list,
        "export-name": cmd_export_name,
        "live": cmd_live,
        "limit": cmd_limit,
    }
    if cmd not in handlers:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        print(handlers[cmd](args), flush=True)
        return 0
    except (Closed, CheckFailed, OSError, socket.timeout) as e:
        print("UNEXPECTED: %s: %s" % (type(e).__name__, e), flush=True)
        return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv))
