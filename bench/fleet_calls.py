"""Redis command calls during the fleet-mode rounds, as JSON on stdout.

    fleet_calls.py BEFORE AFTER PLAIN_CSV SECONDS_EACH FLEET_IDLE_RSS_KB

BEFORE and AFTER are `redis-cli INFO commandstats` outputs; PLAIN_CSV gives the fleet
target's request rate per round (requests = rps × seconds).
"""

import csv
import json
import sys


def calls(path):
    out = {}
    for line in open(path):
        line = line.strip()
        if not line.startswith("cmdstat_"):
            continue
        name, _, stats = line.partition(":")
        fields = dict(kv.split("=", 1) for kv in stats.split(","))
        out[name.removeprefix("cmdstat_")] = int(fields["calls"])
    return out


before, after = calls(sys.argv[1]), calls(sys.argv[2])
seconds = float(sys.argv[4])
requests = sum(
    float(r["rps"]) * seconds
    for r in csv.DictReader(open(sys.argv[3]))
    if r["target"] == "keyward-fleet"
)
delta = {
    k: after.get(k, 0) - before.get(k, 0)
    for k in sorted(set(before) | set(after))
    if after.get(k, 0) != before.get(k, 0)
}
json.dump(
    {
        "requests": int(requests),
        "redis_calls_delta": delta,
        "fleet_idle_rss_kb": int(sys.argv[5]),
    },
    sys.stdout,
)
print()
