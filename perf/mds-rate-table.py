#!/usr/bin/env python3
"""The table of perf/mds-rate: medians of the runs in runs.jsonl, printed as
markdown and with --markdown appended to that file."""
import argparse
import json
import statistics
import sys

ap = argparse.ArgumentParser()
ap.add_argument("raw")
for k in ("--runs", "--runtime", "--creators", "--files", "--hold-clients", "--hold-opens",
          "--server-cores", "--client-cores", "--machine", "--commit", "--markdown"):
    ap.add_argument(k)
ap.add_argument("--kv", default="redb")
a = ap.parse_args()

runs = {}
hold = None
with open(a.raw) as f:
    for line in f:
        r = json.loads(line)
        if r["row"] == "hold":
            hold = r["result"]
            continue
        runs.setdefault((r["row"], r["workload"]), []).append(r["result"])

COLS = [("ours", "ours"), ("ours+held", "ours, %s opens held by %s clients" % (
    f"{int(a.hold_clients) * int(a.hold_opens):,}", f"{int(a.hold_clients):,}")), ("ganesha", "nfs-ganesha")]
COLS = [c for c in COLS if any(k[0] == c[0] for k in runs)]


def med(row, wl, get):
    vals = [get(r) for r in runs.get((row, wl), [])]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def every(row, wl, get):
    vals = [get(r) for r in runs.get((row, wl), [])]
    return " ".join("-" if v is None else f"{v:,.0f}" for v in vals)


def fmt(v, unit=""):
    return "-" if v is None else f"{v:,.0f}{unit}"


def phase(p, key):
    return lambda r: r["phases"][p][key]


def lat(q):
    return lambda r: r["lat_us"][q]


def phase_lat(p, q):
    return lambda r: r["phases"][p]["lat_us"][q]


c = a.creators
lines = [
    ("OPEN+LAYOUTGET+CLOSE cycles/s (QD16; ganesha: no layouts)", "open-layout-close", lambda r: r["cycles_per_s"], ""),
    ("OPEN+LAYOUTGET+CLOSE cycles per server CPU s", "open-layout-close", lambda r: r["ops_per_server_cpu_s"], ">= 50,000"),
    ("OPEN+LAYOUTGET+CLOSE p50 / p99 latency per COMPOUND (us)", "open-layout-close", None, ""),
    ("GETATTR/s (QD16)", "getattr", lambda r: r["ops_per_s"], ""),
    ("GETATTR per server CPU s", "getattr", lambda r: r["ops_per_server_cpu_s"], ">= 200,000"),
    ("GETATTR p50 / p99 latency (us)", "getattr", None, ""),
    (f"mdtest creates/s ({c} creators, {a.files} files each, durable)", "mdtest", phase("create", "ops_per_s"), ">= 10,000"),
    ("mdtest creates per server CPU s", "mdtest", phase("create", "ops_per_server_cpu_s"), ""),
    ("mdtest create (OPEN + CLOSE) p50 / p99 latency (us)", "mdtest", "create", ""),
    ("mdtest stats/s (LOOKUP + GETATTR)", "mdtest", phase("stat", "ops_per_s"), ""),
    ("mdtest stats per server CPU s", "mdtest", phase("stat", "ops_per_server_cpu_s"), ""),
    ("mdtest stat p50 / p99 latency (us)", "mdtest", "stat", ""),
    ("mdtest removes/s (REMOVE)", "mdtest", phase("remove", "ops_per_s"), ""),
    ("mdtest removes per server CPU s", "mdtest", phase("remove", "ops_per_server_cpu_s"), ""),
    ("mdtest remove p50 / p99 latency (us)", "mdtest", "remove", ""),
]

out = []
out.append(f"MDS rates: `perf/mds-rate --runs {a.runs} --runtime {a.runtime} --creators {a.creators} --files {a.files} "
           f"--hold-clients {a.hold_clients} --hold-opens {a.hold_opens}"
           + (f" --kv {a.kv}" if a.kv != "redb" else "") + f"`; servers on CPU {a.server_cores}, "
           f"clients on CPU {a.client_cores}; medians of {a.runs} runs.")
out.append("")
out.append(f"Machine: commit {a.commit}, {a.machine}.")
out.append("")
out.append("| row | " + " | ".join(t for _, t in COLS) + " | target |")
out.append("|---|" + "---|" * len(COLS) + "---|")
for label, wl, get, target in lines:
    cells = []
    for col, _ in COLS:
        if get is None:
            cells.append(f"{fmt(med(col, wl, lat('p50')))} / {fmt(med(col, wl, lat('p99')))}")
        elif isinstance(get, str):
            cells.append(f"{fmt(med(col, wl, phase_lat(get, 'p50')))} / {fmt(med(col, wl, phase_lat(get, 'p99')))}")
        else:
            cells.append(fmt(med(col, wl, get)))
    out.append(f"| {label} | " + " | ".join(cells) + f" | {target} |")
for label, wl, get in [
    ("every run: OPEN+LAYOUTGET+CLOSE per server CPU s", "open-layout-close", lambda r: r["ops_per_server_cpu_s"]),
    ("every run: GETATTR per server CPU s", "getattr", lambda r: r["ops_per_server_cpu_s"]),
    ("every run: mdtest creates/s", "mdtest", phase("create", "ops_per_s")),
]:
    out.append(f"| {label} | " + " | ".join(every(col, wl, get) for col, _ in COLS) + " | |")
if hold:
    out.append("")
    out.append(f"Held: {hold['held']:,} opens by {hold['clients']:,} clients, set up in {hold['setup_s']:.1f} s "
               f"(OPEN CREATE, untimed), {hold['renewals']:,} lease renewals during the held rows, "
               f"{hold['closed']:,} closed at the end, {hold['errors']} errors.")
for tag, what in (("ours", "no opens held"), ("held", "opens held")):
    if ("profile-" + tag, "open-layout-close") in runs:
        p = runs[("profile-" + tag, "open-layout-close")][0]
        out.append("")
        out.append(f"Profiled run ({what}; perf record on the MDS): {p['cycles_per_s']:,.0f} cycles/s, "
                   f"{fmt(p['ops_per_server_cpu_s'])} per server CPU s (profile-olc-{tag}.txt).")
text = "\n".join(out) + "\n"
print(text)
if a.markdown:
    with open(a.markdown, "a") as f:
        f.write("\n" + text)
