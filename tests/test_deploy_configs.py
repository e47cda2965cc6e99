"""What the deployment files must agree on, beyond schemas (`make lint` validates those).

Every kustomize overlay is rendered with `kubectl kustomize` and read as the cluster would
get it: the ConfigMap's variables are real settings, the grace period covers the drain,
Services and monitors select what exists, the fleet's judges reach the headless vLLM
Service, containers run non-root on a read-only root, and the compose alerts are the
Kubernetes alerts. No cluster is needed (none can run here).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from cai_judge.services.errors import Unauthenticated
from cai_judge.services.security import Authenticator, hash_api_key
from cai_judge.settings import Settings
from tests.test_server import free_port, start_server, stop

ROOT = Path(__file__).resolve().parents[1]
OVERLAYS = ("cpu", "gpu", "fleet")

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl is installed by scripts/setup.sh"
)


def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(ROOT / "k8s" / "overlays" / overlay)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def judge_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec = one(docs, "Deployment", "cai-judge")["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == "judge")


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def test_configmap_variables_are_real_settings(
    overlay: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
):
    _, docs = overlay
    data = one(docs, "ConfigMap", "cai-judge")["data"]
    for key, value in data.items():
        assert key.startswith("CAI_JUDGE_"), key
        assert key.removeprefix("CAI_JUDGE_").lower() in Settings.model_fields, key
        monkeypatch.setenv(key, value)
    Settings()  # every value parses and passes its bounds


def test_grace_period_covers_the_drain(overlay: tuple[str, list[dict[str, Any]]]):
    _, docs = overlay
    data = one(docs, "ConfigMap", "cai-judge")["data"]
    pod = one(docs, "Deployment", "cai-judge")["spec"]["template"]["spec"]
    pre_stop = int(judge_container(docs)["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = float(data["CAI_JUDGE_DRAIN_TIMEOUT_S"])
    # preStop, the drain, then ~10 s to answer the cut requests and stop the engine.
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 10


def test_pods_run_non_root_on_a_read_only_root(overlay: tuple[str, list[dict[str, Any]]]):
    _, docs = overlay
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts  # the one writable place a read-only root needs


def test_selectors_find_what_exists(overlay: tuple[str, list[dict[str, Any]]]):
    _, docs = overlay
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] == "Deployment"]
    services = [d for d in docs if d["kind"] == "Service"]
    for service in services:
        assert any(matches(service["spec"]["selector"], p) for p in pods), service["metadata"]
    for budget in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        assert any(matches(budget["spec"]["selector"]["matchLabels"], p) for p in pods)
    for monitor in (d for d in docs if d["kind"] == "ServiceMonitor"):
        selected = [
            s for s in services
            if matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
        ]  # fmt: skip
        assert len(selected) == 1, monitor["metadata"]["name"]
        ports = {p["name"] for p in selected[0]["spec"]["ports"]}
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= ports
    judge_service = one(docs, "Service", "cai-judge")
    assert not any(
        matches(judge_service["spec"]["selector"], p)
        for p in pods
        if p.get("app.kubernetes.io/component") != "judge"
    ), "the judge Service must not send clients to vLLM pods"


def test_api_key_secret_holds_what_the_pods_read(
    overlay: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
):
    _, docs = overlay
    secret = one(docs, "Secret", "cai-judge-api-keys")
    env = {e["name"]: e for e in judge_container(docs)["env"]}
    for name in ("CAI_JUDGE_API_KEY_HASHES", "CAI_JUDGE_ADMIN_KEY_HASHES"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "cai-judge-api-keys"
        assert ref["key"] in secret["stringData"]
    # The shipped placeholder is a valid digest that no key matches: deny all until set.
    monkeypatch.setenv("CAI_JUDGE_API_KEY_HASHES", secret["stringData"]["hashes"])
    monkeypatch.setenv("CAI_JUDGE_ADMIN_KEY_HASHES", secret["stringData"]["admin-hashes"])
    settings = Settings()
    assert settings.api_key_hashes
    authenticator = Authenticator(settings.api_key_hashes, settings.admin_key_hashes)
    with pytest.raises(Unauthenticated):
        authenticator.authenticate("any key", "127.0.0.1")


def test_gpu_only_where_an_engine_runs_on_it():
    judge_gpus = {
        name: judge_container(render(name))["resources"]["limits"].get("nvidia.com/gpu")
        for name in OVERLAYS
    }
    assert judge_gpus == {"cpu": None, "gpu": "1", "fleet": None}
    vllm = one(render("fleet"), "Deployment", "cai-judge-vllm")
    assert (
        vllm["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
        == "1"
    )


def test_fleet_judges_reach_every_vllm_pod():
    docs = render("fleet")
    data = one(docs, "ConfigMap", "cai-judge")["data"]
    assert data["CAI_JUDGE_ENGINE"] == "remote"
    assert data["CAI_JUDGE_VLLM_DNS_DISCOVERY"] == "true"
    service = one(docs, "Service", "cai-judge-vllm")
    assert service["spec"]["clusterIP"] == "None"  # headless: DNS lists every pod
    url = data["CAI_JUDGE_VLLM_URLS"]
    assert url == f"http://cai-judge-vllm:{service['spec']['ports'][0]['port']}"
    args = one(docs, "Deployment", "cai-judge-vllm")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    flags = dict(a.removeprefix("--").split("=", 1) for a in args if "=" in a)
    assert int(flags["max-model-len"]) >= int(data["CAI_JUDGE_MAX_MODEL_LEN"])
    assert "--enable-prefix-caching" in args
    # The judges may talk to vLLM; nothing else in the namespace may.
    policy = one(docs, "NetworkPolicy", "cai-judge-vllm")
    sources = policy["spec"]["ingress"][0]["from"]
    assert {"app.kubernetes.io/name": "cai-judge", "app.kubernetes.io/component": "judge"} in [
        s.get("podSelector", {}).get("matchLabels") for s in sources
    ]
    one(docs, "NetworkPolicy", "cai-judge-to-vllm")


def test_compose_alerts_are_the_kubernetes_alerts():
    rule = yaml.safe_load((ROOT / "k8s/base/prometheus-rules.yaml").read_text())
    compose = yaml.safe_load((ROOT / "docker/compose/alerts.yml").read_text())
    assert compose == rule["spec"]
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
    for needed in (
        "CaiJudgeNoProgress", "CaiJudgeHighRejectionRate", "CaiJudgeLowAnswerMass",
        "CaiJudgeRedisErrors",
    ):  # fmt: skip
        assert needed in alerts


def test_compose_mounts_files_that_exist():
    compose = yaml.safe_load((ROOT / "docker/compose.yaml").read_text())
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / "docker" / source).exists(), source
    grafana = compose["services"]["grafana"]["volumes"]
    assert any(v.startswith("./grafana-dashboard.json:") for v in grafana)


@pytest.mark.engine
def test_metrics_port_answers_prometheus_without_a_key_and_the_api_still_refuses(
    tiny_model_dir: Path, tmp_path: Path
):
    """Prometheus sends no key: with keys set, a real `cai-judge serve` answers scrapes on
    the metrics port, and the API port (the one the Service publishes) still refuses."""
    metrics_port = free_port()
    server = start_server(
        tiny_model_dir,
        tmp_path / "server.log",
        api_key_hashes=json.dumps([hash_api_key("a real key")]),
        metrics_port=str(metrics_port),
    )
    try:
        scrape = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert scrape.status_code == 200
        assert "cai_judge_queue_depth" in scrape.text
        assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 401
        assert httpx.post(f"{server.url}/v1/labels", json={}, timeout=10).status_code == 401
        keyed = httpx.get(f"{server.url}/metrics", headers={"X-API-Key": "a real key"}, timeout=10)
        assert keyed.status_code == 200
    finally:
        stop(server)
