#!/usr/bin/env bash
# Runs failoverbench (the public failoverbench/failoverbench repository: its own wall and runner)
# against a locally started Keyward with its default timeouts and policies: each
# scenario's model is a route to the wall with `fb-ok` as its fallback (S14:
# `fb-ok-noprefill`; S12 also has a larger-context route). Prints the scorecard lines.
#
#   FB_DIR=/path/to/failoverbench-checkout PYTHON=/path/to/python-with-httpx-and-pyyaml \
#     bench/failoverbench.sh [full|fast] [S01,S08,...]
#
# Needs a release build: cargo build --release -p keyward (CARGO_TARGET_DIR honoured).
set -euo pipefail
PROFILE=${1:-full}
ONLY=${2:-}
FB_DIR=${FB_DIR:?set FB_DIR to a failoverbench checkout}
PYTHON=${PYTHON:-python3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
KW=${KW:-${CARGO_TARGET_DIR:-$ROOT/target}/release/keyward}
WALL_PORT=${WALL_PORT:-8401}
KW_PORT=${KW_PORT:-18401}
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

export KEYWARD_GATEWAY_KEY=fb-gateway-key-0001
{
  echo "listen = \"127.0.0.1:$KW_PORT\""
  echo "state = \"$WORK/state.db\""
  echo '[[gateway_keys]]'
  echo 'name = "failoverbench"'
  echo 'key = "env:KEYWARD_GATEWAY_KEY"'
  # One endpoint and key per scenario, so one scenario's cooldowns and circuits do not
  # leak into the next; the fallbacks share theirs.
  for m in fb-ok fb-ok-noprefill fb-s01-429-retry-after fb-s02-429-persistent fb-s03-500-then-200 \
    fb-s04-503-persistent fb-s05-reset fb-s06-no-response fb-s07-slow-ttft fb-s08-stream-cut \
    fb-s09-stream-stall fb-s10-malformed-chunk fb-s11-no-done fb-s12-context-length \
    fb-s13-content-filter fb-s14-stream-cut fb-s15-flap fb-s16-503-persistent; do
    echo "[endpoints.\"$m\"]"
    echo 'provider = "openai"'
    echo "base_url = \"http://127.0.0.1:$WALL_PORT/v1\""
    echo '[[credentials]]'
    echo "id = \"$m\""
    echo "endpoint = \"$m\""
    echo "secret = \"env:FB_KEY_${m//-/_}\""
    export "FB_KEY_${m//-/_}=sk-failoverbench-$m"
  done
  for m in fb-ok fb-ok-noprefill; do
    echo "[routes.\"$m\"]"
    echo "targets = [{ endpoint = \"$m\", model = \"$m\", credentials = [\"$m\"] }]"
  done
  for m in fb-s01-429-retry-after fb-s02-429-persistent fb-s03-500-then-200 fb-s04-503-persistent \
    fb-s05-reset fb-s06-no-response fb-s07-slow-ttft fb-s08-stream-cut fb-s09-stream-stall \
    fb-s10-malformed-chunk fb-s11-no-done fb-s12-context-length fb-s13-content-filter \
    fb-s14-stream-cut fb-s15-flap fb-s16-503-persistent; do
    fb=fb-ok
    [[ $m == fb-s14-* ]] && fb=fb-ok-noprefill
    echo "[routes.\"$m\"]"
    echo "targets = [{ endpoint = \"$m\", model = \"$m\", credentials = [\"$m\"] }]"
    echo "fallbacks = [{ endpoint = \"$fb\", model = \"$fb\", credentials = [\"$fb\"] }]"
    [[ $m == fb-s12-* ]] && echo 'context_fallback = "fb-ok"'
  done
} >"$WORK/keyward.toml"

cat >"$WORK/keyward.yaml" <<YAML
name: keyward
label: Keyward (default config)
adapter: endpoint
params:
  base_url: http://127.0.0.1:$KW_PORT/v1
  api_key: $KEYWARD_GATEWAY_KEY
capabilities: {fallback: true, streaming: true}
YAML

(cd "$FB_DIR" && exec "$PYTHON" -m failoverbench.wall --port "$WALL_PORT" --profile "$PROFILE" 2>"$WORK/wall.log") &
PIDS+=($!)
KEYWARD_LOG=${KEYWARD_LOG:-info} "$KW" serve --config "$WORK/keyward.toml" >/dev/null 2>"$WORK/keyward.log" &
PIDS+=($!)
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$WALL_PORT/control/health" >/dev/null 2>&1 &&
    curl -s "http://127.0.0.1:$KW_PORT/" >/dev/null 2>&1 && break
  sleep 0.1
done
(cd "$FB_DIR" && "$PYTHON" -m failoverbench.runner --system "$WORK/keyward.yaml" --profile "$PROFILE" \
  --wall "http://127.0.0.1:$WALL_PORT" --out "$WORK/results" ${ONLY:+--only "$ONLY"})
cp "$WORK/results/$PROFILE/keyward.json" "${FB_RESULT:-/dev/null}" 2>/dev/null || true
cp "$WORK/keyward.log" "${KW_LOG_COPY:-/dev/null}" 2>/dev/null || true
"$PYTHON" - "$WORK/results/$PROFILE/keyward.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["summary"]
print(f"summary: pass {s['pass']}  partial {s['partial']}  safe {s['safe']}  fail {s['fail']}")
for r in d["scenarios"]:
    print(f"{r['id']} {r['verdict']:<8} {r['reason']}")
PY
