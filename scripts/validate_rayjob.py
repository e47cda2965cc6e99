"""Check k8s/ray/ manifests: each RayJob against KubeRay's own CRD schema, strictly, and the
rest with kubernetes-validate (`make lint`; issue 23, docs/deploy.md "Ray").

kubernetes-validate knows only Kubernetes' built-in kinds and takes no CRD, so a RayJob is
checked here against the `openAPIV3Schema` of KubeRay's CRD, vendored in
k8s/ray/schema/rayjob-ray.io-v1.json: extracted from kuberay v1.7.0,
ray-operator/config/crd/bases/ray.io_rayjobs.yaml (sha256 01a5cf3b…49121f5), version v1.
Strict as `kubernetes-validate --strict`: an object schema that lists its properties and does
not preserve unknown fields refuses any other (the API server would silently prune a typo,
such as `rayStartParam`, and the job would run without it). CEL rules
(`x-kubernetes-validations`) are the API server's and are not run here.

Then what this project needs of its RayJob, which the schema cannot say: the Ray version of
the `ray` extra, the GPU image, a GPU per worker and `cai-judge label ... --ray`; and what
it needs to start on the documented storage (issue 29): a namespace (where the models claim
is), input and output as URIs (no claim the job must own, none deleted with it), claims
only read-only, /dev/shm on every pod, the service's context length, a short TTL, and a
NetworkPolicy that keeps the cluster's ports to its own pods and the submitter.

    kubectl kustomize k8s/ray > build/k8s/ray.yaml
    python scripts/validate_rayjob.py build/k8s/ray.yaml
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "k8s" / "ray" / "schema" / "rayjob-ray.io-v1.json"
GPU_IMAGE = "ghcr.io/cai-judge/cai-judge:0.1.0-gpu"


def strict(schema: Any) -> Any:
    """The schema with unknown properties refused wherever the CRD lists them."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def ray_extra_version() -> str:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    match = re.fullmatch(r"ray\[data\]==(\S+)", extras["ray"][0])
    if match is None:
        raise ValueError("pyproject.toml: the `ray` extra must pin ray[data]==X")
    return match.group(1)


def project_problems(job: dict[str, Any]) -> list[str]:
    """What cai-judge needs of a RayJob beyond the CRD's schema."""
    problems = []
    spec = job["spec"]
    cluster = spec["rayClusterSpec"]
    if cluster.get("rayVersion") != ray_extra_version():
        problems.append(
            f"spec.rayClusterSpec.rayVersion is {cluster.get('rayVersion')!r}, the image's "
            f"ray (the `ray` extra) is {ray_extra_version()!r}"
        )
    if "--ray" not in spec.get("entrypoint", "").split() or "label" not in spec["entrypoint"]:
        problems.append("spec.entrypoint must run `cai-judge label IN -o OUT --ray`")
    groups = [("headGroupSpec", cluster["headGroupSpec"])] + [
        (f"workerGroupSpecs[{i}]", g) for i, g in enumerate(cluster.get("workerGroupSpecs", []))
    ]
    for where, group in groups:
        for container in group["template"]["spec"]["containers"]:
            if container.get("image") != GPU_IMAGE:
                problems.append(
                    f"{where} container {container['name']}: image {container.get('image')!r}, "
                    f"not docker/Dockerfile.gpu's {GPU_IMAGE}"
                )
    problems += storage_problems(job, groups)
    workers = cluster.get("workerGroupSpecs", [])
    if not workers:
        problems.append("spec.rayClusterSpec.workerGroupSpecs: no GPU worker group")
    for i, group in enumerate(workers):
        for container in group["template"]["spec"]["containers"]:
            limits = container.get("resources", {}).get("limits", {})
            if str(limits.get("nvidia.com/gpu")) != "1":
                problems.append(
                    f"workerGroupSpecs[{i}] container {container['name']}: "
                    "resources.limits nvidia.com/gpu must be 1 (one engine per GPU)"
                )
    return problems


def service_max_model_len() -> str:
    lines = (ROOT / "k8s" / "base" / "config.env").read_text().splitlines()
    settings = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return settings["CAI_JUDGE_MAX_MODEL_LEN"]


def storage_problems(job: dict[str, Any], groups: list[tuple[str, Any]]) -> list[str]:
    problems = []
    spec = job["spec"]
    if not job["metadata"].get("namespace"):
        problems.append(
            "metadata.namespace: unset, so `kubectl apply` lands it wherever the context "
            "points, away from the cai-judge-models claim (render k8s/ray with kustomize)"
        )
    words = spec.get("entrypoint", "").split()
    if "label" in words and "-o" in words:
        data = [words[words.index("label") + 1], words[words.index("-o") + 1]]
        for what, uri in zip(("input", "output"), data, strict=True):
            if "://" not in uri:
                problems.append(
                    f"spec.entrypoint: the {what} {uri!r} is not a URI: a local path needs a "
                    "volume every Ray pod writes, which the job would own"
                )
    if spec.get("ttlSecondsAfterFinished", 0) > 60:
        problems.append("spec.ttlSecondsAfterFinished: over 60 s of idle GPU pods after the end")
    for where, group in groups:
        pod = group["template"]["spec"]
        for volume in pod.get("volumes", []):
            claim = volume.get("persistentVolumeClaim")
            if claim is not None and not claim.get("readOnly"):
                problems.append(
                    f"{where} volume {volume['name']}: claim {claim['claimName']} mounted "
                    "writable (the documented storage is one ReadOnlyMany volume)"
                )
        for container in pod["containers"]:
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            if "/dev/shm" not in mounts:
                problems.append(
                    f"{where} container {container['name']}: no /dev/shm volume "
                    "(Ray's object store; the container default is 64 MiB)"
                )
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            if env.get("CAI_JUDGE_MAX_MODEL_LEN") != service_max_model_len():
                problems.append(
                    f"{where} container {container['name']}: CAI_JUDGE_MAX_MODEL_LEN is "
                    f"{env.get('CAI_JUDGE_MAX_MODEL_LEN')!r}, the service's is "
                    f"{service_max_model_len()!r}"
                )
    return problems


def _is_operator(peer: dict[str, Any]) -> bool:
    """The KubeRay operator's pods, in whatever namespace: it polls the job API."""
    labels = peer.get("podSelector", {}).get("matchLabels", {})
    return labels == {"app.kubernetes.io/name": "kuberay-operator"}


def network_problems(documents: list[dict[str, Any]]) -> list[str]:
    """The Ray pods' ports reach only the Ray pods and the submitter Job's pod."""
    jobs = [d for d in documents if d.get("kind") == "RayJob"]
    policies = [d for d in documents if d.get("kind") == "NetworkPolicy"]
    problems = []
    for job in jobs:
        name = job["metadata"]["name"]
        cluster = job["spec"]["rayClusterSpec"]
        templates = [cluster["headGroupSpec"]["template"]] + [
            g["template"] for g in cluster.get("workerGroupSpecs", [])
        ]
        selecting = [
            p
            for p in policies
            if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
            and all(
                set(p["spec"]["podSelector"].get("matchLabels", {}).items())
                <= set(t.get("metadata", {}).get("labels", {}).items())
                for t in templates
            )
        ]
        if not selecting:
            problems.append(
                f"RayJob/{name}: no NetworkPolicy selects its pods: the dashboard and job "
                "API (8265), client (10001) and GCS (6379) are open to every pod"
            )
        for policy in selecting:
            for index, rule in enumerate(policy["spec"].get("ingress", [])):
                peers = rule.get("from", [])
                open_peer = not peers or any(
                    "ipBlock" in peer
                    or ("namespaceSelector" in peer and not _is_operator(peer))
                    or ("namespaceSelector" not in peer and not peer.get("podSelector"))
                    for peer in peers
                )
                if open_peer:
                    problems.append(
                        f"NetworkPolicy/{policy['metadata']['name']}: ingress[{index}] admits "
                        "pods beyond this namespace's Ray pods, its submitter and the operator"
                    )
    return problems


def check(path: Path) -> list[str]:
    validator = jsonschema.Draft4Validator(strict(json.loads(SCHEMA.read_text())))
    problems = []
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for index, document in enumerate(documents):
        name = f"{path}[{index}] {document.get('kind')}/{document.get('metadata', {}).get('name')}"
        if document.get("kind") == "RayJob":
            if document.get("apiVersion") != "ray.io/v1":
                problems.append(f"{name}: apiVersion must be ray.io/v1")
                continue
            for error in sorted(validator.iter_errors(document), key=lambda e: list(e.path)):
                at = ".".join(str(p) for p in error.absolute_path) or "(document)"
                problems.append(f"{name}: {at}: {error.message}")
            if not problems:
                problems += [f"{name}: {p}" for p in project_problems(document)]
        else:
            try:
                kubernetes_validate.validate(document, "1.37.0", strict=True)
            except kubernetes_validate.ValidationError as error:
                problems.append(f"{name}: {error.message}")
    if not problems:
        problems += network_problems(documents)
    return problems


def main(paths: list[str]) -> int:
    failed = False
    for raw in paths:
        problems = check(Path(raw))
        for problem in problems:
            print(problem, file=sys.stderr)
        failed = failed or bool(problems)
        if not problems:
            print(f"{raw}: valid")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
