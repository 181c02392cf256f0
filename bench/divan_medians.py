#!/usr/bin/env python3
"""Reads divan's table on stdin; prints {"bench": {"fastest": …, "median": …}, …} as JSON."""
import json
import re
import sys

out = {}
for line in sys.stdin:
    cols = [c.strip() for c in line.split("│")]
    if len(cols) < 4:
        continue
    m = re.match(r"^[\s├╰─]*([A-Za-z0-9_]+)\s+(\S+ \S+)$", cols[0])
    if m:
        out[m.group(1)] = {"fastest": m.group(2), "median": cols[2]}
json.dump(out, sys.stdout, ensure_ascii=False)
print()
