#!/usr/bin/env python3
"""Sample the members' loads for test_balance.sh: every PERIOD seconds, the
first line of each node's configfs stats ("node ID load X connections Y ...")
as one CSV line "t load1..loadN conns1..connsN", t from the start. One
process for the whole run: forking per sample is slow under TCG.

usage: balance_sampler.py OUT.csv PERIOD NODEDIR...   (runs until killed)
"""
import signal
import sys
import time


def main():
    out, period, nodes = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    t0 = time.monotonic()
    with open(out, "w", buffering=1) as f:
        f.write("t " + " ".join("load%d" % (i + 1) for i in range(len(nodes))) + " " +
                " ".join("conns%d" % (i + 1) for i in range(len(nodes))) + "\n")
        while True:
            loads, conns = [], []
            for n in nodes:
                try:
                    with open(n + "/stats") as s:
                        w = s.readline().split()
                    loads.append(w[3])
                    conns.append(w[5])
                except (OSError, IndexError):
                    loads.append("0")
                    conns.append("0")
            f.write("%.2f %s %s\n" % (time.monotonic() - t0, " ".join(loads), " ".join(conns)))
            time.sleep(period)


if __name__ == "__main__":
    main()
