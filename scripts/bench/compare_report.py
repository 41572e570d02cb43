#!/usr/bin/python3
"""Aggregate the raw output of scripts/bench/compare.sh.

usage: compare_report.py RAWDIR [--json FILE] [--txt FILE] [--png FILE] [--from-json FILE]

RAWDIR is $KNBD_OUT/compare-raw: meta.jsonl, runs.jsonl, passes.jsonl and
per run ID.json (fio), ID.pre / ID.post (/proc/stat cpu line + uptime, one
line per fio job, written by the measured job's exec_prerun/exec_postrun).
Writes the JSON (all raw numbers and the ratios), the readable table, and
with --png a chart (matplotlib; Debian's python3-matplotlib).  --from-json
skips the parsing and only draws/prints from an existing JSON.

Python 3 standard library only (plus matplotlib for --png).
"""
import argparse
import json
import math
import os
import sys

USERSPACE = ("nbd-server", "nbdkit", "qemu-nbd")
SERVER_ORDER = ("loop", "knbd", "nvmet-tcp", "nbd-server", "nbdkit", "qemu-nbd")


def read_jsonl(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
    except OSError:
        pass
    return out


def load_fio(path):
    with open(path) as f:
        text = f.read()
    i = text.find("{")
    if i < 0:
        raise ValueError("no JSON in %s" % path)
    return json.JSONDecoder().raw_decode(text[i:])[0]


def read_snaps(path):
    """[(busy_jiffies, total_jiffies, uptime)] from a pre/post file."""
    snaps = []
    try:
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) < 10 or p[0] != "cpu":
                    continue
                v = [int(x) for x in p[1:11]]
                # user nice system idle iowait irq softirq steal guest guest_nice
                # (guest time is already inside user/nice)
                busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
                total = sum(v[:8])
                snaps.append((busy, total, float(p[11]) if len(p) > 11 else None))
    except (OSError, ValueError):
        pass
    return snaps


def pct(clat, key):
    p = clat.get("percentile") or {}
    v = p.get(key)
    return None if v is None else v / 1000.0


def parse_run(raw, run, meta):
    """Fill in the measured numbers of one ok run (in place)."""
    rid = run["id"]
    try:
        j = load_fio(os.path.join(raw, rid + ".json"))
    except (OSError, ValueError) as e:
        run["status"] = "failed"
        run["note"] = (run.get("note") or "") + " unreadable fio output: %s" % e
        return
    job = warm = None
    for jj in j.get("jobs", []):
        if jj.get("jobname") == "meas":
            job = jj
        elif jj.get("jobname") == "warm":
            warm = jj
    if warm is not None:
        wc = (warm.get("mixed") or warm.get("read") or {}).get("clat_ns") or {}
        run["warmup_max_us"] = (wc.get("max") or 0) / 1000.0
    if job is None:
        run["status"] = "failed"
        run["note"] = "no measured job in fio output"
        return
    if job.get("error"):
        run["status"] = "failed"
        run["note"] = "fio error %s" % job.get("error")
    m = job.get("mixed") or {}
    if not m:  # older fio without unified_rw_reporting=both: add up
        m = {"iops": 0, "bw_bytes": 0, "total_ios": 0, "clat_ns": {}}
        for d in ("read", "write"):
            x = job.get(d, {})
            m["iops"] += x.get("iops", 0)
            m["bw_bytes"] += x.get("bw_bytes", 0)
            m["total_ios"] += x.get("total_ios", 0)
            if x.get("total_ios"):
                m["clat_ns"] = x.get("clat_ns", {})
    clat = m.get("clat_ns") or {}
    lat = m.get("lat_ns") or {}
    if not lat.get("percentile"):  # runs made without lat_percentiles
        lat = clat
    run["iops"] = m.get("iops")
    run["mb_s"] = (m.get("bw_bytes") or 0) / 1e6
    # total latency (submission + completion): with loopback transports a
    # request can complete inside io_submit(), and clat alone then shows ~0
    run["p50_us"] = pct(lat, "50.000000")
    run["p99_us"] = pct(lat, "99.000000")
    run["mean_us"] = (lat.get("mean") or 0) / 1000.0 if lat else None
    run["clat_p50_us"] = pct(clat, "50.000000")
    run["clat_p99_us"] = pct(clat, "99.000000")
    run["slat_mean_us"] = ((m.get("slat_ns") or {}).get("mean") or 0) / 1000.0
    run["max_us"] = (lat.get("max") or 0) / 1000.0 if lat else None
    run["ios"] = m.get("total_ios")
    run["runtime_ms"] = job.get("job_runtime") or job.get("read", {}).get("runtime")
    opts = j.get("global options", {})
    run["iodepth"] = int(opts.get("iodepth", 0) or 0) or None  # per fio job
    run["numjobs"] = int(opts.get("numjobs", 0) or 0) or None
    pre = read_snaps(os.path.join(raw, rid + ".pre"))
    post = read_snaps(os.path.join(raw, rid + ".post"))
    hz = float(meta.get("user_hz") or 100)
    if pre and post and run.get("ios"):
        a = min(pre, key=lambda s: (s[2] or 0, s[0]))
        b = max(post, key=lambda s: (s[2] or 0, s[0]))
        busy = b[0] - a[0]
        total = b[1] - a[1]
        run["busy_jiffies"] = busy
        run["cpu_us_per_io"] = busy * 1e6 / hz / run["ios"]
        if a[2] is not None and b[2] is not None:
            run["window_s"] = round(b[2] - a[2], 2)
        run["cpu_util"] = busy / total if total > 0 else None
    else:
        run["cpu_us_per_io"] = None


def fmt(v, f="%.0f", none="-"):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return none
    return f % v


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def build(raw):
    meta = {}
    for m in read_jsonl(os.path.join(raw, "meta.jsonl")):
        meta.update(m)
    runs = {}
    for r in read_jsonl(os.path.join(raw, "runs.jsonl")):
        runs[r["id"]] = r  # last record of an id wins
    for r in runs.values():
        if r.get("status") == "ok":
            parse_run(raw, r, meta)
    passes = read_jsonl(os.path.join(raw, "passes.jsonl"))
    results = sorted(runs.values(), key=order_key(meta))
    ratios = compute_ratios(results, meta)
    met = [x for x in ratios if x.get("goal") is not None]
    goals = {
        "checked": len(met),
        "met": sum(1 for x in met if x["goal"]),
        "rule": "knbd IOPS >= nvmet-tcp (>= 1.2x on 1M jobs) and knbd CPU us/IO <= nvmet-tcp's, same backing, C and job",
    }
    return {"config": meta, "passes": passes, "results": results, "ratios": ratios, "goals": goals}


def order_key(meta):
    backs = (meta.get("backings") or "tmpfs brd").split()
    jobs = (meta.get("jobs") or "").split()

    def key(r):
        b = r.get("backing")
        j = r.get("job")
        s = r.get("server")
        return (backs.index(b) if b in backs else 99, int(r.get("conns") or 0),
                jobs.index(j) if j in jobs else 99,
                SERVER_ORDER.index(s) if s in SERVER_ORDER else 99)
    return key


def compute_ratios(results, meta):
    groups = {}
    for r in results:
        groups.setdefault((r.get("backing"), r.get("conns"), r.get("job")), {})[r.get("server")] = r
    out = []
    key = order_key(meta)
    for (b, c, j), g in sorted(groups.items(), key=lambda kv: key(next(iter(kv[1].values())))):
        def ok(s):
            x = g.get(s)
            return x if x and x.get("status") == "ok" and x.get("iops") else None
        k, n, lo = ok("knbd"), ok("nvmet-tcp"), ok("loop")
        users = [ok(s) for s in USERSPACE if ok(s)]
        best = max(users, key=lambda x: x["iops"]) if users else None
        e = {"backing": b, "conns": c, "job": j,
             "knbd_iops": k and k["iops"], "nvmet_iops": n and n["iops"],
             "best_user": best and best["server"], "best_user_iops": best and best["iops"],
             "loop_iops": lo and lo["iops"],
             "iops_vs_nvmet": ratio(k and k["iops"], n and n["iops"]),
             "cpu_vs_nvmet": ratio(k and k.get("cpu_us_per_io"), n and n.get("cpu_us_per_io")),
             "p99_vs_nvmet": ratio(k and k.get("p99_us"), n and n.get("p99_us")),
             "iops_vs_best_user": ratio(k and k["iops"], best and best["iops"]),
             "cpu_vs_best_user": ratio(k and k.get("cpu_us_per_io"), best and best.get("cpu_us_per_io")),
             "iops_vs_loop": ratio(k and k["iops"], lo and lo["iops"]),
             "cpu_vs_loop": ratio(k and k.get("cpu_us_per_io"), lo and lo.get("cpu_us_per_io"))}
        need = 1.2 if str(j).startswith("1m") else 1.0
        e["iops_goal"] = need
        if e["iops_vs_nvmet"] is not None:
            e["goal_iops"] = e["iops_vs_nvmet"] >= need
            e["goal_cpu"] = None if e["cpu_vs_nvmet"] is None else e["cpu_vs_nvmet"] <= 1.0
            e["goal"] = e["goal_iops"] and e["goal_cpu"] is not False
        else:
            e["goal_iops"] = e["goal_cpu"] = e["goal"] = None
        out.append(e)
    return out


def render_txt(d):
    cfg = d["config"]
    L = []
    L.append("knbd vs peers: %s CPUs, %s MiB, %s s measured + %s s warm-up per job, fio libaio direct=1%s"
             % (cfg.get("ncpu"), cfg.get("size_mib"), cfg.get("runtime"), cfg.get("warmup"),
                " (QUICK)" if str(cfg.get("quick")) == "1" else ""))
    L.append("kernel %s, %s; THP %s (nvmet-tcp passes: %s); total wall time %s s%s"
             % (cfg.get("kernel"), cfg.get("fio"), cfg.get("thp", "always"), cfg.get("nvmet_thp"),
                cfg.get("wall_s", "?"),
                "" if cfg.get("done") else " (INCOMPLETE: the guest did not finish)"))
    L.append("TCG guest: absolute numbers mean little, compare ratios.  C=N: nbd-client -C N /"
             " nvme --nr-io-queues N; fio N jobs x ceil(QD/N), one per CPU.")
    hdr = "%-18s %-10s %9s %8s %8s %9s %9s  %s" % ("job", "server", "IOPS", "MB/s", "p50 us",
                                                    "p99 us", "CPU us/IO", "note")
    L.append("p50/p99: total latency (fio lat = submission + completion) in us; JSON has clat too.")
    L.append("")
    last = None
    for r in d["results"]:
        bc = (r.get("backing"), r.get("conns"))
        if bc != last:
            last = bc
            L.append("== backing %s, C=%s" % bc)
            L.append(hdr)
            lastjob = None
        job = r.get("job")
        jcol = job if job != lastjob else ""
        lastjob = job
        if r.get("status") == "ok":
            notes = []
            if r.get("cpu_util") is not None and r["cpu_util"] > 0.97:
                notes.append("CPU-bound")
            if (r.get("max_us") or 0) > 5e6:
                notes.append("STALL: max latency %.1f s" % (r["max_us"] / 1e6))
            try:
                budget = float(cfg.get("runtime")) + float(cfg.get("warmup")) + 30
                if float(r.get("wall_s") or 0) > budget:
                    notes.append("fio took %ss (a request stuck past the run?)" % r["wall_s"])
            except (TypeError, ValueError):
                pass
            if (r.get("warmup_max_us") or 0) > 5e6:
                notes.append("stall in warm-up (%.1f s)" % (r["warmup_max_us"] / 1e6))
            note = ", ".join(notes)
            L.append("%-18s %-10s %9s %8s %8s %9s %9s  %s" % (
                jcol, r.get("server"), fmt(r.get("iops")), fmt(r.get("mb_s"), "%.1f"),
                fmt(r.get("p50_us")), fmt(r.get("p99_us")), fmt(r.get("cpu_us_per_io"), "%.1f"), note))
        else:
            L.append("%-18s %-10s %9s  %s" % (jcol, r.get("server"), r.get("status", "?").upper(),
                                              (r.get("note") or "")[:110]))
    L.append("")
    L.append("== ratios: knbd / peer (IOPS; cpu = CPU us per I/O, lower is better; p99 = p99 total latency)")
    L.append("%-6s %2s %-18s %8s %8s %8s %9s %-11s %8s %6s" % (
        "back", "C", "job", "/nvmet", "cpu", "p99", "/user", "(best)", "/loop", "goal"))
    for e in d["ratios"]:
        g = e.get("goal")
        gs = "-" if g is None else ("ok" if g else "MISS")
        L.append("%-6s %2s %-18s %8s %8s %8s %9s %-11s %8s %6s" % (
            e["backing"], e["conns"], e["job"], fmt(e["iops_vs_nvmet"], "%.2f"),
            fmt(e["cpu_vs_nvmet"], "%.2f"), fmt(e["p99_vs_nvmet"], "%.2f"),
            fmt(e["iops_vs_best_user"], "%.2f"), "(%s)" % (e["best_user"] or "-"),
            fmt(e["iops_vs_loop"], "%.2f"), gs))
    g = d["goals"]
    L.append("goals met: %d of %d (%s)" % (g["met"], g["checked"], g["rule"]))
    notes = []
    for p in d["passes"]:
        bits = []
        if p.get("note"):
            bits.append(str(p["note"]))
        if p.get("status") not in (None, "ok"):
            bits.append("status " + str(p["status"]))
        if p.get("abort"):
            bits.append(str(p["abort"]))
        if p.get("timeouts"):
            bits.append("request timeouts: " + str(p["timeouts"]))
        if p.get("kernel"):
            bits.append("KERNEL: " + str(p["kernel"]))
        notes.append("  %-10s %-5s C=%s %4ss: %s" % (p.get("server"), p.get("backing"), p.get("conns"),
                                                    p.get("wall_s", "-"), "; ".join(bits)))
    if notes:
        L.append("")
        L.append("== server passes (setup, wall time, problems)")
        L.extend(notes)
    return "\n".join(L) + "\n"


def draw_png(d, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = d["config"]
    res = [r for r in d["results"] if r.get("status") == "ok" and r.get("iops")]
    panels = []
    for r in d["results"]:
        bc = (r.get("backing"), r.get("conns"))
        if bc not in panels:
            panels.append(bc)
    jobs = (cfg.get("jobs") or "").split()
    servers = [s for s in SERVER_ORDER if any(r.get("server") == s for r in d["results"])]
    if not panels or not jobs or not servers:
        return
    colors = {"loop": "#999999", "knbd": "#d62728", "nvmet-tcp": "#1f77b4",
              "nbd-server": "#2ca02c", "nbdkit": "#9467bd", "qemu-nbd": "#ff7f0e"}
    pw = max(4.8, 0.9 * len(jobs))
    fig, axes = plt.subplots(2, len(panels), figsize=(pw * len(panels) + 1, 8.5), squeeze=False)
    idx = {(r["backing"], r["conns"], r["job"], r["server"]): r for r in res}
    w = 0.8 / len(servers)
    for col, (b, c) in enumerate(panels):
        for row, (field, label) in enumerate((("iops", "IOPS / nvmet-tcp IOPS (higher is better)"),
                                              ("cpu_us_per_io", "CPU us per I/O / nvmet-tcp's (lower is better)"))):
            ax = axes[row][col]
            for si, s in enumerate(servers):
                xs, ys = [], []
                for ji, j in enumerate(jobs):
                    r, n = idx.get((b, c, j, s)), idx.get((b, c, j, "nvmet-tcp"))
                    if r and n and r.get(field) and n.get(field):
                        xs.append(ji + (si - (len(servers) - 1) / 2) * w)
                        ys.append(r[field] / n[field])
                ax.bar(xs, ys, w, label=s, color=colors.get(s))
            ax.axhline(1.0, color="black", lw=0.8)
            if field == "iops":
                for ji, j in enumerate(jobs):
                    if j.startswith("1m"):
                        ax.hlines(1.2, ji - 0.45, ji + 0.45, colors="black", linestyles="dashed", lw=0.8)
            ax.set_xticks(range(len(jobs)))
            ax.set_xticklabels(jobs, rotation=35, ha="right", fontsize=8)
            ax.set_title("%s, C=%s" % (b, c), fontsize=10)
            if col == 0:
                ax.set_ylabel(label, fontsize=9)
            ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8, ncol=2)
    fig.suptitle("knbd vs peers (TCG guest, %s CPUs; ratios to nvmet-tcp; dashed: the 1.2x goal on 1M jobs)"
                 % cfg.get("ncpu"), fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("raw", nargs="?")
    ap.add_argument("--json")
    ap.add_argument("--txt")
    ap.add_argument("--png")
    ap.add_argument("--from-json")
    a = ap.parse_args()
    if a.from_json:
        with open(a.from_json) as f:
            d = json.load(f)
    elif a.raw:
        d = build(a.raw)
    else:
        ap.error("need RAWDIR or --from-json")
    if a.json and not a.from_json:
        with open(a.json + ".tmp", "w") as f:
            json.dump(d, f, indent=1, sort_keys=True)
        os.replace(a.json + ".tmp", a.json)
    txt = render_txt(d)
    if a.txt:
        with open(a.txt, "w") as f:
            f.write(txt)
    else:
        sys.stdout.write(txt)
    if a.png:
        try:
            draw_png(d, a.png)
        except ImportError as e:
            print("compare_report: no chart (%s; install python3-matplotlib)" % e, file=sys.stderr)
            return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
