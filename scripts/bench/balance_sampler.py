#!/usr/bin/env python3
"""Sample a knbd group for make bench-balance (scripts/bench/balance-guest.sh):
every PERIOD seconds, each member's configfs stats (load, client connections,
balance line: moves, drain_dropped, manager state) and its clients list (one
entry per connection: id, peer, volume, state, load), as one JSON line

  {"t": MONOTONIC, "w": WALLCLOCK, "n": [{"load": L, "conns": C, "moves": M,
   "dd": D, "state": S, "c": [[id, peer, volume, state, load], ...]}, ...]}

The first line is {"sync": MONOTONIC, "w": WALLCLOCK, "mark": TEXT}: the same
TEXT is written to /dev/kmsg at that moment, so that the analysis can put
the kernel log's timestamps (the manager's "moving client connection" lines)
and fio's (wall clock) logs on the sampler's time line.  One process for the
whole run: forking per sample is slow under TCG.

usage: balance_sampler.py OUT.jsonl PERIOD NODEDIR...   (runs until SIGTERM)
"""
import json
import signal
import sys
import time


def node_sample(d):
    s = {"load": 0.0, "conns": 0, "moves": 0, "dd": 0, "state": "?", "c": []}
    try:
        with open(d + "/stats") as f:
            for line in f:
                w = line.split()
                if w[:1] == ["node"] and len(w) >= 6:
                    s["load"], s["conns"] = float(w[3]), int(w[5])
                elif w[:1] == ["balance"]:
                    kv = dict(zip(w[::2], w[1::2]))
                    s["state"] = kv.get("state", "?")
                    s["moves"] = int(kv.get("moves", 0))
                    s["dd"] = int(kv.get("drain_dropped", 0))
    except (OSError, ValueError):
        pass
    try:
        with open(d + "/clients") as f:
            text = f.read()
    except OSError:
        text = ""
    for line in text.splitlines():
        w = line.split()
        if len(w) < 4 or w[2] == "(member)" or not w[0].isdigit():
            continue
        kv = dict(x.split("=", 1) for x in w[3:] if "=" in x)
        try:
            load = float(kv.get("load", "0"))
        except ValueError:
            load = 0.0
        s["c"].append([int(w[0]), w[1], w[2], kv.get("state", "?"), load])
    return s


def main():
    out, period, nodes = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with open(out, "w", buffering=1) as f:
        mark = "knbd-bench-sync %d" % time.monotonic_ns()
        t, w = time.monotonic(), time.time()
        try:
            with open("/dev/kmsg", "w") as k:
                k.write(mark + "\n")
        except OSError:
            mark = None
        f.write(json.dumps({"sync": t, "w": w, "mark": mark}) + "\n")
        while True:
            t, w = time.monotonic(), time.time()
            f.write(json.dumps({"t": round(t, 3), "w": round(w, 3),
                                "n": [node_sample(d) for d in nodes]},
                               separators=(",", ":")) + "\n")
            time.sleep(max(0.0, period - (time.monotonic() - t)))


if __name__ == "__main__":
    main()
