#!/usr/bin/env python3
"""Small raw NBD client for the shell tests.

  nbd_probe.py read HOST PORT EXPORT            GO + one 4 KiB read; exit 0 if it works
  nbd_probe.py hold HOST PORT EXPORT SECS       GO, print READY, then read every 0.2 s until
                                                the server closes: print CLOSED and exit 0;
                                                exit 1 (STILL-OPEN) after SECS
  nbd_probe.py hold-handshake HOST PORT SECS    read the greeting, print READY, wait in the
                                                handshake phase for the server to close
                                                (exit 0) or SECS to pass (exit 1)
  nbd_probe.py write-close HOST PORT EXPORT DEV SECS
                                                GO, send one 64 KiB WRITE at 0 (bytes 0xa5),
                                                print SENT, wait for the server to close
                                                (SECS at most: exit 1) and at that instant
                                                read the first 64 KiB of DEV (O_DIRECT):
                                                print "CLOSED AFTER S s, N reply bytes,
                                                DATA in|not in DEV"
"""

import mmap
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_proto import CMD_WRITE, Conn, Closed, CheckFailed  # noqa: E402


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, host, port = argv[1], argv[2], int(argv[3])
    try:
        if cmd == "read":
            with Conn(host, port) as c:
                c.start()
                c.go(argv[4])
                c.read(0, 4096)
            print("OK")
            return 0
        if cmd == "hold":
            export, secs = argv[4], float(argv[5])
            c = Conn(host, port)
            c.start()
            c.go(export)
            c.read(0, 512)
            print("READY", flush=True)
            end = time.monotonic() + secs
            while time.monotonic() < end:
                try:
                    err, _ = c.cmd(0, 0, 512)
                except (Closed, OSError, CheckFailed) as e:
                    print("CLOSED: %s" % e, flush=True)
                    return 0
                if err:
                    print("ERROR-REPLY: %d" % err, flush=True)
                time.sleep(0.2)
            print("STILL-OPEN", flush=True)
            return 1
        if cmd == "hold-handshake":
            secs = float(argv[4])
            c = Conn(host, port)
            c.greeting()
            print("READY", flush=True)
            if c.wait_closed(secs):
                print("CLOSED", flush=True)
                return 0
            print("STILL-OPEN", flush=True)
            return 1
        if cmd == "write-close":
            export, dev, secs = argv[4], argv[5], float(argv[6])
            pattern = b"\xa5" * 65536
            c = Conn(host, port)
            c.start()
            c.go(export)
            # the backing's O_DIRECT reads go around any cache: what they
            # see is what the backing has
            fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
            buf = mmap.mmap(-1, 65536)
            c.send_req(CMD_WRITE, 1, 0, 65536, 0, pattern)
            t0 = time.monotonic()
            print("SENT", flush=True)
            got = 0
            c.sock.settimeout(secs)
            while True:
                try:
                    d = c.sock.recv(65536)
                except socket.timeout:
                    print("STILL-OPEN", flush=True)
                    return 1
                except OSError:
                    d = b""
                if not d:
                    break
                got += len(d)
            t1 = time.monotonic()
            os.preadv(fd, [buf], 0)
            # a reply before the close: the WRITE was not in flight at it
            print("CLOSED AFTER %.2f s, %d reply bytes, DATA %s DEV" %
                  (t1 - t0, got, "in" if buf[:] == pattern else "not in"), flush=True)
            return 0
    except (Closed, OSError, CheckFailed, socket.timeout) as e:
        print("FAILED: %s: %s" % (type(e).__name__, e), flush=True)
        return 3
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
