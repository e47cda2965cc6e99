"""Monitoring a stock Prometheus picks up, and autoscaling on the right signals (issue 29):
kube-prometheus-stack selects ServiceMonitors and PrometheusRules by its Helm release's
label, every custom metric an HPA names has a prometheus-adapter rule, the fleet's judges
scale on CPU and its vLLM servers on their own waiting requests."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_deploy_configs import KUBECTL, ROOT, kustomize, render

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is installed by scripts/setup.sh")

ADAPTER_RULES = ROOT / "k8s/monitoring/prometheus-adapter-rules.yaml"
MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}


@pytest.mark.parametrize("overlay", ["cpu", "gpu", "fleet"])
def test_kube_prometheus_stacks_default_selectors_match(overlay: str):
    monitoring = [d for d in render(overlay) if d["kind"] in MONITORING_KINDS]
    assert monitoring
    for document in monitoring:
        # The chart's default serviceMonitorSelector / ruleSelector: release=<release name>.
        assert document["metadata"]["labels"]["release"] == "kube-prometheus-stack", document


def test_the_release_label_is_set_by_one_documented_patch(tmp_path: Path):
    text = (ROOT / "docs/deploy.md").read_text()
    patch = text.split("<!-- monitoring-release-patch -->")[1].split("```yaml\n")[1].split("```")[0]
    shutil.copytree(ROOT / "k8s", tmp_path / "k8s")
    keys = tmp_path / "k8s/components/api-keys"
    (keys / "hashes.json").write_text('["' + "0" * 64 + '"]')
    (keys / "admin-hashes.json").write_text("[]")
    (tmp_path / "k8s/components/redis-secret/redis.env").write_text(
        "password=x\nurl=u\ncache-url=c\n"
    )
    mine = tmp_path / "mine"
    mine.mkdir()
    overlay = yaml.safe_load(patch)
    overlay["resources"] = ["../k8s/overlays/fleet"]
    (mine / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    monitoring = [d for d in kustomize(mine) if d["kind"] in MONITORING_KINDS]
    assert len(monitoring) == 4
    assert {d["metadata"]["labels"]["release"] for d in monitoring} == {"prometheus"}


def _pods_metrics(docs: list[dict[str, Any]]) -> dict[str, str]:
    """HPA name -> the Pods metric it scales on ("cpu" for a CPU target)."""
    out = {}
    for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        (metric,) = hpa["spec"]["metrics"]
        if metric["type"] == "Pods":
            out[hpa["metadata"]["name"]] = metric["pods"]["metric"]["name"]
        else:
            out[hpa["metadata"]["name"]] = metric["resource"]["name"]
    return out


@pytest.mark.parametrize("overlay", ["cpu", "gpu", "fleet"])
def test_every_custom_metric_has_an_adapter_rule(overlay: str):
    rules = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]["custom"]
    served = {rule["name"]["as"]: rule for rule in rules}
    for metric in _pods_metrics(render(overlay)).values():
        if metric == "cpu":
            continue
        assert metric in served, f"no prometheus-adapter rule serves {metric}"
        rule = served[metric]
        assert {"namespace", "pod"} <= set(rule["resources"]["overrides"])


def test_the_fleet_scales_judges_on_cpu_and_vllm_on_its_waiting_requests():
    docs = render("fleet")
    assert _pods_metrics(docs) == {
        "cai-judge": "cpu",
        "cai-judge-vllm": "vllm_num_requests_waiting",
    }
    rules = yaml.safe_load(ADAPTER_RULES.read_text())["rules"]["custom"]
    (rule,) = [r for r in rules if r["name"]["as"] == "vllm_num_requests_waiting"]
    assert rule["seriesQuery"].startswith("vllm:num_requests_waiting{")
