#!/usr/bin/env python3
"""Summarise one load-distribution scenario of test_balance.sh.

Input: the CSV the test samples every 0.5 s from the members' configfs
stats (t, load1..loadN, conns1..connsN; loads from knbd's load monitor, in
weighted ops/s) and the fio JSON outputs of the clients.

Prints one line of key=value pairs:
  converged_s     seconds from the first load to the start of the first
                  period of --hold s in which the members' loads (mean over
                  --smooth s) keep max/min <= --ratio (min > 0); "never" if none
  balanced_pct    share of the run's samples with max/min <= --ratio
  final_ratio     max/min of the members' mean loads over the last 5 s
                  ("inf" if a member carried nothing)
  worst_stall_ms  the largest I/O latency fio saw on any client
  fio_errors      fio's error codes summed over the clients
  client_iops     each client's IOPS over the whole run, and client_ratio
Writes an ASCII chart of the loads over time next to the CSV (.chart).
"""
import argparse
import json
import math
import os


def load_fio(path):
    with open(path) as f:
        t = f.read()
    return json.loads(t[t.index("{"):])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", required=True)
    ap.add_argument("--csv", required=True)
    ap.add_argument("--fio", nargs="*", default=[])
    ap.add_argument("--moves", default="?")
    ap.add_argument("--run", type=float, required=True)
    ap.add_argument("--ratio", type=float, default=1.5)
    ap.add_argument("--smooth", type=float, default=2.0)
    ap.add_argument("--hold", type=float, default=5.0)
    ap.add_argument("--min-load", type=float, default=5.0)
    a = ap.parse_args()

    rows = []
    with open(a.csv) as f:
        head = f.readline().split()
        n = sum(1 for h in head if h.startswith("load"))
        for line in f:
            v = line.split()
            if len(v) != 1 + 2 * n:
                continue
            try:
                rows.append((float(v[0]), [float(x) for x in v[1:1 + n]],
                             [int(x) for x in v[1 + n:]]))
            except ValueError:
                continue
    # The run starts when load first shows (fio takes seconds to get going
    # under TCG) and lasts --run seconds; its last 2 s blur as clients stop.
    start = next((r[0] for r in rows if sum(r[1]) >= a.min_load), None)
    win = [] if start is None else [r for r in rows if start <= r[0] <= start + a.run - 2]

    def ratio(loads):
        lo, hi = min(loads), max(loads)
        if lo <= 0:
            return math.inf
        return hi / lo

    # The monitor's figures, averaged over --smooth seconds: single samples
    # swing with the host's own load (TCG), a member's level does not.
    def smooth(i):
        t = win[i][0]
        pts = [r[1] for r in win[:i + 1] if r[0] > t - a.smooth]
        return [sum(p[m] for p in pts) / len(pts) for m in range(n)]

    sm = [smooth(i) for i in range(len(win))]
    converged = "never"
    for i in range(len(win)):
        span = [x for r, x in zip(win[i:], sm[i:]) if r[0] <= win[i][0] + a.hold]
        if win[-1][0] >= win[i][0] + a.hold and all(ratio(x) <= a.ratio for x in span):
            converged = "%.1f" % (win[i][0] - start)
            break
    balanced = sum(1 for x in sm if ratio(x) <= a.ratio)
    balanced_pct = 100.0 * balanced / len(sm) if sm else 0.0
    last = [r for r in win if r[0] >= (win[-1][0] - 5 if win else 0)]
    if last:
        means = [sum(r[1][m] for r in last) / len(last) for m in range(n)]
        fr = ratio(means)
    else:
        means, fr = [], math.inf
    final = "inf" if math.isinf(fr) else "%.2f" % fr

    errors, stall, per = 0, 0.0, {}
    for p in a.fio:
        try:
            j = load_fio(p)
        except (OSError, ValueError):
            errors += 1
            continue
        for job in j["jobs"]:
            # a client is a device: its jobs are named c<k>-q<h>
            client = "%s:%s" % (p, job.get("jobname", "").split("-")[0])
            errors += int(job.get("error", 0))
            for d in ("read", "write"):
                s = job.get(d, {})
                per[client] = per.get(client, 0.0) + s.get("iops", 0.0)
                stall = max(stall, s.get("lat_ns", {}).get("max", 0) / 1e6)
    iops = [per[c] for c in sorted(per)]
    cr = "inf" if not iops or min(iops) <= 0 else "%.2f" % (max(iops) / min(iops))

    print("mode=%s converged_s=%s final_ratio=%s balanced_pct=%.0f worst_stall_ms=%.0f "
          "fio_errors=%d moves=%s final_loads=%s final_conns=%s client_iops=%s "
          "client_ratio=%s" % (
              a.mode, converged, final, balanced_pct, stall, errors, a.moves,
              "/".join("%.0f" % m for m in means),
              "/".join(str(c) for c in (win[-1][2] if win else [])),
              "/".join("%.0f" % x for x in iops), cr))

    # Chart: one line per second, a bar per member scaled to the peak load.
    peak = max([max(r[1]) for r in rows] + [1.0])
    width = 22
    out = ["%s: member load (weighted ops/s) over time, '|' = %.0f" % (a.mode, peak / width),
           "   t  " + "".join(("m%d" % (m + 1)).ljust(width + 8) for m in range(n))]
    sec = -1
    for t, loads, conns in rows:
        if int(t) == sec:
            continue
        sec = int(t)
        cells = []
        for m in range(n):
            bar = "|" * int(round(loads[m] / peak * width))
            cells.append(("%s %d" % (bar, loads[m])).ljust(width + 6) + "c%d" % conns[m])
        out.append("%4ds  %s" % (sec, "".join(c.ljust(width + 8) for c in cells)))
    chart = os.path.splitext(a.csv)[0] + ".chart"
    with open(chart, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
