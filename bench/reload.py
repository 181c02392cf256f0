#!/usr/bin/env python3
"""Reload timings on a running gateway, as JSON on stdout.

    reload.py ADMIN_URL ADMIN_TOKEN CONFIG VARIANT_A VARIANT_B N PID WRK_OUT -- WRK_COMMAND…

1. Idle: N `POST /admin/reload` (read, validate, build, swap; the file is unchanged and a
   reload rebuilds all the same), timed round trip, and the gateway's CPU time (PID's
   utime + stime) across them: CPU per reload, which a loaded machine does not stretch the
   way it stretches wall-clock time.
2. WRK_COMMAND starts (its output to WRK_OUT); under its traffic, N more admin reloads, then
   N rewrites of CONFIG (atomic rename, alternating two variants), each timed from the
   rename until `GET /admin/config` shows the next generation (the file watcher's polling
   included: it checks once a second and waits for two agreeing reads). Then waits for wrk.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request

admin, token, config, va, vb = sys.argv[1:6]
n, pid, wrk_out = int(sys.argv[6]), sys.argv[7], sys.argv[8]
wrk = sys.argv[sys.argv.index("--") + 1:]
hz = os.sysconf("SC_CLK_TCK")


def cpu_s():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / hz


def call(method, path):
    req = urllib.request.Request(admin + path, method=method,
                                 headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def generation():
    return call("GET", "/admin/config")["generation"]


def put(src):
    tmp = config + ".tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, config)


def admin_reloads():
    ms = []
    for _ in range(n):
        g = generation()
        t = time.monotonic()
        out = call("POST", "/admin/reload")
        ms.append((time.monotonic() - t) * 1000)
        assert out["generation"] == g + 1, out
        time.sleep(0.2)
    return ms


c0 = cpu_s()
idle_ms = admin_reloads()
cpu_ms = (cpu_s() - c0) / n * 1000  # includes n GET /admin/config calls: microseconds each
with open(wrk_out, "w") as out:
    w = subprocess.Popen(wrk, stdout=out)
    time.sleep(2)
    busy_ms = admin_reloads()
    watch_ms = []
    variants = [vb, va]
    for i in range(n):
        g = generation()
        put(variants[i % 2])
        t = time.monotonic()
        while generation() == g:
            if time.monotonic() - t > 10:
                sys.exit("the file change was not applied within 10 s")
            time.sleep(0.005)
        watch_ms.append((time.monotonic() - t) * 1000)
        time.sleep(0.3)
    w.wait()
q = lambda xs: {"median": round(statistics.median(xs), 1), "min": round(min(xs), 1), "max": round(max(xs), 1)}  # noqa: E731
json.dump({"reloads": n, "admin_reload_ms": q(idle_ms), "reload_cpu_ms": round(cpu_ms, 1),
           "admin_reload_under_traffic_ms": q(busy_ms), "file_change_to_applied_ms": q(watch_ms)},
          sys.stdout)
print()
