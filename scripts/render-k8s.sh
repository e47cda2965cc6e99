#!/usr/bin/env bash
# Renders k8s overlays as `kubectl apply -k` would get them: scripts/render-k8s.sh OUT NAME...
# writes OUT/NAME.yaml for each overlay. It renders a copy of k8s/ in which the API-key
# files, kept out of git (k8s/components/api-keys), are filled with a digest that matches
# no key where they are absent, and the Redis password file (k8s/components/redis-secret)
# with a placeholder, so CI renders without anyone's secrets. `make lint` and
# tests/deploy/test_deploy_configs.py use it.
set -euo pipefail
cd "$(dirname "$0")/.."
# The venv's kubectl (kustomize v5, the dev extra) before any older one on the machine.
export PATH="$PWD/.venv/bin:$PATH"
out=$1
shift
mkdir -p "$out"
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r k8s "$src/"
keys=$src/k8s/components/api-keys
[ -f "$keys/hashes.json" ] || printf '["%064d"]\n' 0 > "$keys/hashes.json"
[ -f "$keys/admin-hashes.json" ] || echo '[]' > "$keys/admin-hashes.json"
# Likewise the Redis password file (components/redis-secret), with a placeholder.
redis_env=$src/k8s/components/redis-secret/redis.env
[ -f "$redis_env" ] || printf '%s
' password=placeholder \
    url=redis://:placeholder@cai-judge-redis:6379/0 \
    cache-url=redis://:placeholder@cai-judge-redis-cache:6379/0 > "$redis_env"
for overlay in "$@"; do
    kubectl kustomize "$src/k8s/overlays/$overlay" > "$out/$overlay.yaml"
done
