#!/usr/bin/env bash
# A batch job on Redis (`make example-redis`): start redis-server on a free loopback port
# (in-memory, thrown away afterwards) and the service on it, submit examples/pairs.jsonl
# as an NDJSON job, follow its progress, and print the results in input order.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${CAI_JUDGE_PORT:-8000}
REDIS_PORT=${REDIS_PORT:-$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
mkdir -p out/redis
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir out/redis > out/redis/redis.log 2>&1 &
redis=$!
export CAI_JUDGE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
.venv/bin/cai-judge serve --port "$PORT" > out/service-redis.log 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true; kill $redis 2>/dev/null || true' EXIT

echo "redis on 127.0.0.1:$REDIS_PORT; starting the service on 127.0.0.1:$PORT (log: out/service-redis.log) ..."
for _ in $(seq 1 300); do
    if ! kill -0 $server 2>/dev/null; then
        echo "the service exited:"; tail -20 out/service-redis.log; exit 1
    fi
    if curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null; then break; fi
    sleep 1
done
curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null || { echo "not ready in 300 s"; exit 1; }

URL="http://127.0.0.1:$PORT"
job=$(curl -fsS -X POST "$URL/v1/jobs?constitution=harmless&principles=4" \
    -H 'Content-Type: application/x-ndjson' -H 'Idempotency-Key: example-redis' \
    --data-binary @examples/pairs.jsonl)
id=$(echo "$job" | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["id"])')
echo "job $id submitted"
for _ in $(seq 1 600); do
    status=$(curl -fsS "$URL/v1/jobs/$id")
    echo "$status" | .venv/bin/python -c 'import json, sys; s = json.load(sys.stdin); print("  {state}: {done} done, {failed} failed of {total}, {pairs_per_s} pairs/s, eta {eta_s} s".format(**s))'
    case "$status" in *'"state":"succeeded"'*|*'"state":"failed"'*|*'"state":"cancelled"'*) break;; esac
    sleep 1
done
curl -fsS "$URL/v1/jobs/$id/results?cursor=0&limit=10000" -o out/example-redis-results.jsonl
.venv/bin/python - <<'PY'
import json
for line in open("out/example-redis-results.jsonl"):
    r = json.loads(line)
    if "error" in r:
        print(f"{r.get('id')}: error {r['error']['type']}: {r['error']['message']}")
    else:
        print(f"{r['id']}: prefers {r['preferred']}  margin {r['margin']:+.3f}  p_a {r['p_a']:.3f}")
PY
echo "results: out/example-redis-results.jsonl   metrics: curl $URL/metrics"
