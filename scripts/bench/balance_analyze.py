#!/usr/bin/env python3
"""make bench-balance: from the raw data of scripts/bench/balance-guest.sh
(RAW/SCEN-NBD-RUN/: meta.json, samples.jsonl, dmesg.txt, fio-cK.json,
lat-cK_clat.J.log) to the per-run figures and the table.

usage: balance_analyze.py RAW [--out DIR]
Writes DIR/bench-balance.txt (the table, also printed), bench-balance.csv (one
row per run), bench-balance.json (runs and summary) and bench-balance.png
(member load over time, one panel per scenario and nbd.ko).

Per run (Documentation/bench.md, "balance", says the same for users):
  conv_s      seconds from the first load to the start of the first period in
              which the goal holds (member loads averaged over 2 s) for 5 s
              (to the end of the phase if that is sooner, but at least 2 s).
              Goal: max/min <= 1.5; when the clients' measured loads make
              1.5 impossible, the most loaded member within 10 % of the best
              placement there is, of the connections as they measure then
              (2 s means: a client's connections need not carry equal
              loads).  "never": not within the phase.
  reconv_s    churn only: the worst, over the churn events, of the time from
              the event until the goal holds again (same rule)
  bal%        share of the samples (2 s means) in which the goal holds
  moves       the managers' moves (sum of the members' stats "moves") until
              the last planned fio end; those after it (the clients' load
              going away) are in the JSON as moves_after_end
  min_moves   a bound: the fewest connection moves that reach the goal from
              the placement after each disturbance (the start; each churn
              event), summed; by enumeration of all placements, with each
              client's connections at its profile's measured load (75th
              percentile over the run)
  wasted      moves after which a new connection of the same client arrives
              on the member the move took it off, within 10 s
  stall_ms    the worst fio completion latency (clat max) of any client
  stalled     moves followed by a request of the moved client waiting > 1 s
              (fio's 500 ms windows of clat max overlapping [move - 0.5 s,
              move + 2 s]; each window laid to one move: the last that began
              before its request was sent); drops: the members' drain_dropped (requests a
              drain left unanswered, for the client to retry after -t)
  other       windows of completions > 1 s (per fio job) near no move of
              their own client
  iops        each client's write IOPS (fio), errors: fio's error codes
"""
import argparse
import bisect
import csv
import glob
import itertools
import json
import math
import os
import re
import statistics
import sys

RATIO = 1.5
SLACK = 1.10
SMOOTH = 2.0
HOLD = 5.0
HOLD_MIN = 2.0
WASTE_S = 10.0
STALL_MS = 1000.0
MIN_LOAD = 5.0

MOVE_RE = re.compile(r"^\[\s*([0-9.]+)\].*node (\S+): over-utilised .*: moving client connection (\d+) ")
MARK_RE = re.compile(r"^\[\s*([0-9.]+)\]\s*(knbd-bench-sync \d+)")


def fio_json(path):
    with open(path) as f:
        t = f.read()
    return json.loads(t[t.index("{"):])


def read_run(d):
    meta = json.load(open(os.path.join(d, "meta.json")))
    sync, samples = None, []
    with open(os.path.join(d, "samples.jsonl")) as f:
        for line in f:
            try:
                j = json.loads(line)
            except ValueError:
                continue
            if "sync" in j:
                sync = j
            elif "n" in j:
                samples.append(j)
    return meta, sync, samples


def compositions(n, k):
    """All ways to put n equal connections on k members."""
    if k == 1:
        yield (n,)
        return
    for i in range(n + 1):
        for rest in compositions(n - i, k - 1):
            yield (i,) + rest


def placements(clients, m):
    """Every placement of the clients' connections: per client a tuple of
    connection counts per member; yields (placement, member loads)."""
    per = [list(compositions(n, m)) for n, _ in clients]
    for combo in itertools.product(*per):
        loads = [0.0] * m
        for (n, l), dist in zip(clients, combo):
            for j in range(m):
                loads[j] += dist[j] * l
        yield combo, loads


def best_makespan(items, m):
    """The lowest most loaded member over every placement of @items (loads
    of single connections) on m members: exact, depth first, largest
    first, an empty member tried once."""
    items = sorted(items, reverse=True)
    if len(items) <= m:
        return items[0] if items else 0.0
    best = [sum(items)]
    bins = [0.0] * m
    lower = max(items[0], sum(items) / m)

    def dfs(k, cur):
        if cur >= best[0]:
            return
        if k == len(items):
            best[0] = cur
            return
        tried = set()
        for j in range(m):
            if bins[j] in tried:
                continue
            tried.add(bins[j])
            bins[j] += items[k]
            dfs(k + 1, max(cur, bins[j]))
            bins[j] -= items[k]
            if best[0] <= lower * (1 + 1e-9):
                return

    dfs(0, 0.0)
    return best[0]


def ratio(loads):
    lo = min(loads)
    return math.inf if lo <= 0 else max(loads) / lo


class Goal:
    """The goal for a set of clients (conns, load per connection) on m members."""

    def __init__(self, clients, m):
        self.clients, self.m = clients, m
        self.total = sum(n * l for n, l in clients)
        best_r, best_max = math.inf, math.inf
        for _, loads in placements(clients, m):
            best_r = min(best_r, ratio(loads))
            best_max = min(best_max, max(loads))
        self.best_ratio, self.best_max = best_r, best_max
        self.by_ratio = best_r <= RATIO

    def met(self, loads, total=None, best_max=None):
        if self.by_ratio:
            return ratio(loads) <= RATIO
        # best_max: the best placement of the connections as they measure
        # now (a client's connections need not carry equal loads)
        if best_max is not None:
            return max(loads) <= SLACK * best_max
        # the measured total drifts with the VM's speed: scale the best to it
        scale = (total if total is not None else sum(loads)) / self.total if self.total else 1.0
        return max(loads) <= SLACK * self.best_max * scale

    def min_moves(self, start):
        """start: per client a tuple of connection counts per member."""
        best = None
        for combo, loads in placements(self.clients, self.m):
            if not self.met(loads, self.total):
                continue
            mv = sum(max(0, s[j] - c[j]) for s, c in zip(start, combo) for j in range(self.m))
            if best is None or mv < best:
                best = mv
        return best

    def describe(self):
        if self.by_ratio:
            return "max/min<=%.1f (best %.2f)" % (RATIO, self.best_ratio)
        return "max<=%.0f (best max %.0f, best ratio %.2f)" % (SLACK * self.best_max, self.best_max,
                                                                 self.best_ratio)


def analyze(d):
    meta, sync, samples = read_run(d)
    m = meta["members"]
    res = {"id": os.path.basename(d), "scenario": meta["scenario"], "nbd": meta["nbd"],
           "run": meta["run"], "ok": meta.get("ok", False), "nbd_loaded": meta.get("nbd_loaded")}
    if not samples or sync is None:
        res["error"] = "no samples"
        return res, None
    off_wall = sync["w"] - sync["sync"]          # wall = mono + off_wall
    ts = [s["t"] for s in samples]
    vol2c = {c["volume"]: c["name"] for c in meta["clients"]}
    cinfo = {c["name"]: c for c in meta["clients"]}
    for c in meta["clients"]:
        # t0: its first I/O done (fio takes seconds to start under TCG; its
        # runtime counts from there), from the latency logs; t1: the planned
        # end (a stalled fio runs on past it)
        first = []
        for lg in glob.glob(os.path.join(d, "lat-%s_clat.*.log" % c["name"])):
            with open(lg) as f:
                line = f.readline().split(",")
            if len(line) > 1:
                first.append(int(line[0]) / 1000.0 - 0.5)
        c["t0"] = (min(first) if first else c["start_wall"]) - off_wall

    loads = [[n["load"] for n in s["n"]] for s in samples]
    # a client whose first requests all stall logs nothing for a while: its
    # connections' load shows that it started
    for c in meta["clients"]:
        go = c["start_wall"] - off_wall
        for s in samples:
            if go <= s["t"] < c["t0"] and any(x[2] == c["volume"] and x[4] > 0
                                              for n in s["n"] for x in n["c"]):
                c["t0"] = s["t"] - 0.5
                break
        c["t1"] = c["t0"] + c["runtime"]
    # per sample: {client: [conns per member]} and client load sums
    place, cload = [], []
    for s in samples:
        p, cl = {}, {}
        for j, n in enumerate(s["n"]):
            for cid, peer, vol, state, load in n["c"]:
                c = vol2c.get(vol)
                if c is None:
                    continue
                cl[c] = cl.get(c, 0.0) + load
                if state == "transmission":
                    p.setdefault(c, [0] * m)[j] += 1
        place.append(p)
        cload.append(cl)

    # Each client's load per connection: the 75th percentile, over the run,
    # of its profile's clients (clients of a profile ask for the same; a
    # stall pulls one client's median down, which is no lesser demand).
    # Samples from the settled part of each life: the first 3 s are the load
    # figures' ramp, the last 1 s the stop.
    pool = {}
    for name, c in cinfo.items():
        for i, t in enumerate(ts):
            if c["t0"] + 3 <= t <= c["t1"] - 1 and name in cload[i]:
                n = sum(place[i].get(name, [])) or 2
                pool.setdefault(c["profile"], []).append(cload[i][name] / n)
    prof_load = {p: sorted(v)[(3 * len(v)) // 4] for p, v in pool.items() if v}
    per_conn = {name: prof_load.get(c["profile"], 0.0) for name, c in cinfo.items()}
    res["client_load"] = {k: round(v, 1) for k, v in per_conn.items()}

    start = next((t for t, l in zip(ts, loads) if sum(l) >= MIN_LOAD), None)
    if start is None:
        res["error"] = "no load"
        return res, None
    # The end: the first planned fio end that no arrival replaces.  Each
    # arrival through the group address (churn) replaces one of the
    # earliest departures; any other departure is a new disturbance, not
    # part of this run's convergence.
    n_arr = sum(1 for c in meta["clients"] if c["via"] == "vip")
    ends = sorted(c["t1"] for c in meta["clients"])
    end = ends[min(n_arr, len(ends) - 1)] - 2

    # smoothed member loads
    sm = []
    for i, t in enumerate(ts):
        lo = bisect.bisect_left(ts, t - SMOOTH + 1e-9)
        pts = loads[lo:i + 1]
        sm.append([sum(p[j] for p in pts) / len(pts) for j in range(m)])
    # ... and each client connection's, smoothed the same way (over the
    # samples it was there in): the items of the best placement
    cl_conn = [{(j, x[0]): x[4] for j, n in enumerate(s["n"]) for x in n["c"]
                if x[2] in vol2c and x[3] == "transmission"} for s in samples]
    sm_conn = []
    for i, t in enumerate(ts):
        lo = bisect.bisect_left(ts, t - SMOOTH + 1e-9)
        acc = {}
        for p in cl_conn[lo:i + 1]:
            for k, v in p.items():
                acc.setdefault(k, []).append(v)
        sm_conn.append([sum(v) / len(v) for k, v in acc.items() if k in cl_conn[i]])
    best_cache = {}

    def best_at(i):
        if i not in best_cache:
            best_cache[i] = best_makespan(sm_conn[i], m)
        return best_cache[i]

    # phases: the start, then each arrival through the group address
    events = sorted(c["t0"] for c in meta["clients"] if c["via"] == "vip")
    bounds = [start] + [e for e in events if start < e < end] + [end]
    phases = []
    met_n = [0, 0]
    for k in range(len(bounds) - 1):
        t_a, t_b = bounds[k], bounds[k + 1]
        # the clients of the phase: at the start, those that start before
        # the first event; after an event, those there then and not leaving
        if k == 0:
            active = [n for n, c in cinfo.items() if c["t0"] < t_b - 0.5 and c["t1"] > t_a + 3]
        else:
            active = [n for n, c in cinfo.items() if c["t0"] <= t_a + 0.5 and c["t1"] > t_a + 3]
        clients = [(2, per_conn[n]) for n in sorted(active)]
        goal = Goal(clients, m) if clients and sum(l for _, l in clients) > 0 else None
        # the placement the disturbance left: the first sample with every
        # client of the phase fully connected (a leaving one, idle, may
        # still be attached for a moment: it does not count)
        st = None
        for i, t in enumerate(ts):
            if t < t_a - 1 or t > t_b:
                continue
            p = place[i]
            if all(sum(p.get(n, [])) == 2 for n in active):
                st = [tuple(p[n]) for n in sorted(active)]
                break
        mm = goal.min_moves(st) if goal and st else None
        # when the goal is reached and held
        conv = None
        idx = [i for i, t in enumerate(ts) if t_a <= t <= t_b]
        for i in idx:
            hold = min(HOLD, t_b - ts[i])
            if hold < HOLD_MIN:
                break
            span = [x for x in idx if ts[i] <= ts[x] <= ts[i] + hold]
            if goal and all(goal.met(sm[x], best_max=None if goal.by_ratio else best_at(x))
                            for x in span):
                conv = ts[i] - t_a
                break
        met_n[0] += sum(1 for x in idx
                        if goal and goal.met(sm[x], best_max=None if goal.by_ratio else best_at(x)))
        met_n[1] += len(idx)
        phases.append({"t": round(t_a - start, 1), "len": round(t_b - t_a, 1),
                       "clients": sorted(active), "goal": goal.describe() if goal else "-",
                       "min_moves": mm, "conv_s": None if conv is None else round(conv, 1),
                       "start_placement": st})
    res["phases"] = phases
    res["balanced_pct"] = round(100.0 * met_n[0] / met_n[1]) if met_n[1] else 0
    res["goal"] = phases[0]["goal"]
    res["conv_s"] = phases[0]["conv_s"]
    if len(phases) > 1:
        rc = [p["conv_s"] for p in phases[1:]]
        res["reconv_s"] = None if any(x is None for x in rc) else max(rc)
    mins = [p["min_moves"] for p in phases]
    res["min_moves"] = None if any(x is None for x in mins) else sum(mins)

    # moves and drain drops: counters' growth over the run
    # (moves once the clients stop, as their load goes, answer that
    # departure, not the start: counted apart)
    first, last = samples[0]["n"], samples[-1]["n"]
    at_end = samples[max(0, bisect.bisect_right(ts, end) - 1)]["n"]
    res["moves"] = sum(b["moves"] - a["moves"] for a, b in zip(first, at_end))
    res["moves_after_end"] = sum(b["moves"] - a["moves"] for a, b in zip(at_end, last))
    res["drops"] = sum(b["dd"] - a["dd"] for a, b in zip(first, last))

    # the moves themselves, from the kernel log
    mv = []
    mark_ts = None
    try:
        lines = open(os.path.join(d, "dmesg.txt"), errors="replace").read().splitlines()
    except OSError:
        lines = []
    for line in lines:
        mm_ = MARK_RE.match(line)
        if mm_ and sync.get("mark") and mm_.group(2) == sync["mark"]:
            mark_ts = float(mm_.group(1))
    if mark_ts is not None:
        for line in lines:
            x = MOVE_RE.match(line)
            if not x:
                continue
            t = float(x.group(1)) - mark_ts + sync["sync"]
            node, cid = x.group(2), int(x.group(3))
            j = int(node[1:]) - 1 if node[1:].isdigit() else None
            client = None
            for s in samples:
                if j is None or j >= len(s["n"]):
                    break
                for c in s["n"][j]["c"]:
                    if c[0] == cid:
                        client = vol2c.get(c[2])
                        break
                if client:
                    break
            mv.append({"t": t, "node": node, "j": j, "id": cid, "client": client})
    res["moves_logged"] = len(mv)

    # wasted: a new connection of the client on the member it left, within 10 s
    wasted = 0
    for x in mv:
        if x["client"] is None or x["j"] is None:
            continue
        seen = set()
        for s in samples:
            if s["t"] > x["t"]:
                break
            seen.update(c[0] for c in s["n"][x["j"]]["c"])
        x["wasted"] = False
        for s in samples:
            if s["t"] <= x["t"] or s["t"] > x["t"] + WASTE_S:
                continue
            if any(vol2c.get(c[2]) == x["client"] and c[0] not in seen for c in s["n"][x["j"]]["c"]):
                x["wasted"] = True
                break
        wasted += x["wasted"]
    res["wasted"] = wasted

    # fio: errors, IOPS, worst completion, windows of long completions
    errors, iops, stall, windows = 0, {}, 0.0, []
    for name in sorted(cinfo, key=lambda n: int(n[1:])):
        p = os.path.join(d, "fio-%s.json" % name)
        try:
            j = fio_json(p)
        except (OSError, ValueError):
            errors += 1
            iops[name] = 0.0
            continue
        w, cs = 0.0, 0.0
        for job in j["jobs"]:
            errors += int(job.get("error", 0))
            w += job["write"]["iops"]
            for dd in ("read", "write"):
                cs = max(cs, job[dd]["clat_ns"]["max"] / 1e6)
        iops[name] = round(w, 1)
        cinfo[name]["stall_ms"] = round(cs)
        stall = max(stall, cs)
        for lg in glob.glob(os.path.join(d, "lat-%s_clat.*.log" % name)):
            for line in open(lg):
                v = line.split(",")
                if len(v) < 2:
                    continue
                ms = int(v[1]) / 1e6
                if ms > STALL_MS:
                    tc = int(v[0]) / 1000.0 - off_wall
                    windows.append({"client": name, "t": round(tc - start, 2), "tc": tc, "ms": round(ms)})
    res["errors"] = errors
    res["iops"] = iops
    res["stall_ms"] = round(stall)
    res["client_stall_ms"] = {n: cinfo[n].get("stall_ms") for n in cinfo}
    # Each long completion is laid to one move: of its client's moves whose
    # span [t - 0.5 s, t + 2 s] it overlaps, the last that began before the
    # request was sent (its drain is what left it; a second move of the
    # same client during the wait is not), else the first.
    for x in mv:
        x["stalled"] = False
    for w in windows:
        sent = w["tc"] - w["ms"] / 1000          # at the latest (the window's end)
        near = [x for x in mv if x["client"] == w["client"] and
                w["tc"] - w["ms"] / 1000 - 0.5 <= x["t"] + 2 and w["tc"] + 0.5 >= x["t"] - 0.5]
        if not near:
            continue
        before = [x for x in near if x["t"] - 0.5 <= sent]
        (max(before, key=lambda x: x["t"]) if before else min(near, key=lambda x: x["t"]))["stalled"] = True
    stalled = sum(x["stalled"] for x in mv)
    res["stalled"] = stalled
    # long completions near no move of their own client: not the moves' doing
    res["other_stalls"] = sum(
        1 for w in windows
        if not any(x["client"] == w["client"] and w["tc"] - w["ms"] / 1000 - 0.5 <= x["t"] + 2
                   and w["tc"] + 0.5 >= x["t"] - 0.5 for x in mv))
    res["stall_windows"] = [{k: w[k] for k in ("client", "t", "ms")} for w in windows]
    res["move_list"] = [{"t": round(x["t"] - start, 2), "node": x["node"], "id": x["id"],
                         "client": x["client"], "wasted": x.get("wasted"), "stalled": x["stalled"]}
                        for x in mv]
    series = {"t": [round(t - start, 2) for t in ts], "loads": sm,
              "moves": [x["t"] - start for x in mv],
              "events": [e - start for e in events if start < e < end]}
    return res, series


def fmt(v, nd=1):
    if v is None:
        return "never"
    if isinstance(v, float):
        return ("%%.%df" % nd) % v
    return str(v)


def agg(vals):
    """median and worst (largest; None = never counts as the worst)"""
    if not vals:
        return "-"
    if any(v is None for v in vals):
        worst = None
    else:
        worst = max(vals)
    finite = sorted(v for v in vals if v is not None)
    if len(finite) * 2 <= len(vals):
        med = None
    else:
        # a "never" sits above every number: take the median of the ranks
        ranked = finite + [math.inf] * (len(vals) - len(finite))
        med = statistics.median_low(ranked) if len(ranked) % 2 == 0 else statistics.median(ranked)
        med = None if med == math.inf else med
    return "%s/%s" % (fmt(med), fmt(worst))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("raw")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    out = a.out or os.path.dirname(os.path.abspath(a.raw))
    runs, series = [], {}
    for d in sorted(glob.glob(os.path.join(a.raw, "*-*-*"))):
        if not os.path.isfile(os.path.join(d, "meta.json")):
            continue
        try:
            r, s = analyze(d)
        except Exception as e:  # one broken run must not hide the others
            r, s = {"id": os.path.basename(d), "error": "%s: %s" % (type(e).__name__, e)}, None
        runs.append(r)
        if s is not None:
            series.setdefault((r["scenario"], r["nbd"]), []).append((r, s))
    order = {"skew3": 0, "heavy4": 1, "churn": 2}
    keys = sorted({(r["scenario"], r["nbd"]) for r in runs if "scenario" in r and "error" not in r},
                  key=lambda k: (order.get(k[0], 9), k[0], k[1] != "stock", k[1]))
    summary = []
    lines = ["bench-balance: per scenario and nbd.ko, median/worst over the runs "
             "(conv_s: 'never' = not within the run; Documentation/bench.md)",
             "%-7s %-8s %4s %11s %11s %7s %9s %7s %9s %9s %13s %10s %5s %5s %4s  %s" % (
                 "scen", "nbd", "runs", "conv_s", "reconv_s", "bal%", "moves", "min", "extra", "wasted",
                 "stall_ms", "stalled", "drops", "other", "errs", "iops per client (median)")]
    for k in keys:
        rs = [r for r in runs if (r.get("scenario"), r.get("nbd")) == k and "error" not in r]
        extra = [None if r["min_moves"] is None else r["moves"] - r["min_moves"] for r in rs]
        nmv = sum(r["moves_logged"] for r in rs)
        nst = sum(r["stalled"] for r in rs)
        names = sorted({n for r in rs for n in r["iops"]}, key=lambda n: int(n[1:]))
        ci = "/".join("%.0f" % statistics.median([r["iops"][n] for r in rs if n in r["iops"]])
                      for n in names)
        row = {"scenario": k[0], "nbd": k[1], "runs": len(rs),
               "conv_s": agg([r["conv_s"] for r in rs]),
               "reconv_s": agg([r["reconv_s"] for r in rs if "reconv_s" in r])
               if any("reconv_s" in r for r in rs) else "-",
               "balanced_pct": agg([r["balanced_pct"] for r in rs]),
               "moves": agg([r["moves"] for r in rs]),
               "min_moves": agg([r["min_moves"] for r in rs]),
               "extra": agg([e for e in extra if e is not None]) if any(e is not None for e in extra) else "-",
               "wasted": agg([r["wasted"] for r in rs]),
               "stall_ms": agg([r["stall_ms"] for r in rs]),
               "stalled": "%d/%d %.0f%%" % (nst, nmv, 100.0 * nst / nmv if nmv else 0),
               "drops": sum(r["drops"] for r in rs), "errors": sum(r["errors"] for r in rs),
               "other_stalls": sum(r["other_stalls"] for r in rs),
               "iops": ci, "goal": rs[0]["goal"] if rs else ""}
        summary.append(row)
        lines.append("%-7s %-8s %4d %11s %11s %7s %9s %7s %9s %9s %13s %10s %5d %5d %4d  %s" % (
            row["scenario"], row["nbd"], row["runs"], row["conv_s"], row["reconv_s"], row["balanced_pct"],
            row["moves"],
            row["min_moves"], row["extra"], row["wasted"], row["stall_ms"], row["stalled"],
            row["drops"], row["other_stalls"], row["errors"], row["iops"]))
    for row in summary:
        lines.append("goal %s/%s: %s" % (row["scenario"], row["nbd"], row["goal"]))
    for r in runs:
        if "error" in r:
            lines.append("run %s: not analysed: %s" % (r["id"], r["error"]))
        elif not r.get("ok"):
            lines.append("run %s: the guest reported a failure (see its log); figures kept" % r["id"])
    notes = os.path.join(a.raw, "notes.txt")
    if os.path.exists(notes):
        lines += [l.rstrip() for l in open(notes) if any(w in l for w in ("NOTE", "not run", "ERROR", "failed", "scenarios"))]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(os.path.join(out, "bench-balance.txt"), "w") as f:
        f.write(text)

    cols = ["id", "scenario", "nbd", "run", "ok", "conv_s", "reconv_s", "balanced_pct", "moves", "min_moves",
            "moves_logged", "wasted", "stalled", "drops", "other_stalls", "stall_ms", "errors", "iops",
            "client_stall_ms", "client_load", "goal"]
    with open(os.path.join(out, "bench-balance.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in runs:
            w.writerow([json.dumps(r.get(c), sort_keys=True) if isinstance(r.get(c), dict)
                        else ("" if r.get(c) is None else r.get(c)) for c in cols])
    with open(os.path.join(out, "bench-balance.json"), "w") as f:
        json.dump({"summary": summary, "runs": runs}, f, indent=1)

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("balance_analyze: no matplotlib (scripts/deps.sh): no chart", file=sys.stderr)
        return
    if not keys:
        return
    fig, axes = plt.subplots(len(keys), 1, figsize=(10, 2.8 * len(keys)), squeeze=False)
    for ax, k in zip(axes[:, 0], keys):
        got = series.get(k, [])
        if not got:
            continue
        # the run with the median convergence stands for the scenario
        got.sort(key=lambda rs: math.inf if rs[0]["conv_s"] is None else rs[0]["conv_s"])
        r, s = got[(len(got) - 1) // 2]
        for j in range(len(s["loads"][0])):
            ax.plot(s["t"], [x[j] for x in s["loads"]], label="m%d" % (j + 1), lw=1.2)
        for i, t in enumerate(s["moves"]):
            ax.axvline(t, color="grey", ls=":", lw=0.8, label="move" if i == 0 else None)
        for i, t in enumerate(s["events"]):
            ax.axvline(t, color="red", ls="--", lw=0.8, label="churn" if i == 0 else None)
        if r["conv_s"] is not None:
            ax.axvline(r["conv_s"], color="green", lw=1.0, label="converged")
        ax.set_xlim(left=-2)
        ax.set_title("%s, %s nbd.ko (run %s): converged %s, %d moves (min %s), worst stall %s ms" % (
            k[0], k[1], r["run"], "never" if r["conv_s"] is None else "after %.1f s" % r["conv_s"],
            r["moves"], fmt(r["min_moves"]), r["stall_ms"]),
            fontsize=9)
        ax.set_ylabel("load (2 s mean)")
        ax.legend(fontsize=7, ncol=8, loc="upper right")
    axes[-1, 0].set_xlabel("seconds from the first load")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "bench-balance.png"), dpi=90)
    print("chart: %s" % os.path.join(out, "bench-balance.png"))


if __name__ == "__main__":
    main()
