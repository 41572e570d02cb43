#!/usr/bin/env python3
"""Userspace NBD clients for test_move_clients.sh: a write + read-back-verify
loop over one connection, through libnbd or through qemu-io's NBD driver,
paced, with a timestamped line per completed request, so that the shell can
tell whether a connection move cost the client an error and how long its
requests waited.

  move_client.py libnbd HOST PORT EXPORT OFFSET LEN [opts]
  move_client.py qemu   HOST PORT EXPORT OFFSET LEN [opts] [--reconnect-delay N]
  move_client.py stall LOG WINDOW T...  longest wait for a completion after each T

Each pair writes a fresh pattern to the next --bs block of [OFFSET, OFFSET+LEN)
and reads it back; a wrong byte is a verify failure, a failed request an
error.  Output (one line each, flushed):
  READY                               connected, first pair done
  OP T_START T_END write|read OK|ERR|BAD [detail]
  SUMMARY pairs=N errors=N verify_failures=N max_lat_ms=X
It stops on SIGTERM/SIGINT or after --duration seconds, and at the first
error when the connection is gone (libnbd does not reconnect; a dead handle
fails every later request).  Exit status 0 if no error and no verify failure.
"""
import argparse
import os
import signal
import subprocess
import sys
import time

stop = False


def on_signal(*_):
    global stop
    stop = True


class Stats:
    def __init__(self):
        self.pairs = self.errors = self.bad = 0
        self.max_lat = 0.0
        self.ready = False

    def op(self, t0, t1, kind, res, detail=""):
        self.max_lat = max(self.max_lat, t1 - t0)
        if res == "ERR":
            self.errors += 1
        elif res == "BAD":
            self.bad += 1
        print("OP %.6f %.6f %s %s %s" % (t0, t1, kind, res, detail), flush=True)

    def summary(self):
        print("SUMMARY pairs=%d errors=%d verify_failures=%d max_lat_ms=%.0f" %
              (self.pairs, self.errors, self.bad, self.max_lat * 1000), flush=True)


def pattern_byte(seq):
    # 1..255: never the zeroes of a fresh sparse backing
    return seq % 255 + 1


def paced(args, st, one_pair):
    """Call one_pair(seq, offset, byte) at --rate pairs/s until told to stop."""
    blocks = args.len // args.bs
    period = 1.0 / args.rate if args.rate > 0 else 0.0
    t_end = time.monotonic() + args.duration if args.duration else None
    nxt = time.monotonic()
    seq = 0
    while not stop and (t_end is None or time.monotonic() < t_end):
        off = args.offset + (seq % blocks) * args.bs
        if not one_pair(seq, off, pattern_byte(seq)):
            break
        st.pairs += 1
        seq += 1
        if not st.ready:
            st.ready = True
            print("READY", flush=True)
        if period:
            nxt += period
            d = nxt - time.monotonic()
            if d > 0:
                time.sleep(d)
            else:
                nxt = time.monotonic()


def run_libnbd(args, st):
    import nbd  # python3-libnbd (Debian's python3)

    h = nbd.NBD()
    h.set_export_name(args.export)
    h.connect_tcp(args.host, str(args.port))

    def one_pair(seq, off, b):
        buf = bytes([b]) * args.bs
        t0 = time.time()
        try:
            h.pwrite(buf, off)
        except nbd.Error as e:
            st.op(t0, time.time(), "write", "ERR", "off=%d %s" % (off, e))
            return not h.aio_is_dead() and not h.aio_is_closed()
        t1 = time.time()
        st.op(t0, t1, "write", "OK")
        try:
            got = h.pread(args.bs, off)
        except nbd.Error as e:
            st.op(t1, time.time(), "read", "ERR", "off=%d %s" % (off, e))
            return not h.aio_is_dead() and not h.aio_is_closed()
        t2 = time.time()
        if got != buf:
            st.op(t1, t2, "read", "BAD", "off=%d want %#x" % (off, b))
        else:
            st.op(t1, t2, "read", "OK")
        return True

    paced(args, st, one_pair)
    try:
        h.shutdown()
    except nbd.Error:
        pass


class QemuIo:
    """qemu-io in interactive mode: one command, then its output up to the
    next prompt (as qemu's own iotests drive it)."""
    PROMPT = "qemu-io> "

    def __init__(self, opts):
        self.p = subprocess.Popen(["qemu-io", "--image-opts", opts],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, bufsize=0)
        out = self.until_prompt()
        if out is None or out.strip():
            raise RuntimeError("qemu-io did not start: %r" % out)

    def until_prompt(self):
        buf = ""
        while not buf.endswith(self.PROMPT):
            c = self.p.stdout.read(1)
            if not c:
                return None
            buf += c
        return buf[:-len(self.PROMPT)]

    def cmd(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.until_prompt()

    def close(self):
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()


def run_qemu(args, st):
    opts = ("driver=nbd,server.type=inet,server.host=%s,server.port=%d,export=%s" %
            (args.host, args.port, args.export))
    if args.reconnect_delay is not None:
        opts += ",reconnect-delay=%d" % args.reconnect_delay
    q = QemuIo(opts)

    def one_pair(seq, off, b):
        t0 = time.time()
        out = q.cmd("write -P %#x %d %d" % (b, off, args.bs))
        t1 = time.time()
        if out is None:
            st.op(t0, t1, "write", "ERR", "qemu-io exited")
            return False
        if not out.startswith("wrote %d/%d bytes" % (args.bs, args.bs)):
            st.op(t0, t1, "write", "ERR", "off=%d %s" % (off, out.strip().replace("\n", " | ")))
            return True
        st.op(t0, t1, "write", "OK")
        out = q.cmd("read -P %#x %d %d" % (b, off, args.bs))
        t2 = time.time()
        if out is None:
            st.op(t1, t2, "read", "ERR", "qemu-io exited")
            return False
        if "Pattern verification failed" in out:
            st.op(t1, t2, "read", "BAD", "off=%d want %#x" % (off, b))
        elif not out.startswith("read %d/%d bytes" % (args.bs, args.bs)):
            st.op(t1, t2, "read", "ERR", "off=%d %s" % (off, out.strip().replace("\n", " | ")))
        else:
            st.op(t1, t2, "read", "OK")
        return True

    try:
        paced(args, st, one_pair)
    finally:
        q.close()


def stall(log, t, window):
    """Longest time without a completed request from T on (a move's stall),
    over the completions within WINDOW seconds after T; also the time to the
    first completion that started after T."""
    ends, first_new = [], None
    with open(log) as f:
        for line in f:
            w = line.split()
            if len(w) < 5 or w[0] != "OP":
                continue
            t0, t1 = float(w[1]), float(w[2])
            if t1 >= t and t1 <= t + window:
                ends.append(t1)
            if t0 >= t and first_new is None:
                first_new = t1
    ends.sort()
    # nothing completed within the window: at least the window
    worst, last = (0.0 if ends else window), t
    for e in ends:
        worst = max(worst, e - last)
        last = e
    print("stall_ms=%.0f next_ms=%s completions=%d" %
          (worst * 1000, "%.0f" % ((first_new - t) * 1000) if first_new else "none", len(ends)))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "stall":
        for t in sys.argv[4:]:
            stall(sys.argv[2], float(t), float(sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["libnbd", "qemu"])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("export")
    ap.add_argument("offset", type=int)
    ap.add_argument("len", type=int)
    ap.add_argument("--bs", type=int, default=65536)
    ap.add_argument("--rate", type=float, default=0, help="pairs per second (0: flat out)")
    ap.add_argument("--duration", type=float, default=0)
    ap.add_argument("--reconnect-delay", type=int, default=None)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    st = Stats()
    try:
        (run_libnbd if args.mode == "libnbd" else run_qemu)(args, st)
    except Exception as e:  # a failed connect or a dead qemu-io: an error
        st.errors += 1
        print("FAILED %s: %s" % (type(e).__name__, e), flush=True)
    st.summary()
    return 0 if st.errors == 0 and st.bad == 0 and st.pairs > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
