#!/usr/bin/env python3
"""Where a proxied request's instructions go: callgrind outputs of two runs (200 and 1,200
sequential requests) of Keyward and of the bare hyper proxy, split by component (a
Keyward source file, or a dependency crate; exclusive instructions, so inlined std code
counts as std), and Keyward's own functions by inclusive instructions (what each stage of
the request path costs with everything it calls), per request (the difference over 1,000
requests, so start-up and shutdown cancel).

Usage: callgrind_split.py KW_200 KW_1200 FLOOR_200 FLOOR_1200 > split.json
"""
import collections
import json
import re
import subprocess
import sys


def component(path):
    path = re.sub(r".*/index\.crates\.io-[^/]+/", "crate:", path)
    if path.startswith("crate:"):
        name = path[len("crate:"):].split("/")[0]
        return re.sub(r"-\d+(\.\d+)*([-+].*)?$", "", name)
    m = re.search(r"(?:^|/)(crates/[^/]+/src/.*|bench/src/.*)$", path)
    if m:
        return m.group(1)
    if "/library/" in path or path.startswith("/rustc/"):
        return "std (core, alloc, std)"
    return "other (libc, kernel entry, unknown)"


def exclusive(path):
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no", path],
                         capture_output=True, text=True, check=True).stdout
    d = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S+?):(.*)$", line)
        if m:
            d[component(m.group(2))] += int(m.group(1).replace(",", ""))
    return d


def per_request(a, b):
    x, y = exclusive(a), exclusive(b)
    return {k: round((y[k] - x.get(k, 0)) / 1000) for k in y if y[k] - x.get(k, 0) > 0}


def inclusive(path):
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", "--auto=no",
                          path], capture_output=True, text=True, check=True).stdout
    d = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(\S+?):(.*?)( \[.*\])?$", line)
        if m and re.match(r"<?keyward", m.group(3).strip()):
            name = m.group(3).strip()
            d[name] = max(d[name], int(m.group(1).replace(",", "")))
    return d


def stages(a, b, total):
    x, y = inclusive(a), inclusive(b)
    per = {k: round((y[k] - x.get(k, 0)) / 1000) for k in y}
    # The roots (the handler, the failover loop) hold nearly everything: leave them out.
    rows = [(k, v) for k, v in per.items() if 300 <= v <= 0.3 * total]
    return sorted(rows, key=lambda r: -r[1])[:14]


kw = per_request(sys.argv[1], sys.argv[2])
floor = per_request(sys.argv[3], sys.argv[4])
json.dump({"keyward": kw, "floor": floor,
           "keyward_functions": stages(sys.argv[1], sys.argv[2], sum(kw.values()))},
          sys.stdout, indent=1, sort_keys=True)
