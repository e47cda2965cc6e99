#!/usr/bin/env bash
# The main job on the embedded default: start the service (default model, no Redis),
# wait until it is ready, label examples/pairs.jsonl through it, then stop it (SIGTERM
# drains). Labels land in out/example-labels.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${CAI_JUDGE_PORT:-8000}
mkdir -p out
.venv/bin/cai-judge serve --port "$PORT" > out/service.log 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT

echo "starting the service on 127.0.0.1:$PORT (log: out/service.log) ..."
for _ in $(seq 1 300); do
    if ! kill -0 $server 2>/dev/null; then
        echo "the service exited:"; tail -20 out/service.log; exit 1
    fi
    if curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null; then break; fi
    sleep 1
done
curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null || { echo "not ready in 300 s"; exit 1; }

.venv/bin/python examples/label_via_service.py examples/pairs.jsonl -o out/example-labels.jsonl \
    --url "http://127.0.0.1:$PORT" --constitution harmless --principles 4
echo "labels: out/example-labels.jsonl   metrics: curl 127.0.0.1:$PORT/metrics"
