#!/usr/bin/env python3
"""Writes a Keyward config at scale: ROUTES routes over CREDS credentials.

    scale_config.py DIR LISTEN UPSTREAM [ROUTES] [CREDS] [VARIANT]

20 endpoints (all the same fixed upstream, Anthropic format), CREDS / 20 credentials each
(secrets in DIR/keys/, one file each). Route r has two targets: endpoint r % 20 and
endpoint (r + 1) % 20, each with a slice of 10 of that endpoint's credentials, so every
credential is on two routes and every route has 20 candidates. Routes are named
route-000 … and ask for model claude-bench. VARIANT b swaps each route's two targets (a
config that differs in every route, for reload tests). Writes DIR/keyward.toml (or
DIR/keyward-b.toml for variant b).
"""
import os
import sys

d, listen, upstream = sys.argv[1], sys.argv[2], sys.argv[3]
routes = int(sys.argv[4]) if len(sys.argv) > 4 else 200
creds = int(sys.argv[5]) if len(sys.argv) > 5 else 2000
variant = sys.argv[6] if len(sys.argv) > 6 else "a"
endpoints = 20
per_ep = creds // endpoints
os.makedirs(os.path.join(d, "keys"), exist_ok=True)
out = [
    f'listen = "{listen}"',
    'state = "state.db"',
    "",
    "[server]",
    "max_connections = 20000",
    "",
    "[admin]",
    'token = "env:KW_ADMIN_TOKEN"',
    "",
    "[[gateway_keys]]",
    'name = "bench"',
    'key = "env:KW_BENCH_KEY"',
    "",
]
for e in range(endpoints):
    out += [f"[endpoints.ep{e:02d}]", 'provider = "anthropic"', f'base_url = "{upstream}"', ""]
for e in range(endpoints):
    for i in range(per_ep):
        cid = f"c{e:02d}-{i:03d}"
        path = os.path.join(d, "keys", cid)
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(f"sk-ant-scale-{cid}\n")
        out += ["[[credentials]]", f'id = "{cid}"', f'endpoint = "ep{e:02d}"',
                f'secret = "file:keys/{cid}"', ""]
slices = max(per_ep // 10, 1)
for r in range(routes):
    targets = []
    for e in (r % endpoints, (r + 1) % endpoints):
        s = (r // endpoints) % slices
        ids = ", ".join(f'"c{e:02d}-{s * 10 + i:03d}"' for i in range(min(10, per_ep)))
        targets.append(f'{{ endpoint = "ep{e:02d}", model = "claude-bench", credentials = [{ids}] }}')
    if variant == "b":
        targets.reverse()
    out += [f"[routes.route-{r:03d}]", "targets = [", *(f"  {t}," for t in targets), "]", ""]
name = "keyward-b.toml" if variant == "b" else "keyward.toml"
with open(os.path.join(d, name), "w") as f:
    f.write("\n".join(out))
