#!/usr/bin/env bash
# Writes the files the k8s overlays generate their Secrets from, which git never holds:
#   k8s/components/api-keys/hashes.json, admin-hashes.json   (API key digests)
#   k8s/components/redis-secret/redis.env                    (the Redis password and URLs)
# An existing file is kept (re-running changes nothing). A new API key and admin key are
# printed once, here: give them to the trainers and the admins; only their digests are
# written. Needs coreutils and openssl only. Usage: bash scripts/k8s-secrets.sh
set -euo pipefail
cd "$(dirname "$0")/.."
umask 077

digest() { printf %s "$1" | sha256sum | cut -d' ' -f1; }

keys=k8s/components/api-keys
if [ ! -f "$keys/hashes.json" ]; then
    key=$(openssl rand -hex 32)
    printf '["%s"]\n' "$(digest "$key")" > "$keys/hashes.json"
    echo "API key (give it to the trainers; it is not stored): $key"
else
    echo "$keys/hashes.json exists: kept"
fi
if [ ! -f "$keys/admin-hashes.json" ]; then
    admin=$(openssl rand -hex 32)
    printf '["%s"]\n' "$(digest "$admin")" > "$keys/admin-hashes.json"
    echo "admin key (may add constitutions; it is not stored): $admin"
else
    echo "$keys/admin-hashes.json exists: kept"
fi

env_file=k8s/components/redis-secret/redis.env
if [ ! -f "$env_file" ]; then
    # Hex: nothing to escape in a URL.
    password=$(openssl rand -hex 32)
    {
        echo "password=$password"
        echo "url=redis://:$password@cai-judge-redis:6379/0"
        echo "cache-url=redis://:$password@cai-judge-redis-cache:6379/0"
    } > "$env_file"
    echo "wrote $env_file"
else
    echo "$env_file exists: kept"
fi
