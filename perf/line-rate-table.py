#!/usr/bin/python3
"""Turns perf/line-rate's runs.jsonl into one table (medians) with the
ratios the targets name. Prints markdown; --markdown FILE also writes it
there with the machine and the command."""
import argparse
import datetime
import json
import statistics
import sys

p = argparse.ArgumentParser()
p.add_argument("raw")
p.add_argument("--runs", type=int)
p.add_argument("--runtime")
p.add_argument("--jobs")
p.add_argument("--server-cores")
p.add_argument("--client-cores")
p.add_argument("--machine", default="")
p.add_argument("--commit", default="")
p.add_argument("--markdown")
a = p.parse_args()

runs = {}
for line in open(a.raw):
    line = line.strip()
    if not line:
        continue
    r = json.loads(line)
    runs.setdefault((r["row"], r["workload"]), []).append(r["result"])


def per_core(res, key):
    """key per second of server CPU (None without CPU figures)."""
    cpu = res.get("server_cpu_s")
    secs = res.get("seconds")
    if not cpu or not secs:
        return None
    return res[key] / (cpu / secs)


def med(row, wl, f):
    vals = [v for v in (f(r) for r in runs.get((row, wl), [])) if v is not None]
    return statistics.median(vals) if vals else None


def gbps(row, wl):
    return med(row, wl, lambda r: r.get("gbps"))


def iops(row, wl):
    return med(row, wl, lambda r: r.get("iops"))


def iops_core(row, wl):
    return med(row, wl, lambda r: per_core(r, "iops"))


def ops(row, wl):
    """Metadata workloads: cycles (OPEN+LAYOUTGET+CLOSE) or GETATTRs per second."""
    return med(row, wl, lambda r: r.get("ops_per_s"))


def ops_core(row, wl):
    return med(row, wl, lambda r: r.get("ops_per_server_cpu_s"))


def p99(row, wl):
    return med(row, wl, lambda r: (r.get("lat_us") or {}).get("p99"))


def ratio(x, y):
    return None if x is None or not y else x / y


def fmt(v, nd=2):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{nd}f}"


net = gbps("net", "iperf3")
rows = []
# (what, unit, ceiling, ours, ganesha, ratio text, target text, met)
def add(what, unit, ceiling, ours, gan, target_ratio=None, target_over=None, target_text=""):
    r_ceiling = ratio(ours, ceiling)
    r_gan = ratio(ours, gan)
    met = "-"
    if target_over == "ceiling" and r_ceiling is not None:
        met = "yes" if r_ceiling >= target_ratio else "no"
    elif target_over == "ganesha" and r_gan is not None:
        met = "yes" if r_gan >= target_ratio else "no"
    elif target_over == "abs" and ours is not None:
        met = "yes" if ours >= target_ratio else "no"
    rows.append((what, unit, fmt(ceiling), fmt(ours), fmt(gan), fmt(r_ceiling), fmt(r_gan), target_text, met))


add("1 MiB seq read QD16", "GB/s", net, gbps("ours", "seqread"), gbps("ganesha", "seqread"), 0.9, "ceiling",
    ">= 0.9 x iperf3")
add("1 MiB seq write QD16", "GB/s", net, gbps("ours", "seqwrite"), gbps("ganesha", "seqwrite"), 0.8, "ceiling",
    ">= 0.8 x iperf3")
add("1 MiB seq read QD16, DS on page cache", "GB/s", net, gbps("ours-cached", "seqread"), gbps("ganesha", "seqread"),
    0.9, "ceiling", ">= 0.9 x iperf3")
add("1 MiB seq write QD16, DS on page cache", "GB/s", net, gbps("ours-cached", "seqwrite"), gbps("ganesha", "seqwrite"),
    0.8, "ceiling", ">= 0.8 x iperf3")
add("1 MiB seq read QD16 vs storage (fio)", "GB/s", gbps("storage", "seqread"), gbps("ours", "seqread"), None)
add("1 MiB seq write QD16 vs storage (fio)", "GB/s", gbps("storage", "seqwrite"), gbps("ours", "seqwrite"), None)
add("4 KiB rand read QD64", "IOPS", iops("storage", "randread"), iops("ours", "randread"), iops("ganesha", "randread"))
add("4 KiB rand read QD64, DS on page cache", "IOPS", None, iops("ours-cached", "randread"), iops("ganesha", "randread"))
add("4 KiB rand read QD64 per server core", "IOPS/core", None, iops_core("ours", "randread"),
    iops_core("ganesha", "randread"), 2.0, "ganesha", ">= 2 x ganesha")
add("4 KiB rand read QD64 per server core, DS on page cache", "IOPS/core", None, iops_core("ours-cached", "randread"),
    iops_core("ganesha", "randread"), 2.0, "ganesha", ">= 2 x ganesha")
add("OPEN+LAYOUTGET+CLOSE (ganesha: OPEN+CLOSE)", "cycles/s", None, ops("ours", "open-layout-close"),
    ops("ganesha", "open-layout-close"))
add("OPEN+LAYOUTGET+CLOSE per server core", "cycles/core-s", None, ops_core("ours", "open-layout-close"),
    ops_core("ganesha", "open-layout-close"), 50000, "abs", ">= 50,000")
add("GETATTR", "ops/s", None, ops("ours", "getattr"), ops("ganesha", "getattr"))
add("GETATTR per server core", "ops/core-s", None, ops_core("ours", "getattr"), ops_core("ganesha", "getattr"))

ceil_rows = [
    ("iperf3 loopback", f"{a.jobs} stream(s)", fmt(net)),
    ("fio O_DIRECT 1 MiB seq read QD16", "GB/s", fmt(gbps("storage", "seqread"))),
    ("fio O_DIRECT 1 MiB seq write QD16", "GB/s", fmt(gbps("storage", "seqwrite"))),
    ("fio O_DIRECT 4 KiB rand read QD64", "IOPS", fmt(iops("storage", "randread"))),
]
lat_rows = [(wl, fmt(p99("ours", wl), 0), fmt(p99("ganesha", wl), 0), fmt(p99("storage", wl), 0))
            for wl in ("seqread", "seqwrite", "randread", "open-layout-close", "getattr")]

out = []
out.append("| workload | unit | ceiling | pnfsd | ganesha | pnfsd/ceiling | pnfsd/ganesha | target | met |")
out.append("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    out.append("| " + " | ".join(r) + " |")
out.append("")
out.append("| ceiling | unit | value |")
out.append("|---|---|---|")
for r in ceil_rows:
    out.append("| " + " | ".join(r) + " |")
out.append("")
out.append("| p99 latency (us) | pnfsd | ganesha | fio |")
out.append("|---|---|---|---|")
for r in lat_rows:
    out.append("| " + " | ".join(r) + " |")
table = "\n".join(out)
print(table)

if a.markdown:
    with open(a.markdown, "w") as f:
        f.write("# Line-rate results\n\n")
        f.write(f"Latest run of `perf/line-rate`: {datetime.date.today().isoformat()}, commit {a.commit}.\n\n")
        f.write(f"Machine: {a.machine}.\n\n")
        f.write(f"Medians of {a.runs} runs of {a.runtime} s each; {a.jobs} job(s)/connection stream(s); "
                f"servers pinned to core(s) {a.server_cores}, clients (iperf3 -c, fio, pnfs-bench) to core(s) "
                f"{a.client_cores}. pnfsd = MDS + 1 DS (pNFS files layout), ganesha = nfs-ganesha 4.3 FSAL_VFS, "
                "same backing file system; rows marked \"DS on page cache\" run the DS with ds.o_direct = false (ganesha's FSAL_VFS "
                "always uses the page cache). Per-core figures divide by the server processes' CPU seconds.\n\n")
        f.write(table + "\n")
