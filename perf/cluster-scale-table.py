#!/usr/bin/env python3
"""The table of perf/cluster-scale: the store's own rates (pnfs-kv-bench) and
the MDS's metadata rates on 1 and N nodes (sums over the client processes of
a run, medians over runs), the ratio N:1 and the MDS's rate as a share of the
store's; printed as markdown and with --markdown appended to that file."""
import argparse
import json
import statistics

ap = argparse.ArgumentParser()
ap.add_argument("raw")
for k in ("--nodes", "--runs", "--runtime", "--clients", "--creators", "--files", "--kv-threads", "--machine",
          "--commit", "--markdown"):
    ap.add_argument(k)
a = ap.parse_args()
n = int(a.nodes)

kv = {}
# (nodes, workload) -> run -> [results]; etcd requests per (nodes, workload, run)
mds = {}
reqs = {}
with open(a.raw) as f:
    for line in f:
        r = json.loads(line)
        if r["row"] == "kv":
            kv[r["result"]["shape"]] = r["result"]
            continue
        nodes, run = r["row"].split("-r")
        mds.setdefault((int(nodes), r["workload"]), {}).setdefault(run, []).append(r["result"])
        reqs[(int(nodes), r["workload"], run)] = reqs.get((int(nodes), r["workload"], run), 0) + r["etcd_requests"]


def rate(wl, r):
    return r["phases"]["create"]["ops_per_s"] if wl == "mdtest" else r["ops_per_s"]


def ops(wl, r):
    return sum(p["ops"] for p in r["phases"].values()) if wl == "mdtest" else r["ops"]


def med_rate(nodes, wl):
    runs = mds.get((nodes, wl), {})
    vals = [sum(rate(wl, r) for r in rs) for rs in runs.values()]
    return statistics.median(vals) if vals else None


def req_per_op(nodes, wl):
    runs = mds.get((nodes, wl), {})
    vals = []
    for run, rs in runs.items():
        total_ops = sum(ops(wl, r) for r in rs)
        q = reqs.get((nodes, wl, run), 0)
        if q and total_ops:
            vals.append(q / total_ops)
    return statistics.median(vals) if vals else None


def p50s(nodes, wl):
    runs = mds.get((nodes, wl), {})
    lat = [(r["phases"]["create"] if wl == "mdtest" else r)["lat_us"]["p50"] for rs in runs.values() for r in rs]
    return statistics.median(lat) if lat else None


def fmt(v, d=0):
    return "-" if v is None else f"{v:,.{d}f}"


out = [f"Cluster scale: `perf/cluster-scale --nodes {n} --runs {a.runs} --runtime {a.runtime} --clients {a.clients} "
       f"--creators {a.creators} --files {a.files} --kv-threads {a.kv_threads}`; medians of {a.runs} run(s); "
       f"{a.clients} pnfs-bench processes at once, process j on node (j mod nodes) + 1; everything on one machine, "
       f"unpinned.", "", f"Machine: commit {a.commit}, {a.machine}.", ""]
out.append("| store (etcd, 3 members) | txns/s | p50 / p99 (us) | conflicts | txns per etcd CPU s |")
out.append("|---|---|---|---|---|")
names = {"read": "read-only, 1-3 gets", "create": "create: 3 gets + 4 puts", "state": "state record: 2 blind puts"}
for shape in ("read", "create", "state"):
    r = kv.get(shape)
    if r:
        out.append(f"| {names[shape]} ({r['threads']} threads) | {r['txns_per_s']:,.0f} | {r['p50_us']:,} / {r['p99_us']:,} "
                   f"| {r['conflicts']:,} | {fmt(r['txns_per_server_cpu_s'])} |")
out.append("")
out.append(f"| MDS workload | 1 node | {n} nodes | ratio {n}:1 | p50 us (1 / {n}) | etcd requests per op (1 / {n}) "
           f"| store ceiling (shape) | MDS share of it (1 / {n}) |")
out.append("|---|---|---|---|---|---|---|---|")
rows = [("OPEN+LAYOUTGET+CLOSE cycles/s (QD16 each)", "open-layout-close", "read"),
        ("GETATTR/s (QD16 each)", "getattr", "read"),
        (f"creates/s (mdtest, {a.creators} creators each)", "mdtest", "create")]
for label, wl, shape in rows:
    one, many = med_rate(1, wl), med_rate(n, wl)
    ratio = f"{many / one:.2f}" if one and many else "-"
    ceil = kv.get(shape, {}).get("txns_per_s")
    share = " / ".join("-" if (v is None or not ceil) else f"{100 * v / ceil:.0f} %" for v in (one, many))
    out.append(f"| {label} | {fmt(one)} | {fmt(many)} | {ratio} | {fmt(p50s(1, wl))} / {fmt(p50s(n, wl))} "
               f"| {fmt(req_per_op(1, wl), 1)} / {fmt(req_per_op(n, wl), 1)} | {fmt(ceil)} ({shape}) | {share} |")
out.append("")
out.append("etcd requests per op: etcd's KV requests (Range, Txn, ...) summed over the members during the whole "
           "workload (its untimed file set-up included; for mdtest over create, stat and remove) divided by the "
           "operations done; one OPEN+LAYOUTGET+CLOSE cycle counts as one op.")
text = "\n".join(out) + "\n"
print(text)
if a.markdown:
    with open(a.markdown, "a") as f:
        f.write("\n" + text)
