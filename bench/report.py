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


def load(name):
    path = os.path.join(out, name)
    return json.load(open(path)) if os.path.exists(path) else None


parts = load("parts.json") or {}
peers_meta = load("peers.json")
sstreams = load("scale_streams.json")
sconfig = load("scale_config.json")
ssoak = load("scale_soak.json")
bench_sel = load("divan_health.json")
peers = defaultdict(list)
if os.path.exists(os.path.join(out, "peers.csv")):
    for r in csv.DictReader(open(os.path.join(out, "peers.csv"))):
        peers[(int(r["concurrency"]), r["target"])].append(r)
rounds = max(int(r["round"]) for rs in plain.values() for r in rs)

p = print
p("# Benchmarks: Keyward beside nginx, its peers, and at scale\n")
p("Produced by `bench/run.sh` (this file is its output; do not edit by hand).\n")
if parts:
    p("Which run each part's figures come from (`PARTS=… bench/run.sh` reruns some parts and "
      "keeps the others' last results; the load average is the machine's 1-minute figure "
      "when the part started — this machine's two cores are shared with other work, so "
      "times and rates carry that noise; instruction counts, memory and counts do not):\n")
    p("| part | run (UTC) | rounds × seconds | load before | note |")
    p("|---|---|---|---|---|")
    for k in sorted(parts):
        v = parts[k]
        rs = f"{v['rounds']} × {v['seconds_each']} s" if v["seconds_each"] else "–"
        p(f"| {k} | {v['date']} | {rs} | {v['load_before']} | {v.get('note', '')} |")
    missing = [k for k in ["plain", "streams", "memory", "callgrind", "peers"] if k not in parts]
    if missing:
        p(f"| {', '.join(missing)} | the last full run, 2026-11-29 (5 rounds × 5 s), kept from bench/results/ | | | |")
    p()
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
split = load("callgrind_split.json")
if cg.get("floor_ir_per_request"):
    fl = cg["floor_ir_per_request"]
    p(f"The bare hyper proxy measured the same way: **{fl:,} instructions per request**; Keyward "
      f"runs {cg['ir_per_request'] / fl:.2f}× as many. System calls per request are the same for "
      "both (one `writev` and one `recvfrom` on each side; Keyward adds about half an "
      "`epoll_wait`: measured once with `strace -c -f` over 2,000 requests on 2026-12-03, not by "
      "this script), so the CPU gap above is these instructions.\n")
if split:
    k, f = split["keyward"], split["floor"]
    p("Where they go, by component (exclusive instructions per request; std code inlined into a "
      "caller counts as std), largest differences first:\n")
    p("| component | bare hyper proxy | Keyward | difference |")
    p("|---|---|---|---|")
    for r in sorted(set(k) | set(f), key=lambda x: -(k.get(x, 0) - f.get(x, 0)))[:12]:
        p(f"| {r} | {f.get(r, 0):,} | {k.get(r, 0):,} | {k.get(r, 0) - f.get(r, 0):+,} |")
    p()
    p("Keyward's own stages, inclusive (each with everything it calls; nested stages overlap, the "
      "handler and the failover loop that hold everything are left out):\n")
    p("| function | instructions per request |")
    p("|---|---|")
    for name, n in split["keyward_functions"]:
        p(f"| `{name}` | {n:,} |")
    p()

PEER_NAMES = {"litellm": "LiteLLM proxy", "portkey": "Portkey gateway"}
if peers:
    pm = {}
    for key, rs in peers.items():
        cpu = [float(r["cpu_ms_per_1k"]) for r in rs if r["cpu_ms_per_1k"]]
        pm[key] = dict(rps=statistics.median(float(r["rps"]) for r in rs),
                       p50=statistics.median(float(r["p50_us"]) for r in rs),
                       p99=statistics.median(float(r["p99_us"]) for r in rs),
                       cpu=statistics.median(cpu) if cpu else None,
                       errors=sum(int(r["errors"] or 0) for r in rs),
                       rps_all=[float(r["rps"]) for r in rs])
    prounds = max(int(r["round"]) for rs in peers.values() for r in rs)
    p("## Peers in the same run\n")
    pv = peers_meta or {}
    p(f"LiteLLM's proxy ({pv.get('litellm_version') or 'not measured'}, PyPI `litellm[proxy]`, "
      "one uvicorn worker, its own venv) and Portkey's gateway "
      f"({pv.get('portkey_version') or 'not measured'}, npm `@portkey-ai/gateway`, Node "
      f"{pv.get('node', '')}), pinned to the proxy core like nginx and Keyward, forwarding the "
      "same Anthropic `/v1/messages` request to the same fixed upstream: LiteLLM through a "
      "`model_list` entry `anthropic/claude-bench` with `api_base` the upstream and its master "
      "key as the caller's key; Portkey with `x-portkey-provider: anthropic` and "
      "`x-portkey-custom-host` the upstream. wrk as above, "
      f"{prounds} round(s), the five targets alternating. Non-streaming only. Added latency is "
      "over `direct` in the same rounds.\n")
    p("| concurrency | target | req/s (spread) | p50 µs | p99 µs | added p50 µs | CPU µs/request | req/s ÷ nginx | req/s ÷ Keyward | added p50 ÷ Keyward's | errors |")
    p("|---|---|---|---|---|---|---|---|---|---|---|")
    for c in sorted({k[0] for k in pm}):
        d, n, k = pm.get((c, "direct")), pm.get((c, "nginx")), pm.get((c, "keyward"))
        for t in ["direct", "nginx", "keyward", "litellm", "portkey"]:
            m = pm.get((c, t))
            if not m:
                continue
            added = m["p50"] - d["p50"] if d and t != "direct" else None
            kadd = k["p50"] - d["p50"] if d and k else None
            cpu_s = f"{m['cpu']:.1f}" if m["cpu"] is not None else "–"
            rn = f"{m['rps'] / n['rps']:.3f}" if n and t != "direct" else "–"
            rk = f"{m['rps'] / k['rps']:.3f}" if k and t not in ("direct",) else "–"
            ra = f"{added / kadd:.1f}" if added is not None and kadd and kadd > 0 else "–"
            p(f"| {c} | {PEER_NAMES.get(t, t)} | {m['rps']:,.0f} ({spread([round(x) for x in m['rps_all']])}) | {m['p50']:g} | {m['p99']:g} | "
              f"{f'{added:g}' if added is not None else '–'} | {cpu_s} | {rn} | {rk} | {ra} | {m['errors']} |")
    p()
    if pv:
        p(f"Memory (RSS): LiteLLM {pv['litellm_idle_rss_kb'] / 1024:.0f} MB after warm-up, peak "
          f"{pv['litellm_peak_rss_kb'] / 1024:.0f} MB; Portkey {pv['portkey_idle_rss_kb'] / 1024:.0f} MB, "
          f"peak {pv['portkey_peak_rss_kb'] / 1024:.0f} MB; Keyward's peak over the same run "
          f"{pv['keyward_peak_rss_kb'] / 1024:.0f} MB. Measured here: {pv['measured'] or 'none'} "
          "(a peer that cannot be installed or started is left out, and the script says why).\n")
p("### Peers not measured here\n")
p("Bifrost (Go; its documented installs are `npx -y @maximhq/bifrost`, a launcher for a "
  "prebuilt binary, and a Docker image — not attempted here, where only the package "
  "registries are reachable) and others that cannot be installed from those registries are cited from their own published figures, **not measured here**, on other "
  "hardware and with other methods, so not comparable with the table above:\n")
p("| gateway | published figure | method | source (retrieved 2026-12-03; pages undated) |")
p("|---|---|---|---|")
p("| Bifrost | 59 µs overhead per request on AWS t3.medium (2 vCPU), 11 µs on t3.xlarge (4 vCPU); peak memory 1,312.79 MB and 3,340.44 MB | 5,000 req/s sustained against a mocked provider (about 1.5 s per answer); the overhead excludes JSON marshalling (63.47 µs / 26.80 µs) and the HTTP call, measured inside Bifrost | docs.getbifrost.ai/benchmarking (the vendor's own documentation) |")
p("| Bifrost vs LiteLLM | Bifrost 424 req/s, p99 1.68 s, 120 MB; LiteLLM 44.84 req/s, p99 90.72 s, 372 MB; mean overhead 11 µs vs about 500 µs | one t3.medium, mock LLM with 1.5 s latency, 500 req/s offered | the Bifrost team's blog post \"Building a High-Performance Open-Source LLM Gateway: Bifrost (54x Faster than LiteLLM)\" on dev.to |")
p()

if sstreams:
    s = sstreams
    p("## Streams at scale\n")
    lim = ""
    if s["streams"] < s["requested"]:
        lim = (f" ({s['requested']:,} asked for: the hard limit on open files here is "
               f"{s['fd_hard_limit']:,} and cannot be raised without CAP_SYS_RESOURCE, and each "
               "proxied HTTP/1.1 stream holds two descriptors in the proxy, so the script opens "
               "as many as fit; with `LimitNOFILE=65536` or `--ulimit nofile=65536` it opens "
               "10,000)")
    p(f"{s['streams']:,} concurrent streams{lim} through one Keyward process (one tokio worker, "
      "pinned), each from its own HTTP/1.1 connection opened at 2,000 a second by "
      "`hold-streams`, to `slow-sse`, an upstream that sends the first content event at once "
      f"and then one a second, {s['events_per_stream']} in all (bench/src/bin/). "
      f"`ulimit -n` is raised to the hard limit by the script.\n")
    p("| | Keyward | bare hyper proxy (floor) |")
    p("|---|---|---|")
    f = s.get("floor") or {}
    p(f"| streams opened / completed with every event / errors | {s['with_first_event']:,} / {s['completed']:,} / {s['errors']} | {f.get('with_first_event', 0):,} / {f.get('completed', 0):,} / {f.get('errors', 0)} |")
    p(f"| content events per stream (min–max) | {s['events_min']}–{s['events_max']} | {f.get('events_min', 0)}–{f.get('events_max', 0)} |")
    p(f"| longest gap between two events of one stream: p50 / p99 / max ms | {s['max_gap_ms_p50']:g} / {s['max_gap_ms_p99']:g} / {s['max_gap_ms_max']:g} | {f.get('max_gap_ms_p50', 0):g} / {f.get('max_gap_ms_p99', 0):g} / {f.get('max_gap_ms_max', 0):g} |")
    p(f"| time to first content event: p50 / p99 / max ms | {s['ttfb_ms_p50']:g} / {s['ttfb_ms_p99']:g} / {s['ttfb_ms_max']:g} | {f.get('ttfb_ms_p50', 0):g} / {f.get('ttfb_ms_p99', 0):g} / {f.get('ttfb_ms_max', 0):g} |")
    p(f"| RSS before / with all open | {s['idle_rss_kb'] / 1024:.1f} / {s['open_rss_kb'] / 1024:.1f} MB | {s.get('floor_idle_rss_kb', 0) / 1024:.1f} / {s.get('floor_open_rss_kb', 0) / 1024:.1f} MB |")
    p(f"| **memory per open stream** | **{s['kb_per_stream']:.1f} KB** | {s.get('floor_kb_per_stream') or 0:.1f} KB |")
    p(f"| open file descriptors with all open | {s['open_fds']:,} | |")
    p(f"| RSS 2 s after every stream ended | {s['after_rss_kb'] / 1024:.1f} MB | |")
    p()
    p(f"Listen-queue overflows on the machine during Keyward's run: {s.get('listen_overflows', 'not counted')} "
      "(`TcpExtListenOverflows`; an overflowed SYN is retried by the caller's kernel after 1 s, "
      "then 3 s, which is what a time to first byte near 1 s or 3 s means).\n")

dh = load("dhat_streams.json")
if dh:
    owners = defaultdict(int)
    for site in dh["sites"]:
        owners[site["owner"]] += site["bytes_per_stream"]
    p("### Where a stream's memory goes (heap profile)\n")
    p(f"`valgrind --tool=dhat` on `gateway-sysalloc` (the same gateway on the system allocator, "
      f"which dhat can see; bench/src/bin/gateway-sysalloc.rs) with {dh['streams']:,} streams "
      f"open through it: {dh['peak_live_bytes_per_stream']:,} bytes of live heap per stream at "
      "the peak, of which the largest sites are (`bench/results/dhat_streams.json` has their "
      "frames):\n")
    p("| owner | bytes per stream (largest sites) |")
    p("|---|---|")
    for o, b in sorted(owners.items(), key=lambda kv: -kv[1]):
        p(f"| {o} | {b:,} |")
    p()
    p("| bytes per stream | block | owner | allocated at |")
    p("|---|---|---|---|")
    for site in dh["sites"][:12]:
        p(f"| {site['bytes_per_stream']:,} | {site['block_bytes']:,} | {site['owner']} | {' ← '.join(f'`{f}`' for f in site['frames'][:2])} |")
    p()
    hy = owners.get("upstream connection (hyper client)", 0) + owners.get("caller connection (hyper server)", 0)
    kw = sum(b for o, b in owners.items() if o.startswith("keyward"))
    p(f"**What stands in the way of 20 KB a stream**: hyper's two HTTP/1.1 connections per stream "
      f"hold {hy:,} of those bytes: on the upstream side tokio's first 9 KB channel block for "
      "the connection's dispatch, an 8 KB read buffer, an 8 KB write buffer and the connection "
      "task; on the caller side an 8 KB read and an 8 KB write buffer (it held 16 KB of read "
      "buffer until the listener stopped using hyper-util's `auto` builder, whose peek at the "
      "first bytes made hyper's first read outgrow its buffer, and a committed stream stopped "
      "pinning the request's first read buffer). hyper fixes these sizes: the read and write "
      "buffers start at 8 KB, and `max_buf_size` cannot go below 8,192. Keyward's own "
      f"per-stream state in the largest sites is {kw:,} bytes (the answer's `HeaderMap`, the "
      "boxed body and continuation, the SSE framer's buffer). So the bare hyper proxy above, "
      "which holds nothing of its own, already needs more than 20 KB of RSS a stream on "
      "HTTP/1.1 at both ends. Sharing connections would bring it down, but not upstream: "
      "hyper-util's pool puts every stream to a provider on one HTTP/2 connection and queues "
      "those past the provider's concurrent-stream limit (hyperium/hyper#2197, #3623), so "
      "Keyward speaks HTTP/1.1 to providers on purpose. Callers that speak HTTP/2 (served with "
      "prior knowledge) share their side.\n")
    p("Heap capacity is not residency: an 8 KB write buffer of which a stream touches a few "
      "hundred bytes costs RSS only for the pages written, which is why RSS per stream "
      "(above) is lower than the live heap here.\n")

if sconfig:
    c = sconfig
    p("## 200 routes × 2,000 credentials\n")
    p("`bench/scale_config.py`: 20 endpoints (all the fixed upstream), 100 credentials each, "
      "200 routes of two targets × 10 credentials (20 candidates a route); one tokio worker, "
      "pinned.\n")
    st = c["startup_ms"]
    p("| | measured | goal |")
    p("|---|---|---|")
    p(f"| startup to the first served request (exec → first 200, {len(st)} starts; the first creates the state file) | median {statistics.median(st):.0f} ms ({min(st):.0f}–{max(st):.0f}) | ≤ 1 s |")
    a = c["admin_reload_ms"]
    w = c["file_change_to_applied_ms"]
    p(f"| reload, idle gateway (`POST /admin/reload`: read, validate, build, swap; {c['reloads']} times), wall clock | median {a['median']:g} ms ({a['min']:g}–{a['max']:g}) | ≤ 100 ms |")
    if "reload_cpu_ms" in c:
        p(f"| the same reloads' CPU time (`/proc` utime + stime, per reload) | {c['reload_cpu_ms']:g} ms | |")
    if "admin_reload_under_traffic_ms" in c:
        b = c["admin_reload_under_traffic_ms"]
        p(f"| reload under the traffic below (the reload thread shares the gateway's one pinned core with it), wall clock | median {b['median']:g} ms ({b['min']:g}–{b['max']:g}) | |")
    p(f"| file rewritten → new generation applied (watcher included; {c['reloads']} times) | median {w['median']:g} ms ({w['min']:g}–{w['max']:g}) | |")
    p(f"| requests during the {2 * c['reloads']} reloads under traffic (wrk, 16 connections, 3 routes) | {c['traffic_requests']:,} at {c['rps_during_reloads']:,.0f} req/s; {c['traffic_non_2xx']} non-2xx, {c['traffic_socket_errors']} socket errors | none dropped |")
    p(f"| RSS idle / after the reloads | {c['idle_rss_kb'] / 1024:.1f} / {c['rss_after_reloads_kb'] / 1024:.1f} MB | |")
    p()
    p("The file watcher checks the file once a second and applies a change only when two reads "
      "250 ms apart agree (see docs/admin.md), so a rewrite is live 0.25–1.25 s after it lands "
      "plus the reload itself; `POST /admin/reload` and `SIGHUP` skip the wait. Candidate "
      "selection at this scale is the `*_200x2000` divan benchmarks in "
      "`crates/keyward-core/benches/health.rs` (`cargo bench -p keyward-core --bench health`), "
      "reported under Goals.\n")
    if bench_sel:
        p("| divan benchmark (crates/keyward-core/benches/health.rs) | fastest | median |")
        p("|---|---|---|")
        for name, v in bench_sel.items():
            p(f"| `{name}` | {v['fastest']} | {v['median']} |")
        p()
        p("Divan's figures are wall-clock times on the shared machine: the whole table moves "
          "together with its load (compare `select_admit_success`, whose goal on a quiet "
          "machine is the same 2 µs).\n")

if ssoak:
    k = ssoak
    p("## Soak\n")
    p(f"`SOAK_MINUTES={k['minutes']}`: mixed traffic for {k['minutes']} minutes through one Keyward "
      "(one tokio worker) to `keyward-sim` over six credentials: 8 wrk connections pacing 20 ms "
      "between requests; of every 10 requests 5 non-streaming, 3 streaming, 1 with a wrong "
      "gateway key (401), 1 for an unknown route (404); every minute one of three credentials "
      "turns to answering 500, 429 with `Retry-After: 20`, or cutting streams after one event, "
      "then back. RSS sampled every 10 s (`bench/results/soak.csv`).\n")
    p(f"- {k['requests']:,} requests; {k['non_2xx']:,} non-2xx (the 401s and 404s asked for, and any "
      f"failure the gateway could not route around), {k['socket_errors']} socket errors")
    if k.get("statuses"):
        st = k["statuses"]
        asked = st.get("401", 0) + st.get("404", 0)
        other = {c: v for c, v in st.items() if c not in ("200", "401", "404")}
        p(f"- by status: {', '.join(f'{c}: {v:,}' for c, v in st.items())} — the 401s and 404s are the "
          f"requests built to fail ({asked:,}); "
          + (f"the others ({', '.join(f'{c}: {v:,}' for c, v in other.items())}) are failures the "
             "gateway passed on to the caller" if other else "no other failure reached a caller"))
        if "503" in st:
            p(f"- the 503s ({st['503']:,}) are Keyward's own answer when no credential of the route "
              "was usable for the request (`no upstream credential can serve model …`, with a "
              "`Retry-After`); with six keys of which at most one fails at a time, each is a "
              "request that found every key cooling or busy")
    p(f"- RSS {k['rss_start_kb'] / 1024:.1f} MB at the first sample, {k['rss_end_kb'] / 1024:.1f} MB at "
      f"the last, {k['rss_max_kb'] / 1024:.1f} MB at most")
    p(f"- **slope after warm-up** (from {k['warm_from_s']} s, least squares): "
      f"**{k['slope_kb_per_min']:g} KB per minute** ({k['slope_kb_per_hour']:,.0f} KB per hour)\n")

# What the figures mean for someone running it.
p("## What the numbers mean for an operator\n")
k64 = med.get((64, "keyward")) or med.get((16, "keyward"))
if k64 and k64["cpu"]:
    cores = k64["cpu"] * 1000 / 1e6
    p(f"- **CPU**: Keyward spends about {k64['cpu']:.0f} µs of CPU per proxied non-streaming "
      f"request under load, so **1,000 req/s costs about {cores:.3f} of one core** (this "
      "machine's cores; a current server core is faster). Real LLM traffic is a few to a few "
      "hundred requests a second per team: the gateway's CPU is not where the cost is.")
if sstreams and sstreams.get("kb_per_stream"):
    kb = sstreams["kb_per_stream"]
    p(f"- **Memory**: about **{kb * 1000 / 1024:.0f} MB per 1,000 open streams** on top of an idle "
      f"process of {mem['keyward_idle_rss_kb'] / 1024:.0f} MB: 10,000 concurrent streams fit in "
      f"about {(mem['keyward_idle_rss_kb'] + kb * 10000) / 1024:.0f} MB. Each open stream also "
      "holds two file descriptors; raise `LimitNOFILE` (or the container's `nofile`) above "
      "twice the streams you expect.")
if sconfig:
    p(f"- **Config size**: 200 routes over 2,000 credentials start in well under a second and "
      f"reload in about {sconfig['admin_reload_ms']['median']:.0f} ms without failing a request.")
if ssoak:
    p(f"- **Long runs**: memory grew {ssoak['slope_kb_per_min']:g} KB a minute after warm-up over "
      f"{ssoak['minutes']} minutes of mixed traffic with failures.")
p()

p("## Goals\n")
p("Issue 21's goals, each beside what stands against it. CPU is set against the floor of the "
  "stack (the bare hyper proxy measured in the same rounds), not against nginx.\n")
p("| goal | measured | met |")
p("|---|---|---|")
k64, f64 = med.get((64, "keyward")), med.get((64, "hyper-floor"))
if k64 and f64 and k64["cpu"] and f64["cpu"]:
    rc = k64["cpu"] / f64["cpu"]
    p(f"| CPU per request at concurrency 64 ≤ 1.15× the bare hyper proxy's (same rounds) | {k64['cpu']:.1f} µs against {f64['cpu']:.1f} µs: {rc:.2f}× (nginx {med[(64, 'nginx')]['cpu']:.1f} µs) | {'yes' if rc <= 1.15 else 'no'} |")
if 1 in goals:
    r50, r99, _ = goals[1]
    p(f"| added p99 at concurrency 1 ≤ nginx's | {r99:.2f}× (added p50 {r50:.2f}×) | {'yes' if r99 <= 1.0 else 'no'} |")
idle = mem["keyward_idle_rss_kb"] / 1024
held = mem["keyward_1000_streams_rss_kb"] / 1024
p(f"| idle RSS ≤ 20 MB | {idle:.1f} MB | {'yes' if idle <= 20 else 'no'} |")
if sstreams:
    kb = sstreams["kb_per_stream"] or 0
    fl = sstreams.get("floor_kb_per_stream")
    fl_s = f" (the bare hyper proxy, same streams: {fl:.1f} KB)" if fl else ""
    p(f"| memory per open stream ≤ 20 KB ({sstreams['streams']:,} streams, HTTP/1.1 both ends) | {kb:.1f} KB{fl_s} | {'yes' if kb <= 20 else 'no'} |")
    starved = sstreams["streams"] - sstreams["completed"]
    p(f"| no stream starved (every stream gets all its events, none waits > 2 s between two) | {starved} incomplete; longest gap {sstreams['max_gap_ms_max']:g} ms | {'yes' if starved == 0 and sstreams['max_gap_ms_max'] <= 2000 else 'no'} |")
    p(f"| time to first byte p99 with {sstreams['streams']:,} streams opening (reported) | {sstreams['ttfb_ms_p99']:g} ms | – |")
if ssoak:
    grow = ssoak["slope_kb_per_min"] * max(ssoak["minutes"] - ssoak["warm_from_s"] / 60, 0)
    p(f"| memory flat over the soak ({ssoak['minutes']} min; growth after warm-up < 1 MB) | slope {ssoak['slope_kb_per_min']:g} KB/min, {grow:,.0f} KB over the run | {'yes' if grow < 1024 else 'no'} |")
def micros(v):
    n, unit = v.split()
    return float(n) * {"ns": 1e-3, "µs": 1.0, "ms": 1e3}.get(unit, 1e6)


if bench_sel:
    ref = bench_sel.get("select_admit_success")
    for name, v in bench_sel.items():
        if "200x2000" in name and "select" in name:
            note = f" (fastest {v['fastest']}; the 50 × 1,000 `select_admit_success` in the same run: {ref['median']})" if ref else ""
            p(f"| selection ≤ 2 µs, 200 routes × 2,000 credentials (`{name}`, median) | {v['median']}{note} | {'yes' if micros(v['median']) <= 2 else 'no'} |")
if sconfig:
    a = sconfig["admin_reload_ms"]["median"]
    st = statistics.median(sconfig["startup_ms"])
    cpu_note = f"; {sconfig['reload_cpu_ms']:g} ms of CPU" if "reload_cpu_ms" in sconfig else ""
    p(f"| reload ≤ 100 ms (200 × 2,000; idle gateway, median wall clock) | {a:g} ms{cpu_note} | {'yes' if a <= 100 else 'no'} |")
    p(f"| no request dropped during reloads | {sconfig['traffic_non_2xx'] + sconfig['traffic_socket_errors']} | {'yes' if sconfig['traffic_non_2xx'] + sconfig['traffic_socket_errors'] == 0 else 'no'} |")
    p(f"| startup to first served request ≤ 1 s (200 × 2,000) | {st:.0f} ms | {'yes' if st <= 1000 else 'no'} |")
