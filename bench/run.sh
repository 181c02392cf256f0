#!/usr/bin/env bash
# Keyward beside the floor: direct to a fixed upstream, through nginx (proxy_pass with
# upstream keepalive), through Keyward (one route, 100 credentials, 10 disabled), and through
# the same Keyward in fleet mode (state in a local redis-server), in the same run,
# alternating, ROUNDS rounds each; then streams' time to first byte, memory at
# idle and with 1,000 open streams, and callgrind instruction counts per request; then
# the peers (LiteLLM's proxy, Portkey's gateway) beside nginx and Keyward on the same
# upstream, and the scale tests of bench/scale.sh (10,000 streams, 200 routes × 2,000
# credentials, an optional soak). Writes bench/results/*.json and docs/benchmarks.md.
#
#   bench/run.sh                 # everything (about 25 minutes on 2 cores)
#   ROUNDS=2 SECONDS_EACH=3 bench/run.sh   # a quick look
#   PARTS="peers scale" bench/run.sh       # some parts only; the page keeps the other
#                                          # parts' last results and says when each ran
#   SOAK_MINUTES=30 bench/run.sh           # adds the soak (default 0: none)
#
# Parts: plain (wrk: direct, nginx, Keyward, fleet, floors), streams (h2load TTFB), memory
# (1,000 open streams), callgrind, peers, scale. Needs Debian's nginx-light, wrk,
# nghttp2-client (h2load) and valgrind; installs them if missing (apt-get, as root). The
# peers are installed when missing: LiteLLM (PyPI `litellm[proxy]`) in its own venv under
# /var/tmp/keyward-bench-peers, Portkey (npm `@portkey-ai/gateway`) in a folder beside it;
# a peer that cannot be installed is reported and skipped. Everything is called on
# 127.0.0.1 (Portkey's server cannot be told an address and listens on all interfaces).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-5}
SECONDS_EACH=${SECONDS_EACH:-5}
CONCURRENCY=${CONCURRENCY:-"1 16 64"}
PARTS=${PARTS:-"plain streams memory callgrind peers scale"}
PEERS_DIR=${PEERS_DIR:-/var/tmp/keyward-bench-peers}
part() { [[ " $PARTS " == *" $1 "* ]]; }
# Which run each part's figures come from (report.py prints it).
mark() {
  python3 - "$OUT/parts.json" "$1" "$ROUNDS" "$SECONDS_EACH" "${2:-}" <<'PY'
import json, os, sys, time
path, name, rounds, secs, extra = sys.argv[1:6]
d = json.load(open(path)) if os.path.exists(path) else {}
d[name] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": int(rounds),
           "seconds_each": int(secs), "load_before": open("/proc/loadavg").read().split()[0],
           "note": extra}
json.dump(d, open(path, "w"), indent=1, sort_keys=True)
PY
}
OUT=$ROOT/bench/results
WORK=$(mktemp -d /tmp/keyward-bench.XXXXXX)
mkdir -p "$OUT"
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${PIDS[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need wrk || ! need h2load || ! need valgrind || ! need redis-server; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light wrk nghttp2-client valgrind redis-server >/dev/null
  systemctl disable --now redis-server >/dev/null 2>&1 || true
fi
# Raise the soft limit on open files as far as the hard one allows (never lower the hard
# one: bench/scale.sh opens as many streams as it permits).
ulimit -Sn 65536 2>/dev/null || ulimit -Sn "$(ulimit -Hn)"

cargo build --release -q -p keyward -p keyward-bench --features keyward/sim
# Built where cargo builds (CARGO_TARGET_DIR when set, as CI sets it).
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
KW=$TARGET_DIR/release/keyward
BARE=$TARGET_DIR/release/bare-proxy

# Cores: the proxy under test on core 0; the upstream and the load tool on core 1.
PROXY_CPU=0
LOAD_CPU=1

UP=18481      # fixed upstream (nginx returning fixed bodies)
NGX=18482     # nginx as a reverse proxy
KWP=18483     # keyward
SIM=18484     # keyward-sim (streams held open, for the memory test)
KWF=18487     # keyward in fleet mode
HYP=18489     # bare-proxy on hyper-util's client: the floor of any hyper-based proxy
RQW=18490     # bare-proxy on reqwest, as Keyward's provider calls used it before
RDS=18488     # redis-server for fleet mode

MSG='{"id":"msg_bench","type":"message","role":"assistant","model":"claude-bench","content":[{"type":"text","text":"Hello from the fixed upstream."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":8}}'
SSE='event: message_start\ndata: {"type":"message_start","message":{"id":"msg_bench","type":"message","role":"assistant","model":"claude-bench","content":[],"stop_reason":null,"usage":{"input_tokens":12,"output_tokens":1}}}\n\nevent: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\nevent: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}\n\nevent: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" world"}}\n\nevent: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\nevent: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":8}}\n\nevent: message_stop\ndata: {"type":"message_stop"}\n\n'

# The stream as nginx's quoted string: real newlines (command substitution would strip the
# last two, leaving the final event unterminated), quotes escaped.
SSE_QUOTED=$(printf "$SSE" | sed 's/"/\\"/g'; echo x)
SSE_QUOTED=${SSE_QUOTED%x}
mkdir -p "$WORK/up" "$WORK/ngx" "$WORK/kw/keys"
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
    location /sse/v1/messages { default_type text/event-stream; return 200 "$SSE_QUOTED"; }
  }
}
EOF
cat > "$WORK/ngx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
error_log $WORK/ngx/error.log warn;
pid $WORK/ngx/nginx.pid;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $WORK/ngx;
  proxy_temp_path $WORK/ngx;
  keepalive_requests 1000000;
  upstream fixed { server 127.0.0.1:$UP; keepalive 128; }
  upstream sim { server 127.0.0.1:$SIM; keepalive 128; }
  server {
    listen 127.0.0.1:$NGX;
    location /hold/ { proxy_pass http://sim/; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
    location / { proxy_pass http://fixed; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
  }
}
EOF

# Keyward: one route over 100 credentials (10 of them disabled), like a team's gateway.
{
  echo "listen = \"127.0.0.1:$KWP\""
  echo "state = \"state.db\""
  echo
  echo "[[gateway_keys]]"
  echo "name = \"bench\""
  echo "key = \"env:KW_BENCH_KEY\""
  echo
  echo "[endpoints.fixed]"
  echo "provider = \"anthropic\""
  echo "base_url = \"http://127.0.0.1:$UP\""
  echo "[endpoints.fixed-sse]"
  echo "provider = \"anthropic\""
  echo "base_url = \"http://127.0.0.1:$UP/sse\""
  echo "[endpoints.hold]"
  echo "provider = \"anthropic\""
  echo "base_url = \"http://127.0.0.1:$SIM\""
  for i in $(seq 1 100); do
    # One secret per credential id (the config refuses a key under two ids).
    printf 'sk-ant-bench-%04d\n' "$i" > "$WORK/kw/keys/k$i"
    printf 'sk-ant-bench-s%04d\n' "$i" > "$WORK/kw/keys/s$i"
    printf '[[credentials]]\nid = "k%d"\nendpoint = "fixed"\nsecret = "file:keys/k%d"\n' "$i" "$i"
    printf '[[credentials]]\nid = "s%d"\nendpoint = "fixed-sse"\nsecret = "file:keys/s%d"\n' "$i" "$i"
  done
  printf 'sk-ant-bench-hold-0001\n' > "$WORK/kw/keys/h1"
  printf '[[credentials]]\nid = "h1"\nendpoint = "hold"\nsecret = "file:keys/h1"\n'
  echo
  all=$(seq 1 100 | sed 's/^/"k/; s/$/"/' | paste -sd, -)
  alls=$(seq 1 100 | sed 's/^/"s/; s/$/"/' | paste -sd, -)
  echo "[routes.claude]"
  echo "targets = [{ endpoint = \"fixed\", model = \"claude-bench\", credentials = [$all] }]"
  echo "[routes.claude-stream]"
  echo "targets = [{ endpoint = \"fixed-sse\", model = \"claude-bench\", credentials = [$alls] }]"
  echo "[routes.claude-hold]"
  echo "targets = [{ endpoint = \"hold\", model = \"claude-bench\", credentials = [\"h1\"] }]"
  echo "idle_timeout = \"600s\""
} > "$WORK/kw/keyward.toml"
export KW_BENCH_KEY=kw-bench-gateway-key
for i in $(seq 1 10); do
  "$KW" disable "k$i" --reason "benchmark: out of rotation" --config "$WORK/kw/keyward.toml" >/dev/null
  "$KW" disable "s$i" --reason "benchmark: out of rotation" --config "$WORK/kw/keyward.toml" >/dev/null
done
# Fleet mode: the same config on Redis (the same 10 credentials disabled, written to Redis
# by the CLI with no replica running).
taskset -c $LOAD_CPU redis-server --port $RDS --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" >/dev/null 2>&1 & PIDS+=($!)
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$RDS) 2>/dev/null && break; sleep 0.1; done
sed -e "s|^state = .*|state = \"redis://127.0.0.1:$RDS\"|" -e "s|^listen = .*|listen = \"127.0.0.1:$KWF\"|" "$WORK/kw/keyward.toml" > "$WORK/kw/fleet.toml"
printf '\n[fleet]\nprefix = "bench"\n' >> "$WORK/kw/fleet.toml"
for i in $(seq 1 10); do
  # (an admin URL where nothing answers, so the CLI writes to Redis itself; it asks for an
  # admin token before it tries the URL, and this config has no [admin] table)
  KEYWARD_ADMIN_TOKEN=kw-bench-unused-admin-token "$KW" disable "k$i" --reason "benchmark: out of rotation" --config "$WORK/kw/fleet.toml" --admin-url http://127.0.0.1:9 >/dev/null
  KEYWARD_ADMIN_TOKEN=kw-bench-unused-admin-token "$KW" disable "s$i" --reason "benchmark: out of rotation" --config "$WORK/kw/fleet.toml" --admin-url http://127.0.0.1:9 >/dev/null
done

taskset -c $LOAD_CPU nginx -c "$WORK/up/nginx.conf" & PIDS+=($!)
taskset -c $PROXY_CPU nginx -c "$WORK/ngx/nginx.conf" & PIDS+=($!)
taskset -c $LOAD_CPU "$KW" sim --listen 127.0.0.1:$SIM >/dev/null 2>&1 & PIDS+=($!)
(cd "$WORK/kw" && KEYWARD_LOG=warn TOKIO_WORKER_THREADS=1 exec taskset -c $PROXY_CPU "$KW" serve --config keyward.toml >/dev/null 2>"$WORK/kw/serve.log") & PIDS+=($!)
KW_PID=$!
(cd "$WORK/kw" && KEYWARD_LOG=warn TOKIO_WORKER_THREADS=1 exec taskset -c $PROXY_CPU "$KW" serve --config fleet.toml >/dev/null 2>"$WORK/kw/fleet.log") & PIDS+=($!)
KWF_PID=$!
TOKIO_WORKER_THREADS=1 taskset -c $PROXY_CPU "$BARE" 127.0.0.1:$HYP "http://127.0.0.1:$UP" hyper & PIDS+=($!)
HYP_PID=$!
TOKIO_WORKER_THREADS=1 taskset -c $PROXY_CPU "$BARE" 127.0.0.1:$RQW "http://127.0.0.1:$UP" reqwest & PIDS+=($!)
RQW_PID=$!
for port in $UP $NGX $KWP $SIM $KWF $HYP $RQW; do
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
NGX_WORKER=$(pgrep -f "nginx: worker" -P "$(cat "$WORK/ngx/nginx.pid")" | head -1)
sleep 0.5
rss_kb() { awk '/^VmRSS/ {print $2}' /proc/"$1"/status; }
hwm_kb() { awk '/^VmHWM/ {print $2}' /proc/"$1"/status; }
cpu_ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }
TICK=$(getconf CLK_TCK)

BODY='{"model":"claude","max_tokens":16,"messages":[{"role":"user","content":"Say hello."}]}'
cat > "$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["content-type"] = "application/json"
wrk.headers["x-api-key"] = "$KW_BENCH_KEY"
wrk.headers["anthropic-version"] = "2023-06-01"
EOF

# Warm up each path (connection pools, the gateway's first selections).
for url in "http://127.0.0.1:$UP/v1/messages" "http://127.0.0.1:$NGX/v1/messages" "http://127.0.0.1:$KWP/v1/messages" "http://127.0.0.1:$KWF/v1/messages" "http://127.0.0.1:$HYP/v1/messages" "http://127.0.0.1:$RQW/v1/messages"; do
  taskset -c $LOAD_CPU wrk -t1 -c16 -d2s -s "$WORK/post.lua" "$url" >/dev/null
done
IDLE_RSS=$(rss_kb $KW_PID)
FLEET_IDLE_RSS=$(rss_kb $KWF_PID)
redis-cli -p $RDS INFO commandstats > "$WORK/redis-before.txt"
NGX_IDLE_RSS=$(rss_kb "$NGX_WORKER")

to_us() { # wrk latency like 85.00us / 1.20ms / 2.00s
  awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us/, "", v); print v } else if (v ~ /ms$/) { sub(/ms/, "", v); print v*1000 } else { sub(/s/, "", v); print v*1000000 } }'
}
if part plain; then
echo "round,concurrency,target,rps,p50_us,p99_us,cpu_ms_per_1k" > "$OUT/plain.csv"
for round in $(seq 1 "$ROUNDS"); do
  for c in $CONCURRENCY; do
    for target in direct nginx keyward keyward-fleet hyper-floor reqwest-floor; do
      case $target in
        hyper-floor) url="http://127.0.0.1:$HYP/v1/messages"; pid=$HYP_PID ;;
        reqwest-floor) url="http://127.0.0.1:$RQW/v1/messages"; pid=$RQW_PID ;;
        direct) url="http://127.0.0.1:$UP/v1/messages"; pid="" ;;
        nginx) url="http://127.0.0.1:$NGX/v1/messages"; pid=$NGX_WORKER ;;
        keyward) url="http://127.0.0.1:$KWP/v1/messages"; pid=$KW_PID ;;
        keyward-fleet) url="http://127.0.0.1:$KWF/v1/messages"; pid=$KWF_PID ;;
      esac
      t0=0; [ -n "$pid" ] && t0=$(cpu_ticks "$pid")
      res=$(taskset -c $LOAD_CPU wrk -t1 -c"$c" -d"${SECONDS_EACH}s" --latency -s "$WORK/post.lua" "$url")
      t1=0; [ -n "$pid" ] && t1=$(cpu_ticks "$pid")
      rps=$(echo "$res" | awk '/Requests\/sec/ {print $2}')
      total=$(echo "$res" | awk '/requests in/ {print $1}')
      p50=$(to_us "$(echo "$res" | awk '$1 == "50%" {print $2}')")
      p99=$(to_us "$(echo "$res" | awk '$1 == "99%" {print $2}')")
      non2xx=$(echo "$res" | awk '/Non-2xx/ {print $4}')
      if [ -n "$non2xx" ]; then echo "error: $target answered $non2xx non-2xx responses" >&2; exit 1; fi
      cpu=$(awk -v a="$t0" -v b="$t1" -v n="$total" -v hz="$TICK" 'BEGIN { if (n > 0 && b > a) printf "%.2f", (b - a) * 1000 / hz / n * 1000; else print "" }')
      echo "$round,$c,$target,$rps,$p50,$p99,$cpu" | tee -a "$OUT/plain.csv"
    done
  done
done

# Fleet mode's request path makes no Redis call: Redis's command counters across every
# fleet round above (only the log follower's blocking read wakes, every 2 s).
redis-cli -p $RDS INFO commandstats > "$WORK/redis-after.txt"
python3 "$ROOT/bench/fleet_calls.py" "$WORK/redis-before.txt" "$WORK/redis-after.txt" "$OUT/plain.csv" "$SECONDS_EACH" "$FLEET_IDLE_RSS" > "$OUT/fleet.json"
cat "$OUT/fleet.json"
mark plain
fi
kill $KWF_PID $HYP_PID $RQW_PID 2>/dev/null || true

# Streams: time to first byte with h2load (HTTP/1.1), the same three paths.
if part streams; then
SBODY='{"model":"claude-stream","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"Say hello."}]}'
echo "$SBODY" > "$WORK/stream.json"
echo "round,concurrency,target,ttfb_mean_us,rps" > "$OUT/streams.csv"
for round in $(seq 1 "$ROUNDS"); do
  for c in 1 64; do
    for target in direct nginx keyward; do
      case $target in
        direct) url="http://127.0.0.1:$UP/sse/v1/messages" ;;
        nginx) url="http://127.0.0.1:$NGX/sse/v1/messages" ;;
        keyward) url="http://127.0.0.1:$KWP/v1/messages" ;;
      esac
      n=$(( c == 1 ? 2000 : 20000 ))
      res=$(taskset -c $LOAD_CPU h2load --h1 -n "$n" -c "$c" -d "$WORK/stream.json" \
        -H "content-type: application/json" -H "x-api-key: $KW_BENCH_KEY" -H "anthropic-version: 2023-06-01" "$url")
      if ! echo "$res" | grep -q "$n succeeded"; then echo "error: $target streams failed: $res" >&2; exit 1; fi
      ttfb=$(echo "$res" | awk '/time to 1st byte/ {print $7}')
      rps=$(echo "$res" | awk '/^finished in/ {print $4}')
      echo "$round,$c,$target,$(to_us "$ttfb"),$rps" | tee -a "$OUT/streams.csv"
    done
  done
done
mark streams
fi

# Memory: 1,000 streams held open (the simulator stalls them after the first event).
if part memory; then
curl -s -X POST "http://127.0.0.1:$SIM/_sim/keys/sk-ant-bench-hold-0001" -H 'content-type: application/json' \
  -d '{"kind":"stream_stall","after":1,"ms":120000}' >/dev/null
curl -s -X POST "http://127.0.0.1:$SIM/_sim/keys/$KW_BENCH_KEY" -H 'content-type: application/json' \
  -d '{"kind":"stream_stall","after":1,"ms":120000}' >/dev/null
# (the sim keys behaviours by the key it sees: Keyward's h1 sends sk-ant-bench-hold-0001,
# nginx passes the caller's own key through)
hold() { # url, model: opens 1000 streams, reports the process's RSS once all are open
  python3 "$ROOT/bench/hold_streams.py" "$1" "$2" 1000 "$KW_BENCH_KEY"
}
BEFORE=$(rss_kb $KW_PID)
hold "http://127.0.0.1:$KWP/v1/messages" claude-hold > "$WORK/hold-kw.txt" &
HOLDER=$!
for _ in $(seq 1 300); do grep -q "open 1000" "$WORK/hold-kw.txt" 2>/dev/null && break; sleep 0.2; done
STREAMS_RSS=$(rss_kb $KW_PID)
kill $HOLDER 2>/dev/null || true; wait $HOLDER 2>/dev/null || true
hold "http://127.0.0.1:$NGX/hold/v1/messages" claude-hold > "$WORK/hold-ngx.txt" &
HOLDER=$!
for _ in $(seq 1 300); do grep -q "open 1000" "$WORK/hold-ngx.txt" 2>/dev/null && break; sleep 0.2; done
NGX_STREAMS_RSS=$(rss_kb "$NGX_WORKER")
kill $HOLDER 2>/dev/null || true; wait $HOLDER 2>/dev/null || true
KW_HWM=$(hwm_kb $KW_PID)
cat > "$OUT/memory.json" <<EOF
{"keyward_idle_rss_kb": $IDLE_RSS, "keyward_before_streams_rss_kb": $BEFORE, "keyward_1000_streams_rss_kb": $STREAMS_RSS, "keyward_peak_rss_kb": $KW_HWM,
 "nginx_worker_idle_rss_kb": $NGX_IDLE_RSS, "nginx_worker_1000_streams_rss_kb": $NGX_STREAMS_RSS,
 "keyward_holder": "$(tr '\n' ' ' < "$WORK/hold-kw.txt")", "nginx_holder": "$(tr '\n' ' ' < "$WORK/hold-ngx.txt")"}
EOF
cat "$OUT/memory.json"
mark memory
fi

# Peers: LiteLLM's proxy and Portkey's gateway on the same fixed upstream, beside nginx
# and Keyward, in the same rounds; each pinned to the proxy core like the others.
# LiteLLM: one route `claude` → `anthropic/claude-bench` with `api_base` the upstream.
# Portkey: no config; each request names the provider and the upstream in headers
# (`x-portkey-provider: anthropic`, `x-portkey-custom-host`), as its docs describe.
if part peers; then
LLM=18492     # LiteLLM proxy
PKY=18493     # Portkey gateway
PEER_TARGETS=""
mkdir -p "$PEERS_DIR"
if [ ! -x "$PEERS_DIR/litellm-venv/bin/litellm" ]; then
  echo "peers: installing LiteLLM (PyPI litellm[proxy]) into $PEERS_DIR/litellm-venv" >&2
  { python3 -m venv "$PEERS_DIR/litellm-venv" && "$PEERS_DIR/litellm-venv/bin/pip" install -q 'litellm[proxy]'; } \
    > "$PEERS_DIR/litellm-install.log" 2>&1 \
    || echo "peers: LiteLLM could not be installed (see $PEERS_DIR/litellm-install.log: $(tail -n 1 "$PEERS_DIR/litellm-install.log")); skipping it" >&2
fi
PORTKEY_JS=$PEERS_DIR/portkey/node_modules/@portkey-ai/gateway/build/start-server.js
if [ ! -f "$PORTKEY_JS" ]; then
  if need npm && need node; then
    echo "peers: installing Portkey (npm @portkey-ai/gateway) into $PEERS_DIR/portkey" >&2
    { mkdir -p "$PEERS_DIR/portkey" && cd "$PEERS_DIR/portkey" && { [ -f package.json ] || npm init -y >/dev/null; } \
      && npm install --no-audit --no-fund @portkey-ai/gateway; } > "$PEERS_DIR/portkey-install.log" 2>&1 \
      || echo "peers: Portkey could not be installed (see $PEERS_DIR/portkey-install.log: $(tail -n 1 "$PEERS_DIR/portkey-install.log")); skipping it" >&2
    cd "$ROOT"
  else
    echo "peers: Portkey needs node and npm, which are not installed; skipping it" >&2
  fi
fi
LLM_KEY=sk-kw-bench-litellm-master
PK_BODY='{"model":"claude-bench","max_tokens":16,"messages":[{"role":"user","content":"Say hello."}]}'
if [ -x "$PEERS_DIR/litellm-venv/bin/litellm" ]; then
  mkdir -p "$WORK/litellm"
  cat > "$WORK/litellm/config.yaml" <<EOF
model_list:
  - model_name: claude
    litellm_params:
      model: anthropic/claude-bench
      api_base: http://127.0.0.1:$UP
      api_key: sk-ant-bench-peer-0001
general_settings:
  master_key: $LLM_KEY
litellm_settings:
  telemetry: false
EOF
  (cd "$WORK/litellm" && LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR exec taskset -c $PROXY_CPU \
    "$PEERS_DIR/litellm-venv/bin/litellm" --config config.yaml --host 127.0.0.1 --port $LLM --num_workers 1 \
    >"$WORK/litellm/out.log" 2>&1) & PIDS+=($!)
  LLM_PID=$!
  PEER_TARGETS="$PEER_TARGETS litellm"
fi
if [ -f "$PORTKEY_JS" ]; then
  (cd "$(dirname "$PORTKEY_JS")/.." && NODE_ENV=production exec taskset -c $PROXY_CPU node build/start-server.js --port=$PKY --headless \
    >"$WORK/portkey.log" 2>&1) & PIDS+=($!)
  PKY_PID=$!
  PEER_TARGETS="$PEER_TARGETS portkey"
fi
cat > "$WORK/litellm.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer $LLM_KEY"
wrk.headers["anthropic-version"] = "2023-06-01"
EOF
cat > "$WORK/portkey.lua" <<EOF
wrk.method = "POST"
wrk.body = '$PK_BODY'
wrk.headers["content-type"] = "application/json"
wrk.headers["x-api-key"] = "sk-ant-bench-peer-0001"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-portkey-provider"] = "anthropic"
wrk.headers["x-portkey-custom-host"] = "http://127.0.0.1:$UP/v1"
EOF
ready_peers=""
for t in $PEER_TARGETS; do
  case $t in
    litellm) port=$LLM; lua=litellm.lua; body=$BODY ;;
    portkey) port=$PKY; lua=portkey.lua; body=$PK_BODY ;;
  esac
  ok=""
  for _ in $(seq 1 600); do  # LiteLLM takes tens of seconds to start on a loaded machine
    code=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "http://127.0.0.1:$port/v1/messages" -X POST \
      -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' \
      -H "authorization: Bearer $LLM_KEY" -H 'x-api-key: sk-ant-bench-peer-0001' \
      -H 'x-portkey-provider: anthropic' -H "x-portkey-custom-host: http://127.0.0.1:$UP/v1" \
      -d "$body" || true)
    [ "$code" = 200 ] && { ok=1; break; }
    sleep 0.2
  done
  if [ -n "$ok" ]; then
    ready_peers="$ready_peers $t"
    taskset -c $LOAD_CPU wrk -t1 -c16 -d2s -s "$WORK/$lua" "http://127.0.0.1:$port/v1/messages" >/dev/null
  else
    echo "peers: $t never answered 200 on 127.0.0.1:$port; skipping it" >&2
  fi
done
LLM_IDLE=0; PKY_IDLE=0
if [[ " $ready_peers " == *" litellm "* ]]; then LLM_IDLE=$(rss_kb $LLM_PID); fi
if [[ " $ready_peers " == *" portkey "* ]]; then PKY_IDLE=$(rss_kb $PKY_PID); fi
echo "round,concurrency,target,rps,p50_us,p99_us,cpu_ms_per_1k,errors" > "$OUT/peers.csv"
for round in $(seq 1 "$ROUNDS"); do
  for c in $CONCURRENCY; do
    for target in direct nginx keyward $ready_peers; do
      lua=post.lua
      case $target in
        direct) url="http://127.0.0.1:$UP/v1/messages"; pid="" ;;
        nginx) url="http://127.0.0.1:$NGX/v1/messages"; pid=$NGX_WORKER ;;
        keyward) url="http://127.0.0.1:$KWP/v1/messages"; pid=$KW_PID ;;
        litellm) url="http://127.0.0.1:$LLM/v1/messages"; pid=$LLM_PID; lua=litellm.lua ;;
        portkey) url="http://127.0.0.1:$PKY/v1/messages"; pid=$PKY_PID; lua=portkey.lua ;;
      esac
      t0=0; [ -n "$pid" ] && t0=$(cpu_ticks "$pid")
      res=$(taskset -c $LOAD_CPU wrk -t1 -c"$c" -d"${SECONDS_EACH}s" --latency -s "$WORK/$lua" "$url")
      t1=0; [ -n "$pid" ] && t1=$(cpu_ticks "$pid")
      rps=$(echo "$res" | awk '/Requests\/sec/ {print $2}')
      total=$(echo "$res" | awk '/requests in/ {print $1}')
      p50=$(to_us "$(echo "$res" | awk '$1 == "50%" {print $2}')")
      p99=$(to_us "$(echo "$res" | awk '$1 == "99%" {print $2}')")
      errs=$(echo "$res" | awk '/Non-2xx/ {n += $4} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}')
      cpu=$(awk -v a="$t0" -v b="$t1" -v n="$total" -v hz="$TICK" 'BEGIN { if (n > 0 && b > a) printf "%.2f", (b - a) * 1000 / hz / n * 1000; else print "" }')
      echo "$round,$c,$target,$rps,$p50,$p99,$cpu,$errs" | tee -a "$OUT/peers.csv"
    done
  done
done
LLM_RSS=0; PKY_RSS=0
if [[ " $ready_peers " == *" litellm "* ]]; then LLM_RSS=$(hwm_kb $LLM_PID); fi
if [[ " $ready_peers " == *" portkey "* ]]; then PKY_RSS=$(hwm_kb $PKY_PID); fi
LLM_VER=$("$PEERS_DIR/litellm-venv/bin/pip" show litellm 2>/dev/null | awk '/^Version/ {print $2}' || true)
PKY_VER=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['version'])" "$(dirname "$PORTKEY_JS")/../package.json" 2>/dev/null || true)
cat > "$OUT/peers.json" <<EOF
{"measured": "$(echo $ready_peers)", "litellm_version": "${LLM_VER:-}", "portkey_version": "${PKY_VER:-}", "node": "$(node --version 2>/dev/null || true)",
 "litellm_idle_rss_kb": $LLM_IDLE, "litellm_peak_rss_kb": $LLM_RSS, "portkey_idle_rss_kb": $PKY_IDLE, "portkey_peak_rss_kb": $PKY_RSS,
 "keyward_peak_rss_kb": $(hwm_kb $KW_PID)}
EOF
cat "$OUT/peers.json"
if [ -n "${LLM_PID:-}" ]; then kill "$LLM_PID" 2>/dev/null || true; fi
if [ -n "${PKY_PID:-}" ]; then kill "$PKY_PID" 2>/dev/null || true; fi
mark peers
fi

# Instructions per request: callgrind on a single-threaded gateway, 200 and 1,200
# requests; the difference over 1,000 requests cancels start-up and shutdown.
kill $KW_PID; wait $KW_PID 2>/dev/null || true
if part callgrind; then
# callgrind_ir OUT N PORT CMD…: runs CMD (listening on PORT) under callgrind while N
# sequential requests go through it; prints its instruction count.
callgrind_ir() {
  local out=$1 n=$2 port=$3
  shift 3
  (cd "$WORK/kw" && KEYWARD_LOG=warn TOKIO_WORKER_THREADS=1 exec valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >/dev/null 2>"$out.log") &
  local pid=$!
  for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  python3 "$ROOT/bench/requests.py" "http://127.0.0.1:$port/v1/messages" "$n" "$KW_BENCH_KEY"
  kill -TERM $pid; wait $pid 2>/dev/null || true
  awk '/^summary:/ {print $2}' "$out"
}
keyward_ir() {
  sed "s/^listen = .*/listen = \"127.0.0.1:$2\"/" "$WORK/kw/keyward.toml" > "$WORK/kw/cg.toml"
  callgrind_ir "$WORK/cg.$1" "$1" "$2" "$KW" serve --config cg.toml
}
IR_A=$(keyward_ir 200 18485)
IR_B=$(keyward_ir 1200 18486)
# The floor the same way: the bare hyper proxy, one worker, the same upstream.
FL_A=$(callgrind_ir "$WORK/cgf.200" 200 18497 "$BARE" 127.0.0.1:18497 "http://127.0.0.1:$UP" hyper)
FL_B=$(callgrind_ir "$WORK/cgf.1200" 1200 18498 "$BARE" 127.0.0.1:18498 "http://127.0.0.1:$UP" hyper)
echo "{\"ir_200\": $IR_A, \"ir_1200\": $IR_B, \"ir_per_request\": $(( (IR_B - IR_A) / 1000 )), \"floor_ir_per_request\": $(( (FL_B - FL_A) / 1000 ))}" | tee "$OUT/callgrind.json"
python3 "$ROOT/bench/callgrind_split.py" "$WORK/cg.200" "$WORK/cg.1200" "$WORK/cgf.200" "$WORK/cgf.1200" > "$OUT/callgrind_split.json"
mark callgrind
fi

# Scale: 10,000 streams, 200 routes × 2,000 credentials, and the soak when SOAK_MINUTES
# is set (bench/scale.sh: its own processes and ports). The processes above stop first.
cleanup
PIDS=()
WORK=$(mktemp -d /tmp/keyward-bench.XXXXXX)
if part scale; then
  KW_SKIP_BUILD=1 SOAK_MINUTES=${SOAK_MINUTES:-0} bash "$ROOT/bench/scale.sh"
  mark scale "STREAMS=${STREAMS:-10000} SOAK_MINUTES=${SOAK_MINUTES:-0}"
fi

python3 "$ROOT/bench/report.py" "$OUT" > "$ROOT/docs/benchmarks.md"
echo "wrote docs/benchmarks.md"
