#!/usr/bin/env python3
"""Turns bench/results/ into docs/benchmarks.md (printed on stdout)."""
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
from collections import defaultdict

out = sys.argv[1]


def cmd(*a):
    try:
        r = subprocess.run(a, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except Exception as e:  # noqa: BLE001 - a missing tool is reported, not fatal
        return f"({a[0]}: {e})"


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def spread(xs):
    return f"{min(xs):g}–{max(xs):g}"


plain = defaultdict(list)
for r in csv.DictReader(open(os.path.join(out, "plain.csv"))):
    plain[(int(r["concurrency"]), r["target"])].append(r)
streams = defaultdict(list)
for r in csv.DictReader(open(os.path.join(out, "streams.csv"))):
    streams[(int(r["concurrency"]), r["target"])].append(r)
mem = json.load(open(os.path.join(out, "memory.json")))
cg = json.load(open(os.path.join(out, "callgrind.json")))
rounds = max(int(r["round"]) for rs in plain.values() for r in rs)

p = print
p("# Benchmarks: Keyward beside nginx\n")
p("Produced by `bench/run.sh` (this file is its output; do not edit by hand).\n")
p(f"- machine: {os.cpu_count()} vCPU {cpu_model()}, {platform.system()} {platform.release()}")
p(f"- {cmd('rustc', '-V')}; {cmd('nginx', '-v')}; {cmd('wrk', '-v')}; h2load from {cmd('dpkg-query', '-W', 'nghttp2-client')}")
p("- upstream: nginx returning a fixed Anthropic Messages body (or a fixed 7-event SSE stream), "
  "pinned with the load tool to core 1; the proxy under test (nginx `proxy_pass` with upstream "
  "keepalive, one worker; or Keyward, one tokio worker) pinned to core 0")
p("- Keyward: one route over 100 credentials of which 10 are disabled (through `keyward disable`), "
  "logs at `warn`; nginx: `access_log off`")
p(f"- load: wrk, one thread, 5 s per measurement; {rounds} rounds, the targets alternating "
  "within each round; medians over rounds, spread = min–max over rounds\n")

p("## Plain requests (non-streaming)\n")
p("| concurrency | target | req/s (median, spread) | p50 µs | p99 µs | CPU µs/request |")
p("|---|---|---|---|---|---|")
med = {}
for c in sorted({k[0] for k in plain}):
    for t in ["direct", "nginx", "keyward", "keyward-fleet", "hyper-floor", "reqwest-floor"]:
        rs = plain.get((c, t), [])
        if not rs:
            continue
        rps = [float(r["rps"]) for r in rs]
        p50 = [float(r["p50_us"]) for r in rs]
        p99 = [float(r["p99_us"]) for r in rs]
        cpu = [float(r["cpu_ms_per_1k"]) for r in rs if r["cpu_ms_per_1k"]]
        med[(c, t)] = dict(rps=statistics.median(rps), p50=statistics.median(p50),
                           p99=statistics.median(p99),
                           cpu=statistics.median(cpu) if cpu else None)
        m = med[(c, t)]
        cpu_s = f"{m['cpu']:.1f}" if m["cpu"] is not None else "–"
        p(f"| {c} | {t} | {m['rps']:,.0f} ({spread([round(x) for x in rps])}) | {m['p50']:g} ({spread(p50)}) | {m['p99']:g} ({spread(p99)}) | {cpu_s} |")
p()
p("Added latency over direct (median of the round medians) and the ratios the goals are set in:\n")
p("| concurrency | added p50 µs: nginx / keyward | added p99 µs: nginx / keyward | keyward ÷ nginx, added p50 | added p99 | req/s keyward ÷ nginx |")
p("|---|---|---|---|---|---|")
goals = {}
for c in sorted({k[0] for k in med}):
    d, n, k = med.get((c, "direct")), med.get((c, "nginx")), med.get((c, "keyward"))
    if not (d and n and k):
        continue
    a50n, a50k = n["p50"] - d["p50"], k["p50"] - d["p50"]
    a99n, a99k = n["p99"] - d["p99"], k["p99"] - d["p99"]
    r50 = a50k / a50n if a50n > 0 else float("inf")
    r99 = a99k / a99n if a99n > 0 else float("inf")
    rr = k["rps"] / n["rps"]
    goals[c] = (r50, r99, rr)
    p(f"| {c} | {a50n:g} / {a50k:g} | {a99n:g} / {a99k:g} | {r50:.2f} | {r99:.2f} | {rr:.2f} |")
p()

if any(t == "hyper-floor" for (_, t) in med):
    p("## What the HTTP stack alone costs\n")
    p("`bare-proxy` (bench/src/bin/bare-proxy.rs) forwards each request to the same upstream and "
      "streams the answer back, and does nothing else: on hyper's server with hyper-util's "
      "pooled client (`hyper-floor`, the client Keyward's provider calls use), or with reqwest "
      "(`reqwest-floor`, what they used before); one tokio worker and mimalloc, pinned like "
      "Keyward. It is the floor for any proxy on this stack:\n")
    p("| concurrency | req/s ÷ nginx: hyper-floor / reqwest-floor / keyward | CPU µs/request: nginx / hyper-floor / reqwest-floor / keyward |")
    p("|---|---|---|")
    for c in sorted({k[0] for k in med}):
        n, h, r, k = (med.get((c, t)) for t in ["nginx", "hyper-floor", "reqwest-floor", "keyward"])
        if not (n and h and r and k):
            continue
        cpu = lambda m: f"{m['cpu']:.1f}" if m and m["cpu"] is not None else "–"  # noqa: E731
        p(f"| {c} | {h['rps'] / n['rps']:.2f} / {r['rps'] / n['rps']:.2f} / {k['rps'] / n['rps']:.2f} | {cpu(n)} / {cpu(h)} / {cpu(r)} / {cpu(k)} |")
    p()

fleet_path = os.path.join(sys.argv[1], "fleet.json")
if os.path.exists(fleet_path) and any(t == "keyward-fleet" for (_, t) in med):
    fleet = json.load(open(fleet_path))
    p("## Fleet mode beside single node\n")
    p("The same Keyward with `state = \"redis://…\"` (a local `redis-server`, no persistence, "
      "on the load core), measured in the same rounds. The request path reads the replica's "
      "memory, never Redis:\n")
    p("| concurrency | added p50 µs: single / fleet | added p99 µs: single / fleet | req/s single / fleet |")
    p("|---|---|---|---|")
    for c in sorted({k[0] for k in med}):
        d, k, f = med.get((c, "direct")), med.get((c, "keyward")), med.get((c, "keyward-fleet"))
        if not (d and k and f):
            continue
        p(f"| {c} | {k['p50'] - d['p50']:g} / {f['p50'] - d['p50']:g} | {k['p99'] - d['p99']:g} / {f['p99'] - d['p99']:g} | {k['rps']:,.0f} / {f['rps']:,.0f} |")
    p()
    calls = ", ".join(f"{k} {v}" for k, v in fleet["redis_calls_delta"].items()) or "none"
    p(f"Redis commands over the fleet rounds' {fleet['requests']:,} requests (`INFO commandstats`, "
      f"after − before): {calls} — the replica's log follower blocks on `XREAD` for 2 s at a time; "
      "no command per request. Fleet replica idle RSS: "
      f"{fleet['fleet_idle_rss_kb'] / 1024:.1f} MB.\n")

p("## Streams: time to first byte (h2load, HTTP/1.1)\n")
p("| concurrency | target | mean TTFB µs (median, spread) | streams/s |")
p("|---|---|---|---|")
for c in sorted({k[0] for k in streams}):
    for t in ["direct", "nginx", "keyward"]:
        rs = streams.get((c, t), [])
        if not rs:
            continue
        tt = [float(r["ttfb_mean_us"]) for r in rs]
        rps = [float(r["rps"]) for r in rs]
        p(f"| {c} | {t} | {statistics.median(tt):g} ({spread(tt)}) | {statistics.median(rps):,.0f} |")
p()

kb = lambda v: f"{v / 1024:.1f} MB"  # noqa: E731
p("## Memory\n")
p("| | Keyward | nginx worker |")
p("|---|---|---|")
p(f"| idle, after warm-up | {kb(mem['keyward_idle_rss_kb'])} | {kb(mem['nginx_worker_idle_rss_kb'])} |")
p(f"| 1,000 open streams | {kb(mem['keyward_1000_streams_rss_kb'])} | {kb(mem['nginx_worker_1000_streams_rss_kb'])} |")
p(f"| Keyward's peak over the whole run (VmHWM) | {kb(mem['keyward_peak_rss_kb'])} | |")
p()
p("## Instructions per request (callgrind)\n")
p(f"`valgrind --tool=callgrind` on `keyward serve` (one tokio worker), 200 then 1,200 sequential "
  f"requests over one keep-alive connection: {cg['ir_200']:,} and {cg['ir_1200']:,} instructions; "
  f"**{cg['ir_per_request']:,} instructions per request** (the difference over 1,000 requests, so "
  "start-up and shutdown cancel). Unlike times, this does not move with machine noise.\n")

p("## Goals\n")
p("| goal | measured | met |")
p("|---|---|---|")
if 1 in goals:
    r50, r99, _ = goals[1]
    p(f"| added p50 at concurrency 1 ≤ 1.3× nginx's | {r50:.2f}× | {'yes' if r50 <= 1.3 else 'no'} |")
    p(f"| added p99 at concurrency 1 ≤ 1.3× nginx's | {r99:.2f}× | {'yes' if r99 <= 1.3 else 'no'} |")
if 64 in goals:
    rr = goals[64][2]
    p(f"| req/s at concurrency 64 ≥ 0.8× nginx's | {rr:.2f}× | {'yes' if rr >= 0.8 else 'no'} |")
idle = mem["keyward_idle_rss_kb"] / 1024
held = mem["keyward_1000_streams_rss_kb"] / 1024
p(f"| idle RSS ≤ 20 MB | {idle:.1f} MB | {'yes' if idle <= 20 else 'no'} |")
p(f"| 1,000 open streams ≤ 64 MB | {held:.1f} MB | {'yes' if held <= 64 else 'no'} |")
floor = med.get((64, "hyper-floor"))
nginx64 = med.get((64, "nginx"))
if floor and nginx64 and 64 in goals:
    fr = floor["rps"] / nginx64["rps"]
    p()
    p(f"The throughput goal against the floor: a proxy on the same stack that does nothing but "
      f"forward reaches {fr:.2f}× nginx's requests per second at concurrency 64 on this machine "
      f"({floor['cpu']:.1f} µs of CPU per request against nginx's {nginx64['cpu']:.1f}); "
      f"Keyward reaches {goals[64][2] / fr:.2f}× of that floor. "
      + ("The 0.8× goal is above the floor itself: no proxy on hyper and tokio meets it here."
         if fr < 0.8 else "The floor clears the 0.8× goal."))
