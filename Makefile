# The two fresh-machine commands of README.md: `make example` and `make test`.
# Both install what they need first (scripts/setup.sh, idempotent).
.PHONY: setup example example-offline example-redis test lint test-explore
SHELL := /bin/bash
VENV := .venv

setup:
	@bash scripts/setup.sh

example: setup
	bash scripts/example.sh

# Offline batch labeling, no service: the CLI straight on the engine.
example-offline: setup
	mkdir -p out
	$(VENV)/bin/cai-judge label examples/pairs.jsonl -o out/example-offline-labels.jsonl \
		--constitution harmless --principles 4

# A batch job on Redis: redis-server and the service on it, a job over examples/pairs.jsonl.
example-redis: setup
	bash scripts/example-redis.sh

lint: setup
	$(VENV)/bin/ruff check service tests bench
	$(VENV)/bin/ruff format --check service tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint docker/Dockerfile
	$(VENV)/bin/kubernetes-validate --strict k8s/deployment.yaml k8s/service.yaml k8s/configmap.yaml
	promtool check rules k8s/prometheus-rules.yaml

test: lint
	$(VENV)/bin/python -m pytest -ra

# Property and fuzz tests with fresh random seeds (the test command runs them derandomized,
# so a commit always gives the same result). A failure prints a reproduce blob.
test-explore: setup
	HYPOTHESIS_PROFILE=explore $(VENV)/bin/python -m pytest -ra \
		tests/test_label_math.py tests/test_eval_protocols.py \
		tests/test_server.py::test_schemathesis_finds_no_server_errors
