"""The service refuses to start open by accident (issue 29): a key list that is set but holds
no sha256 digest, as the old recipe wrote where `cai-judge` was not on PATH (`[""]`), stops
`serve` with an error naming the setting; running open takes CAI_JUDGE_ALLOW_OPEN, and then
the log and /health/ready say so. The documented key recipe needs no installed package."""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from cai_judge.services.security import hash_api_key
from cai_judge.settings import Settings
from tests.support.api import Client
from tests.support.cli import run_cli
from tests.support.paths import REPO_ROOT

DEPLOY_DOC = REPO_ROOT / "docs" / "deploy.md"


def _without_cai_judge_on_path() -> str:
    """PATH with no directory that holds a `cai-judge` executable (the venv's bin)."""
    dirs = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(d for d in dirs if not (Path(d) / "cai-judge").exists())


def test_the_old_recipe_without_cai_judge_on_path_is_refused(monkeypatch: pytest.MonkeyPatch):
    # What docs/deploy.md used to say, run where the package is not installed.
    old = subprocess.run(
        ["bash", "-c", 'echo "[\\"$(cai-judge hash-key --key "$KEY")\\"]"'],
        env={"PATH": _without_cai_judge_on_path(), "KEY": "k"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert old.stdout.strip() == '[""]'
    monkeypatch.setenv("CAI_JUDGE_API_KEY_HASHES", old.stdout.strip())
    with pytest.raises(ValidationError) as caught:
        Settings()
    (error,) = caught.value.errors()
    assert error["loc"] == ("api_key_hashes",)
    assert "entry 0 is blank" in error["msg"] and "sha256sum" in error["msg"]


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"CAI_JUDGE_API_KEY_HASHES": "[]"}, ["CAI_JUDGE_API_KEY_HASHES", "ALLOW_OPEN"]),
        ({"CAI_JUDGE_API_KEY_HASHES": "[]", "CAI_JUDGE_ADMIN_KEY_HASHES": "[]"},
         ["CAI_JUDGE_ADMIN_KEY_HASHES and CAI_JUDGE_API_KEY_HASHES"]),
        # A raw key pasted where its digest belongs: refused, and never echoed back.
        ({"CAI_JUDGE_API_KEY_HASHES": '["my-secret-key"]'}, ["has 13 characters"]),
    ],
)  # fmt: skip
def test_a_key_setting_without_a_digest_is_refused(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], words: list[str]
):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    text = str(caught.value)
    assert all(word in text for word in words), text
    assert "my-secret-key" not in text.split("input_value")[0]


def test_serve_refuses_to_start_with_an_empty_key_list(tmp_path: Path):
    result = run_cli("serve", cwd=tmp_path, env={"CAI_JUDGE_API_KEY_HASHES": '[""]'})
    assert result.returncode != 0
    assert "CAI_JUDGE_API_KEY_HASHES" in result.stderr and "blank" in result.stderr, result.stderr
    result = run_cli("serve", cwd=tmp_path, env={"CAI_JUDGE_API_KEY_HASHES": "[]"})
    assert result.returncode != 0
    assert "CAI_JUDGE_ALLOW_OPEN=true" in result.stderr, result.stderr


async def test_open_on_purpose_is_logged_and_stated_by_readiness(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setenv("CAI_JUDGE_API_KEY_HASHES", "[]")
    with caplog.at_level(logging.WARNING):
        async with client(allow_open=True) as http:
            ready = await http.get("/health/ready")
            assert ready.json()["checks"]["auth"] == "open"
            # Open means open: no key needed, and an admin's route answers.
            assert (await http.get("/v1/constitutions")).status_code == 200
    assert any("auth is open" in r.getMessage() for r in caplog.records)

    async with client(api_key_hashes=[hash_api_key("k")]) as http:
        ready = await http.get("/health/ready")
        assert ready.json()["checks"]["auth"] == "keys"
        assert (await http.get("/v1/constitutions")).status_code == 401


def test_the_documented_recipe_needs_no_installed_package():
    """docs/deploy.md's key recipe, run with coreutils only, writes the digest the
    service checks."""
    text = DEPLOY_DOC.read_text()
    recipe = re.search(r"^DIGEST=\$\(printf %s \"\$KEY\" \| sha256sum[^\n]*$", text, re.M)
    assert recipe, "docs/deploy.md lost its sha256sum key recipe"
    digest = subprocess.run(
        ["bash", "-c", recipe.group(0) + '\necho "$DIGEST"'],
        env={"PATH": _without_cai_judge_on_path(), "KEY": "trainer key 1"},
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert digest == hash_api_key("trainer key 1")
    assert "cai-judge hash-key" not in text.split("### API keys")[1].split("```")[1]
