"""k8s/ray/ (the RayJob and its NetworkPolicy, rendered as `kubectl apply -k k8s/ray` gets
them): valid against KubeRay's CRD schema and what cai-judge needs of it, including what it
needs to start on the documented storage (issue 29), and the validator `make lint` runs
(scripts/validate_rayjob.py) refuses what it must."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import REPO_ROOT

# The venv's kubectl (kustomize v5, the dev extra), as scripts/render-k8s.sh uses it.
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is installed by scripts/setup.sh")


def _rayjob_validator() -> Any:
    spec = importlib.util.spec_from_file_location(
        "validate_rayjob", REPO_ROOT / "scripts" / "validate_rayjob.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rendered(tmp_path: Path, edit: tuple[str, str, str] | None = None) -> Path:
    """k8s/ray rendered; `edit` = (file, old, new) is applied to a copy first."""
    src = tmp_path / "src"
    shutil.copytree(REPO_ROOT / "k8s" / "ray", src, dirs_exist_ok=True)
    if edit is not None:
        file, old, new = edit
        text = (src / file).read_text()
        assert old in text, old
        (src / file).write_text(text.replace(old, new, 1))
    assert KUBECTL is not None
    out = tmp_path / "ray.yaml"
    rendered = subprocess.run(
        [KUBECTL, "kustomize", str(src)], capture_output=True, text=True, check=True
    )
    out.write_text(rendered.stdout)
    return out


def test_rayjob_is_valid_against_kuberays_crd_and_the_projects_needs(tmp_path: Path):
    validator = _rayjob_validator()
    assert validator.check(_rendered(tmp_path)) == []

    edits = {
        # A typo the API server would prune silently: the worker group would lose its params.
        ("rayStartParams: {}", "rayStartParam: {}"): "'rayStartParam' was unexpected",
        ("replicas: 8\n", "replicas: eight\n"): "'eight' is not of type 'integer'",
        ('rayVersion: "2.60.0"', 'rayVersion: "2.50.0"'): "rayVersion is '2.50.0'",
        ('nvidia.com/gpu: "1"\n                securityContext', 'nvidia.com/gpu: "2"\n'
         "                securityContext"): "nvidia.com/gpu must be 1",
    }  # fmt: skip
    for (old, new), expected in edits.items():
        problems = validator.check(_rendered(tmp_path, ("rayjob.yaml", old, new)))
        assert any(expected in p for p in problems), (expected, problems)


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        # `kubectl apply -f` without a namespace: away from the models claim.
        ("kustomization.yaml", "namespace: cai-judge\n", "", "metadata.namespace: unset"),
        # The old shape: pairs and labels on a claim every pod writes.
        ("rayjob.yaml", "label s3://YOUR-BUCKET/cai-judge/pairs.jsonl",
         "label /data/pairs.jsonl", "the input '/data/pairs.jsonl' is not a URI"),
        ("rayjob.yaml", "claimName: cai-judge-models\n                readOnly: true",
         "claimName: cai-judge-models", "claim cai-judge-models mounted writable"),
        ("rayjob.yaml", "ttlSecondsAfterFinished: 60", "ttlSecondsAfterFinished: 3600",
         "ttlSecondsAfterFinished"),
        ("rayjob.yaml", "- name: shm\n                  mountPath: /dev/shm",
         "- name: shm\n                  mountPath: /shm", "ray-head: no /dev/shm"),
        ("rayjob.yaml", 'CAI_JUDGE_MAX_MODEL_LEN\n                  value: "8192"',
         'CAI_JUDGE_MAX_MODEL_LEN\n                  value: "4096"',
         "CAI_JUDGE_MAX_MODEL_LEN is '4096', the service's is '8192'"),
        # The dashboard (it runs any code it is sent) open to every pod.
        ("kustomization.yaml", "  - networkpolicy.yaml\n", "", "no NetworkPolicy selects"),
        ("networkpolicy.yaml", "        - podSelector:\n            matchLabels:\n"
         "              batch.kubernetes.io/job-name",
         "        - namespaceSelector: {}\n          podSelector:\n            matchLabels:\n"
         "              batch.kubernetes.io/job-name", "ingress[1] admits pods beyond"),
        # The operator's rule widened to every pod of every namespace.
        ("networkpolicy.yaml", "        - namespaceSelector: {}\n          podSelector:\n"
         "            matchLabels:\n              app.kubernetes.io/name: kuberay-operator\n",
         "        - namespaceSelector: {}\n", "ingress[1] admits pods beyond"),
    ],
)  # fmt: skip
def test_the_rayjob_starts_on_the_documented_storage(
    tmp_path: Path, file: str, old: str, new: str, expected: str
):
    problems = _rayjob_validator().check(_rendered(tmp_path, (file, old, new)))
    assert any(expected in p for p in problems), (expected, problems)


def test_no_claim_is_in_the_jobs_lifecycle(tmp_path: Path):
    """`kubectl delete -k k8s/ray` deletes what it applied: no claim may be among it."""
    import yaml

    documents = [d for d in yaml.safe_load_all(_rendered(tmp_path).read_text()) if d]
    assert {d["kind"] for d in documents} == {"RayJob", "NetworkPolicy"}
