#!/usr/bin/env bash
# Instructions per request (callgrind) for an Anthropic caller served natively (an
# Anthropic upstream) or translated (an OpenAI Chat upstream): what translation costs.
#   bench/translation_cost.sh KEYWARD_BINARY WORKDIR PORTBASE native|cross
# A fixed upstream (nginx), one route over 100 credentials (10 disabled), 200 then 1,200
# sequential requests on one keep-alive connection; the difference over 1,000 requests
# cancels start-up and shutdown. Needs nginx, valgrind, python3; listens on 127.0.0.1.
set -euo pipefail
KW=$1; OUT=$2; PB=$3; MODE=$4
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT/up" "$OUT/kw/keys"
UP=$PB
MSG='{"id":"msg_bench","type":"message","role":"assistant","model":"claude-bench","content":[{"type":"text","text":"Hello from the fixed upstream."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":8}}'
CHAT='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-bench","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the fixed upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":8,"total_tokens":20}}'
cat > "$OUT/up/nginx.conf" <<NG
worker_processes 1;
daemon off;
error_log $OUT/up/error.log warn;
pid $OUT/up/nginx.pid;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $OUT/up; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP;
    location /v1/messages { default_type application/json; return 200 '$MSG'; }
    location /v1/chat/completions { default_type application/json; return 200 '$CHAT'; } } }
NG
nginx -c "$OUT/up/nginx.conf" & NPID=$!
trap 'kill $NPID 2>/dev/null || true' EXIT
if [ "$MODE" = cross ]; then PROV=openai; BASE="http://127.0.0.1:$UP/v1"; KEYP=sk-proj-bench; MODEL=gpt-bench; else PROV=anthropic; BASE="http://127.0.0.1:$UP"; KEYP=sk-ant-bench; MODEL=claude-bench; fi
{
  echo "listen = \"127.0.0.1:$((PB+1))\""
  echo "state = \"state.db\""
  echo "[[gateway_keys]]"; echo 'name = "bench"'; echo 'key = "env:KW_BENCH_KEY"'
  echo "[endpoints.fixed]"; echo "provider = \"$PROV\""; echo "base_url = \"$BASE\""
  for i in $(seq 1 100); do printf "$KEYP-%04d-abcdefgh\n" "$i" > "$OUT/kw/keys/k$i"; printf '[[credentials]]\nid = "k%d"\nendpoint = "fixed"\nsecret = "file:keys/k%d"\n' "$i" "$i"; done
  all=$(seq 1 100 | sed 's/^/"k/; s/$/"/' | paste -sd, -)
  echo "[routes.claude]"; echo "targets = [{ endpoint = \"fixed\", model = \"$MODEL\", credentials = [$all] }]"
} > "$OUT/kw/keyward.toml"
export KW_BENCH_KEY=kw-bench-gateway-key
for i in $(seq 1 10); do (cd "$OUT/kw" && "$KW" disable "k$i" --reason "bench" --config keyward.toml >/dev/null); done
run() {
  local n=$1 port=$2
  sed "s/^listen = .*/listen = \"127.0.0.1:$port\"/" "$OUT/kw/keyward.toml" > "$OUT/kw/cg.toml"
  (cd "$OUT/kw" && KEYWARD_LOG=warn TOKIO_WORKER_THREADS=1 exec valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.$n" "$KW" serve --config cg.toml >/dev/null 2>"$OUT/cg.$n.log") &
  local pid=$!
  for _ in $(seq 1 600); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  python3 "$ROOT/bench/requests.py" "http://127.0.0.1:$port/v1/messages" "$n" "$KW_BENCH_KEY" >/dev/null
  kill -TERM $pid; wait $pid 2>/dev/null || true
  awk '/^summary:/ {print $2}' "$OUT/cg.$n"
}
A=$(run 200 $((PB+2))); B=$(run 1200 $((PB+3)))
echo "$MODE ir_per_request $(( (B - A) / 1000 ))" | tee "$OUT/result.txt"
