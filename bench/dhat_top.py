#!/usr/bin/env python3
"""The heap at its peak, by allocation site, from a `valgrind --tool=dhat` profile.

    dhat_top.py DHAT_JSON STREAMS [N]

Prints JSON: the live bytes at the global peak (t-gmax), per stream, and the N largest
sites with their bytes per stream, block size, and the first frames outside the standard
library that say what allocated them.
"""
import json
import re
import sys

d = json.load(open(sys.argv[1]))
streams = int(sys.argv[2])
n = int(sys.argv[3]) if len(sys.argv) > 3 else 14
ftbl, pps = d["ftbl"], d["pps"]


def where(p):
    out = []
    for i in p["fs"]:
        f = ftbl[i]
        if "library/" in f or "vgpreload" in f or "[root]" in f:
            continue
        fn = f.split(": ", 1)[-1]
        loc = re.search(r"\(([^()]*:\d+)\)\s*$", fn)
        name = re.sub(r"<.*", "", fn.split(" (")[0])
        out.append(f"{name} ({loc.group(1)})" if loc else name)
        if len(out) == 3:
            break
    return out


def role(p):
    text = " ".join(ftbl[i] for i in p["fs"])
    kw = next((re.sub(r"<.*", "", ftbl[i].split(": ", 1)[-1]) for i in p["fs"]
               if "keyward" in ftbl[i] and "keyward::gateway::listener::serve" not in ftbl[i]
               and "run_listeners" not in ftbl[i] and "sysalloc" not in ftbl[i]), None)
    if "client::dispatch" in text or "dispatch::Client" in text or "hyper_util::client" in text:
        return "upstream connection (hyper client)"
    if "dispatch::Server" in text or "serve_connection" in text:
        return "caller connection (hyper server)"
    if kw:
        return f"keyward: {kw}"
    if "listener::serve" in text:
        return "caller connection task (tokio)"
    return "other"


total = sum(p.get("gb", 0) for p in pps)
top = sorted(pps, key=lambda p: -p.get("gb", 0))[:n]
json.dump({
    "streams": streams,
    "peak_live_bytes": total,
    "peak_live_bytes_per_stream": round(total / streams),
    "sites": [{"bytes_per_stream": round(p.get("gb", 0) / streams),
               "block_bytes": round(p.get("gb", 0) / max(p.get("gbk", 1), 1)),
               "owner": role(p), "frames": where(p)} for p in top],
}, sys.stdout, indent=1)
print()
