# The two fresh-machine commands of README.md: `make example` and `make test`.
# Both install what they need first (scripts/setup.sh, idempotent).
.PHONY: setup example test lint
SHELL := /bin/bash
VENV := .venv

setup:
	@bash scripts/setup.sh

example: setup
	mkdir -p out
	$(VENV)/bin/cai-judge label examples/pairs.jsonl -o out/example-labels.jsonl \
		--constitution harmless --principles 4
	@echo "labels: out/example-labels.jsonl"

lint: setup
	$(VENV)/bin/ruff check service tests bench
	$(VENV)/bin/ruff format --check service tests bench
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/python -m pytest -ra
