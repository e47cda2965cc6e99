# The two fresh-machine commands of README.md: `make example` and `make test`.
# Both install what they need first (scripts/setup.sh, idempotent).
.PHONY: setup example example-offline example-redis test test-fast lint test-explore protos
SHELL := /bin/bash
VENV := .venv
K8S_OVERLAYS := cpu gpu fleet
# The rule groups of every PrometheusRule in a rendered manifest, as one rules file.
export PROMETHEUS_RULES := import sys, yaml; \
	docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "PrometheusRule"]; \
	yaml.safe_dump({"groups": [g for d in docs for g in d["spec"]["groups"]]}, sys.stdout)

setup:
	@bash scripts/setup.sh

example: setup
	bash scripts/example.sh

# Offline batch labeling, no service: the CLI straight on the engine.
example-offline: setup
	mkdir -p out
	$(VENV)/bin/cai-judge label examples/pairs.jsonl -o out/example-offline-labels.jsonl \
		--constitution harmless --principles 4

# Regenerate the gRPC stubs (service/cai_judge/grpc/gen/) from protos/ after editing a .proto.
protos: setup
	bash scripts/protos.sh

# A batch job on Redis: redis-server and the service on it, a job over examples/pairs.jsonl.
example-redis: setup
	bash scripts/example-redis.sh

lint: setup
	bash scripts/protos.sh --check
	$(VENV)/bin/ruff check service tests bench clients/python examples
	$(VENV)/bin/ruff format --check service tests bench clients/python examples
	$(VENV)/bin/mypy
	$(VENV)/bin/hadolint docker/Dockerfile.*
	$(VENV)/bin/python scripts/freeze_constraints.py --check
	@# The release workflow that builds and pushes the images the manifests pull.
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	@# Every overlay as the cluster gets it: rendered, schema-checked, its alert rules
	@# through promtool (the Operator's PrometheusRule `spec` is a plain rules file).
	@# The API-key files are kept out of git: render-k8s.sh fills absent ones with a
	@# digest that matches no key. The base alone must hold no Secret (a re-apply would
	@# reset the real keys).
	bash scripts/render-k8s.sh build/k8s $(K8S_OVERLAYS)
	@! $(VENV)/bin/kubectl kustomize k8s/base | grep -q '^kind: Secret$$'
	@set -e; for overlay in $(K8S_OVERLAYS); do \
		echo "k8s/overlays/$$overlay"; \
		$(VENV)/bin/kubernetes-validate --strict --quiet build/k8s/$$overlay.yaml; \
		$(VENV)/bin/python -c "$$PROMETHEUS_RULES" build/k8s/$$overlay.yaml > build/k8s/$$overlay-rules.yaml; \
		promtool check rules build/k8s/$$overlay-rules.yaml; \
	done
	promtool check rules docker/compose/alerts.yml
	@# The RayJob against KubeRay's CRD schema (kubernetes-validate takes no CRD).
	@# Rendered as `kubectl apply -k k8s/ray` applies it (namespace, NetworkPolicy).
	$(VENV)/bin/kubectl kustomize k8s/ray > build/k8s/ray.yaml
	$(VENV)/bin/python scripts/validate_rayjob.py build/k8s/ray.yaml
	@# Every manifest docs/deploy.md applies, as a reader following it gets it.
	@set -e; $(VENV)/bin/python scripts/render_deploy_docs.py build/k8s/docs > build/k8s/docs.txt; \
	while read -r file kind; do \
		echo "$$file"; \
		if [ "$$kind" = rayjob ]; then $(VENV)/bin/python scripts/validate_rayjob.py "$$file"; \
		else $(VENV)/bin/kubernetes-validate --strict --quiet "$$file"; fi; \
	done < build/k8s/docs.txt

# The whole suite: the fast tier on three workers, then the engine tier in one session (one
# vLLM engine per model, DESIGN.md §8). Both run whatever the first gives; either failing
# fails the target.
test: lint
	$(VENV)/bin/python -m pytest -ra $(FAST_TIER); fast=$$?; \
	$(VENV)/bin/python -m pytest -ra -m engine; engine=$$?; \
	exit $$(( fast != 0 ? fast : engine ))

# Everything but the tests that need the real engine or real servers (tests/e2e/ and the
# tests marked `engine`: tests/conftest.py): the logic, on the fake engine, under two
# minutes on two cores. Three pytest-xdist workers, each its own session (its own
# redis-server and ports): the tests wait on sockets, sleeps and subprocesses about a third
# of the time, so a third worker fills the cores (measured on one tree: 2 workers 1:50,
# 3 1:35, 4 1:57). `worksteal` so the load tests of tests/api/ do not end on one worker.
# tests/e2e/ is all `engine`, and not even collected. No linters.
FAST_TIER := -m "not engine" -n 3 --dist worksteal --ignore=tests/e2e
test-fast: setup
	$(VENV)/bin/python -m pytest -ra $(FAST_TIER)

# Property and fuzz tests with fresh random seeds (the test command runs them derandomized,
# so a commit always gives the same result). A failure prints a reproduce blob.
test-explore: setup
	HYPOTHESIS_PROFILE=explore $(VENV)/bin/python -m pytest -ra \
		tests/labeling/test_label_math.py tests/evaluation/test_eval_protocols.py \
		tests/e2e/test_server.py::test_schemathesis_finds_no_server_errors
