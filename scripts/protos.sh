#!/usr/bin/env bash
# Generate the gRPC Python stubs from protos/ (grpcio-tools, pinned in pyproject's dev extra)
# into service/cai_judge/grpc/gen/, or, with --check, fail if the committed stubs are stale.
#
# The proto is mapped onto the virtual path cai_judge/grpc/gen/ so that the generated modules
# import each other as `cai_judge.grpc.gen.v1...`: protos/cai_judge/v1/judge.proto would
# otherwise generate `from cai_judge.v1 import ...`, a module our package does not have.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
GEN=service/cai_judge/grpc/gen/v1
generate() {
    "$PYTHON" -m grpc_tools.protoc -Icai_judge/grpc/gen=protos/cai_judge \
        --python_out="$1" --pyi_out="$1" --grpc_python_out="$1" protos/cai_judge/v1/judge.proto
}
if [[ "${1:-}" == "--check" ]]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    generate "$tmp"
    for file in judge_pb2.py judge_pb2.pyi judge_pb2_grpc.py; do
        if ! diff -u "$GEN/$file" "$tmp/cai_judge/grpc/gen/v1/$file" >/dev/null; then
            echo "gRPC stubs are stale: $GEN/$file differs from protos/; run \`make protos\`" >&2
            exit 1
        fi
    done
    echo "gRPC stubs are current"
else
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    generate "$tmp"
    mkdir -p "$GEN"
    cp "$tmp"/cai_judge/grpc/gen/v1/judge_pb2{.py,.pyi,_grpc.py} "$GEN/"
    echo "wrote $GEN/judge_pb2.py, judge_pb2.pyi, judge_pb2_grpc.py"
fi
