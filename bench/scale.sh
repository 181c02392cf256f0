#!/usr/bin/env bash
# Keyward at scale (issue 21): thousands of long-lived streams through one process, a
# config of 200 routes over 2,000 credentials (startup, hot reload under traffic), and an
# optional soak. Called by bench/run.sh; runs alone too. Writes bench/results/scale_*.json
# and soak.csv.
#
#   bench/scale.sh                        # streams + config scale (about 3 minutes)
#   STREAMS=2000 STREAM_EVENTS=10 bench/scale.sh
#   SOAK_MINUTES=30 bench/scale.sh        # adds a 30-minute soak (default 0: none)
#   SCALE_PARTS="soak" SOAK_MINUTES=10 bench/scale.sh
#
# File descriptors: a proxied HTTP/1.1 stream holds two sockets in the proxy (caller and
# upstream), so N streams need 2N descriptors in Keyward. The script raises the soft limit
# to the hard one (`ulimit -n`); where the hard limit is below 2N + 200 (a container without
# CAP_SYS_RESOURCE cannot raise it), it opens as many streams as fit and says so. To run
# the full 10,000, raise the hard limit first (systemd `LimitNOFILE=65536`, Docker
# `--ulimit nofile=65536:65536`, or `ulimit -Hn 65536` as root with CAP_SYS_RESOURCE).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/results
SCALE_PARTS=${SCALE_PARTS:-"streams config soak"}
STREAMS=${STREAMS:-10000}
STREAM_EVENTS=${STREAM_EVENTS:-30}
SOAK_MINUTES=${SOAK_MINUTES:-0}
WORK=$(mktemp -d /tmp/keyward-scale.XXXXXX)
mkdir -p "$OUT"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${PIDS[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
part() { [[ " $SCALE_PARTS " == *" $1 "* ]]; }
# Which run each part's figures come from (report.py prints it).
mark() {
  python3 - "$OUT/parts.json" "$1" "$2" <<'PY'
import json, os, sys, time
path, name, note = sys.argv[1:4]
d = json.load(open(path)) if os.path.exists(path) else {}
d[name] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": 1, "seconds_each": 0,
           "load_before": open("/proc/loadavg").read().split()[0], "note": note}
json.dump(d, open(path, "w"), indent=1, sort_keys=True)
PY
}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light wrk >/dev/null
fi
HARD=$(ulimit -Hn)
ulimit -n "$HARD"

if [ -z "${KW_SKIP_BUILD:-}" ]; then
  cargo build --release -q -p keyward -p keyward-bench --features keyward/sim
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
KW=$TARGET_DIR/release/keyward
SLOW=$TARGET_DIR/release/slow-sse
GSYS=$TARGET_DIR/release/gateway-sysalloc
BARE=$TARGET_DIR/release/bare-proxy
HOLD=$TARGET_DIR/release/hold-streams
PROXY_CPU=0
LOAD_CPU=1
UP=18581   # fixed upstream (nginx)
SLW=18582  # slow SSE upstream
KWS=18583  # keyward for streams
KWC=18584  # keyward with 200 routes × 2,000 credentials
SIM=18585  # keyward-sim for the soak
KWK=18586  # keyward for the soak
FLR=18587  # bare-proxy (hyper-util client), the floor for the streams
DSL=18588  # slow SSE upstream for the heap profile (8 events a stream)
DKW=18589  # gateway-sysalloc under dhat
export KW_BENCH_KEY=kw-bench-gateway-key
export KW_ADMIN_TOKEN=kw-bench-admin-token-0123456789

rss_kb() { awk '/^VmRSS/ {print $2}' /proc/"$1"/status; }
hwm_kb() { awk '/^VmHWM/ {print $2}' /proc/"$1"/status; }
fds() { ls /proc/"$1"/fd | wc -l; }
overflows() { awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) n[$i] = i; h = 1 } else print $n["ListenOverflows"] }' /proc/net/netstat; }
wait_port() { for _ in $(seq 1 300); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }


# ---------------------------------------------------------------- streams at scale
if part streams; then
  N=$STREAMS
  if (( 2 * N + 200 > HARD )); then
    N=$(( (HARD - 200) / 2 ))
    echo "streams: the hard limit on open files is $HARD (not raisable here); $STREAMS streams need $(( 2 * STREAMS + 200 )) descriptors in Keyward, so opening $N" >&2
  fi
  mkdir -p "$WORK/st"
  cat > "$WORK/st/keyward.toml" <<EOF
listen = "127.0.0.1:$KWS"
state = "state.db"

[server]
max_connections = 20000

[[gateway_keys]]
name = "bench"
key = "env:KW_BENCH_KEY"

[endpoints.slow]
provider = "anthropic"
base_url = "http://127.0.0.1:$SLW"

[[credentials]]
id = "slow1"
endpoint = "slow"
secret = "file:slow1.key"

[routes.claude-slow]
targets = [{ endpoint = "slow", model = "claude-bench", credentials = ["slow1"] }]
EOF
  printf 'sk-ant-bench-slow-0001\n' > "$WORK/st/slow1.key"
  taskset -c $LOAD_CPU "$SLOW" 127.0.0.1:$SLW "$STREAM_EVENTS" 1000 & PIDS+=($!)
  (cd "$WORK/st" && KEYWARD_LOG=warn TOKIO_WORKER_THREADS=1 exec taskset -c $PROXY_CPU "$KW" serve --config keyward.toml >/dev/null 2>"$WORK/st/serve.log") & PIDS+=($!)
  KS_PID=$!
  wait_port $SLW; wait_port $KWS
  # Warm up: 100 short-lived streams (2 events each would need another upstream; these
  # run their full length in the background of the idle reading's few seconds).
  taskset -c $LOAD_CPU "$HOLD" 127.0.0.1:$KWS /v1/messages 100 "$KW_BENCH_KEY" claude-slow 1000 >/dev/null 2>&1
  sleep 1
  IDLE=$(rss_kb $KS_PID)
  OVF0=$(overflows)
  taskset -c $LOAD_CPU "$HOLD" 127.0.0.1:$KWS /v1/messages "$N" "$KW_BENCH_KEY" claude-slow 2000 > "$WORK/st/hold.json" 2> "$WORK/st/hold.err" &
  HOLDER=$!
  OPEN=""; OPEN_FDS=0; PEAK_SEEN=0
  while kill -0 $HOLDER 2>/dev/null; do
    r=$(rss_kb $KS_PID); (( r > PEAK_SEEN )) && PEAK_SEEN=$r
    if [ -z "$OPEN" ] && grep -q "^open " "$WORK/st/hold.err" 2>/dev/null; then
      OPEN=$(rss_kb $KS_PID); OPEN_FDS=$(fds $KS_PID)
    fi
    sleep 0.2
  done
  wait $HOLDER || { echo "error: the stream holder failed: $(cat "$WORK/st/hold.err")" >&2; exit 1; }
  OVF1=$(overflows)
  sleep 2
  AFTER=$(rss_kb $KS_PID)
  PEAK=$(hwm_kb $KS_PID)
  kill $KS_PID 2>/dev/null || true
  # The same streams through bare-proxy: what hyper, tokio and mimalloc alone hold per
  # stream (a proxy that does nothing but forward), to split Keyward's figure.
  TOKIO_WORKER_THREADS=1 taskset -c $PROXY_CPU "$BARE" 127.0.0.1:$FLR "http://127.0.0.1:$SLW" hyper & PIDS+=($!)
  FL_PID=$!
  wait_port $FLR
  taskset -c $LOAD_CPU "$HOLD" 127.0.0.1:$FLR /v1/messages 100 "$KW_BENCH_KEY" claude-slow 1000 >/dev/null 2>&1
  sleep 1
  FL_IDLE=$(rss_kb $FL_PID)
  taskset -c $LOAD_CPU "$HOLD" 127.0.0.1:$FLR /v1/messages "$N" "$KW_BENCH_KEY" claude-slow 2000 > "$WORK/st/floor.json" 2> "$WORK/st/floor.err" &
  HOLDER=$!
  FL_OPEN=""
  while kill -0 $HOLDER 2>/dev/null; do
    if [ -z "$FL_OPEN" ] && grep -q "^open " "$WORK/st/floor.err" 2>/dev/null; then FL_OPEN=$(rss_kb $FL_PID); fi
    sleep 0.2
  done
  wait $HOLDER || { echo "error: the stream holder failed on the floor: $(cat "$WORK/st/floor.err")" >&2; exit 1; }
  kill $FL_PID 2>/dev/null || true
  python3 - "$WORK/st/hold.json" "$OUT/scale_streams.json" <<EOF
import json, sys
h = json.load(open(sys.argv[1]))
open_kb = ${OPEN:-0}
h.update({"requested": $STREAMS, "streams": $N, "fd_hard_limit": $HARD, "events_per_stream": $STREAM_EVENTS,
          "idle_rss_kb": $IDLE, "open_rss_kb": open_kb, "peak_rss_kb": $PEAK,
          "after_rss_kb": $AFTER, "open_fds": $OPEN_FDS, "listen_overflows": $OVF1 - $OVF0,
          "floor": json.load(open("$WORK/st/floor.json")), "floor_idle_rss_kb": $FL_IDLE, "floor_open_rss_kb": ${FL_OPEN:-0},
          "floor_kb_per_stream": round((${FL_OPEN:-0} - $FL_IDLE) / $N, 2) if ${FL_OPEN:-0} else None, "opened_after": open("$WORK/st/hold.err").read().strip(),
          "kb_per_stream": round((open_kb - $IDLE) / $N, 2) if open_kb else None})
json.dump(h, open(sys.argv[2], "w"), indent=1)
print(json.dumps(h))
EOF
  # Where a stream's heap goes: the same gateway on the system allocator (which dhat can
  # see), DHAT_STREAMS streams open through it, the live heap at its peak by site.
  if need valgrind && [ -x "$GSYS" ]; then
    DN=${DHAT_STREAMS:-1000}
    sed "s/127.0.0.1:$KWS/127.0.0.1:$DKW/; s/127.0.0.1:$SLW/127.0.0.1:$DSL/" "$WORK/st/keyward.toml" > "$WORK/st/dhat.toml"
    taskset -c $LOAD_CPU "$SLOW" 127.0.0.1:$DSL 8 1000 & PIDS+=($!)
    wait_port $DSL
    (cd "$WORK/st" && KEYWARD_LOG=warn TOKIO_WORKER_THREADS=1 exec valgrind --tool=dhat --dhat-out-file="$WORK/st/dhat.json" "$GSYS" dhat.toml >/dev/null 2>"$WORK/st/dhat.log") &
    DPID=$!
    wait_port $DKW
    taskset -c $LOAD_CPU "$HOLD" 127.0.0.1:$DKW /v1/messages "$DN" "$KW_BENCH_KEY" claude-slow 500 > "$WORK/st/dhat-hold.json" 2>&1 || true
    sleep 1
    kill -INT $DPID; wait $DPID || true
    python3 "$ROOT/bench/dhat_top.py" "$WORK/st/dhat.json" "$DN" 14 > "$OUT/dhat_streams.json"
  fi
  mark scale-streams "STREAMS=$STREAMS STREAM_EVENTS=$STREAM_EVENTS; $N opened"
fi

# ---------------------------------------------------------------- 200 routes × 2,000 credentials
if part config; then
MSG='{"id":"msg_bench","type":"message","role":"assistant","model":"claude-bench","content":[{"type":"text","text":"Hello from the fixed upstream."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":8}}'
mkdir -p "$WORK/up"
cat > "$WORK/up/nginx.conf" <<EOF
worker_processes 1;
daemon off;
error_log $WORK/up/error.log warn;
pid $WORK/up/nginx.pid;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $WORK/up;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$UP;
    location /v1/messages { default_type application/json; return 200 '$MSG'; }
  }
}
EOF
taskset -c $LOAD_CPU nginx -c "$WORK/up/nginx.conf" & PIDS+=($!)
wait_port $UP
  # Selection at this scale, in process (divan; crates/keyward-core/benches/health.rs).
  taskset -c $PROXY_CPU cargo bench -q -p keyward-core --bench health 2>/dev/null | tee "$WORK/divan.txt"
  python3 "$ROOT/bench/divan_medians.py" < "$WORK/divan.txt" > "$OUT/divan_health.json"
  mkdir -p "$WORK/cfg"
  python3 "$ROOT/bench/scale_config.py" "$WORK/cfg" 127.0.0.1:$KWC "http://127.0.0.1:$UP" 200 2000 a
  python3 "$ROOT/bench/scale_config.py" "$WORK/cfg" 127.0.0.1:$KWC "http://127.0.0.1:$UP" 200 2000 b
  cp "$WORK/cfg/keyward.toml" "$WORK/cfg/keyward-a.toml"
  "$KW" config check --config "$WORK/cfg/keyward.toml" >/dev/null
  # Startup to the first served request: the first start creates the state file.
  STARTS=()
  for i in 1 2 3 4 5; do
    STARTS+=("$(cd "$WORK/cfg" && KEYWARD_LOG=warn TOKIO_WORKER_THREADS=1 taskset -c $PROXY_CPU python3 "$ROOT/bench/startup.py" "$WORK/cfg" $KWC "$KW_BENCH_KEY" route-042 -- "$KW" serve --config keyward.toml)")
  done
  echo "startup ms: ${STARTS[*]}"
  # Hot reload under traffic: wrk on three routes through every reload; any non-2xx
  # answer or socket error is a dropped request.
  (cd "$WORK/cfg" && KEYWARD_LOG=warn TOKIO_WORKER_THREADS=1 exec taskset -c $PROXY_CPU "$KW" serve --config keyward.toml >/dev/null 2>"$WORK/cfg/serve.log") & PIDS+=($!)
  KC_PID=$!
  wait_port $KWC
  CFG_IDLE=$(rss_kb $KC_PID)
  cat > "$WORK/cfg/post.lua" <<EOF
local models = {"route-000", "route-101", "route-199"}
local i = 0
request = function()
  i = i + 1
  local body = '{"model":"' .. models[(i % 3) + 1] .. '","max_tokens":16,"messages":[{"role":"user","content":"Say hello."}]}'
  return wrk.format("POST", "/v1/messages", {["content-type"] = "application/json", ["x-api-key"] = "$KW_BENCH_KEY", ["anthropic-version"] = "2023-06-01"}, body)
end
EOF
  RELOADS=${RELOADS:-10}
  # Idle reloads first (wall and CPU time), then wrk starts and the reloads repeat under it.
  python3 "$ROOT/bench/reload.py" "http://127.0.0.1:$KWC" "$KW_ADMIN_TOKEN" "$WORK/cfg/keyward.toml" \
    "$WORK/cfg/keyward-a.toml" "$WORK/cfg/keyward-b.toml" "$RELOADS" "$KC_PID" "$WORK/cfg/wrk.txt" -- \
    taskset -c $LOAD_CPU wrk -t1 -c16 -d"$(( RELOADS * 3 + 6 ))s" -s "$WORK/cfg/post.lua" "http://127.0.0.1:$KWC/v1/messages" \
    > "$WORK/cfg/reload.json"
  cat "$WORK/cfg/wrk.txt"
  CFG_RSS=$(rss_kb $KC_PID)
  python3 - "$WORK/cfg/reload.json" "$WORK/cfg/wrk.txt" "$OUT/scale_config.json" <<EOF
import json, re, sys
r = json.load(open(sys.argv[1]))
w = open(sys.argv[2]).read()
total = int(re.search(r"(\d+) requests in", w).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", w)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", w)
r.update({"routes": 200, "credentials": 2000, "startup_ms": [float(x) for x in "${STARTS[*]}".split()],
          "traffic_requests": total, "traffic_non_2xx": int(non2xx.group(1)) if non2xx else 0,
          "traffic_socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
          "rps_during_reloads": float(re.search(r"Requests/sec:\s+([\d.]+)", w).group(1)),
          "idle_rss_kb": $CFG_IDLE, "rss_after_reloads_kb": $CFG_RSS})
json.dump(r, open(sys.argv[3], "w"), indent=1)
print(json.dumps(r))
EOF
  mark scale-config "RELOADS=$RELOADS"
  kill $KC_PID 2>/dev/null || true
fi

# ---------------------------------------------------------------- soak
if part soak && (( SOAK_MINUTES > 0 )); then
  mkdir -p "$WORK/soak"
  {
    echo "listen = \"127.0.0.1:$KWK\""
    echo 'state = "state.db"'
    echo
    echo '[[gateway_keys]]'
    echo 'name = "bench"'
    echo 'key = "env:KW_BENCH_KEY"'
    echo
    echo '[endpoints.sim]'
    echo 'provider = "anthropic"'
    echo "base_url = \"http://127.0.0.1:$SIM\""
    for i in 1 2 3 4 5 6; do
      printf 'sk-ant-soak-%04d\n' "$i" > "$WORK/soak/k$i"
      printf '[[credentials]]\nid = "k%d"\nendpoint = "sim"\nsecret = "file:k%d"\n' "$i" "$i"
    done
    echo '[routes.soak]'
    echo 'targets = [{ endpoint = "sim", model = "claude-sim", credentials = ["k1", "k2", "k3", "k4", "k5", "k6"] }]'
  } > "$WORK/soak/keyward.toml"
  taskset -c $LOAD_CPU "$KW" sim --listen 127.0.0.1:$SIM >/dev/null 2>&1 & PIDS+=($!)
  wait_port $SIM
  (cd "$WORK/soak" && KEYWARD_LOG=warn TOKIO_WORKER_THREADS=1 exec taskset -c $PROXY_CPU "$KW" serve --config keyward.toml >/dev/null 2>"$WORK/soak/serve.log") & PIDS+=($!)
  KK_PID=$!
  wait_port $KWK
  # Mixed traffic, paced (each connection waits 20 ms between requests): 5 in 10
  # non-streaming, 3 streaming, 1 with a wrong gateway key (401), 1 for an unknown model.
  cat > "$WORK/soak/mix.lua" <<EOF
local i = 0
local h = {["content-type"] = "application/json", ["x-api-key"] = "$KW_BENCH_KEY", ["anthropic-version"] = "2023-06-01"}
local bad = {["content-type"] = "application/json", ["x-api-key"] = "wrong-key", ["anthropic-version"] = "2023-06-01"}
request = function()
  i = i + 1
  local k = i % 10
  if k < 5 then
    return wrk.format("POST", "/v1/messages", h, '{"model":"soak","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}')
  elseif k < 8 then
    return wrk.format("POST", "/v1/messages", h, '{"model":"soak","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}')
  elseif k == 8 then
    return wrk.format("POST", "/v1/messages", bad, '{"model":"soak","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}')
  else
    return wrk.format("POST", "/v1/messages", h, '{"model":"no-such-route","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}')
  end
end
delay = function() return 20 end
-- Answers by status, printed at the end (one wrk thread: its globals are the counts).
local seen = {}
response = function(status, headers, body)
  seen[status] = (seen[status] or 0) + 1
  local line = {}
  for k, v in pairs(seen) do line[#line + 1] = k .. "=" .. v end
  statuses = table.concat(line, " ")
end
local t
setup = function(thread) t = thread end
done = function(summary, latency, requests) io.write("statuses: " .. tostring(t:get("statuses")) .. "\n") end
EOF
  taskset -c $LOAD_CPU wrk -t1 -c8 -d"${SOAK_MINUTES}m" -s "$WORK/soak/mix.lua" "http://127.0.0.1:$KWK/v1/messages" > "$WORK/soak/wrk.txt" &
  WRK=$!
  # Failures that come and go: every minute keys 4-6 take turns at a 500, a 429 with
  # Retry-After, and a stream cut after one event; in between they answer normally.
  sim_key() { curl -s -X POST "http://127.0.0.1:$SIM/_sim/keys/$1" -H 'content-type: application/json' -d "$2" >/dev/null; }
  echo "elapsed_s,rss_kb,fds" > "$OUT/soak.csv"
  start=$(date +%s); minute=-1
  while kill -0 $WRK 2>/dev/null; do
    el=$(( $(date +%s) - start ))
    m=$(( el / 60 ))
    if (( m != minute )); then
      minute=$m
      case $(( m % 4 )) in
        0) sim_key sk-ant-soak-0004 '{"kind":"server_error"}'; sim_key sk-ant-soak-0005 '{"kind":"ok"}'; sim_key sk-ant-soak-0006 '{"kind":"ok"}' ;;
        1) sim_key sk-ant-soak-0004 '{"kind":"ok"}'; sim_key sk-ant-soak-0005 '{"kind":"rate_limited","retry_after":20}' ;;
        2) sim_key sk-ant-soak-0005 '{"kind":"ok"}'; sim_key sk-ant-soak-0006 '{"kind":"stream_cut","after":1}' ;;
        3) sim_key sk-ant-soak-0006 '{"kind":"ok"}' ;;
      esac
    fi
    echo "$el,$(rss_kb $KK_PID),$(fds $KK_PID)" >> "$OUT/soak.csv"
    sleep 10
  done
  wait $WRK || true
  cat "$WORK/soak/wrk.txt"
  python3 - "$WORK/soak/wrk.txt" "$OUT/soak.csv" "$OUT/scale_soak.json" "$SOAK_MINUTES" <<'EOF'
import csv, json, re, sys
w = open(sys.argv[1]).read()
rows = [(int(r["elapsed_s"]), int(r["rss_kb"])) for r in csv.DictReader(open(sys.argv[2]))]
minutes = int(sys.argv[4])
warm = [(t, r) for t, r in rows if t >= min(120, minutes * 60 // 5)]  # after warm-up
n = len(warm)
mt = sum(t for t, _ in warm) / n
mr = sum(r for _, r in warm) / n
slope = sum((t - mt) * (r - mr) for t, r in warm) / max(sum((t - mt) ** 2 for t, _ in warm), 1e-9)
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", w)
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", w)
st = re.search(r"statuses: (.*)", w)
statuses = dict(kv.split("=") for kv in st.group(1).split()) if st and "=" in st.group(1) else {}
out = {"minutes": minutes, "requests": int(re.search(r"(\d+) requests in", w).group(1)),
       "statuses": {k: int(v) for k, v in sorted(statuses.items())},
       "non_2xx": int(non2xx.group(1)) if non2xx else 0,
       "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
       "rss_start_kb": rows[0][1], "rss_end_kb": rows[-1][1], "rss_max_kb": max(r for _, r in rows),
       "warm_from_s": warm[0][0], "slope_kb_per_min": round(slope * 60, 1),
       "slope_kb_per_hour": round(slope * 3600, 0)}
json.dump(out, open(sys.argv[3], "w"), indent=1)
print(json.dumps(out))
EOF
  mark scale-soak "SOAK_MINUTES=$SOAK_MINUTES"
fi
