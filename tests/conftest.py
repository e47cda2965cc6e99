"""Shared fixtures: one real vLLM CPU engine per model per test session, the fake engine
for logic that is not the engine's, and the `engine` mark that `make test-fast` leaves out.

Starting an engine costs ~30 s, so engines are session-scoped and every async test runs
on the session event loop (pytest.ini sets the loop scope), the loop AsyncLLM lives on.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import settings as hypothesis_settings

from cai_judge.engine.default_model import prepare_default_model
from cai_judge.engine.vllm_async import VllmEngine, VllmEngineConfig
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.settings import Settings
from cai_judge.testing.tiny_model import build_tiny_model
from tests.support.api import client  # noqa: F401 (fixture)
from tests.support.fake_engine import FakeEngine
from tests.support.redis_server import redis_server, redis_url  # noqa: F401 (fixtures)

# Two engines may live in one session; keep their KV caches small.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

# Property and fuzz tests (hypothesis, schemathesis) are derandomized in the test command:
# one commit, one result. `make test-explore` runs them with fresh random seeds instead.
# No per-example deadline either: the default 200 ms made a property fail on a loaded
# machine (Bradley–Terry at G = 8), and a result must not depend on the machine's speed.
hypothesis_settings.register_profile(
    "ci", derandomize=True, database=None, print_blob=True, deadline=None
)
hypothesis_settings.register_profile("explore", derandomize=False, database=None, max_examples=500)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# The session's real vLLM engines: a test that uses one (directly or through another
# fixture) is an engine test, wherever it lives.
REAL_ENGINE_FIXTURES = frozenset({"tiny_engine", "default_engine"})
E2E_DIR = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `engine` what needs the real engine or real servers, so `make test-fast`
    (`-m "not engine"`) leaves it out: everything under tests/e2e/, and any test that uses
    a session engine. Tests that start one themselves (a `cai-judge serve` subprocess) say
    so with `@pytest.mark.engine`."""
    for item in items:
        in_e2e = E2E_DIR in item.path.parents
        if in_e2e or REAL_ENGINE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.engine)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    # CI prepares it before the tests (README's test command); this finds the cache.
    return prepare_default_model(Settings().cache_dir)


@pytest.fixture(scope="session")
def registry() -> ConstitutionRegistry:
    return ConstitutionRegistry.with_builtins()


@pytest.fixture
def fake_engine() -> FakeEngine:
    """For logic that is not the engine's (batching, caching, admission, error mapping):
    milliseconds, and a fresh one per test, so its call records are the test's own."""
    return FakeEngine(max_model_len=1024)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def tiny_engine(tiny_model_dir: Path) -> AsyncIterator[VllmEngine]:
    engine = await VllmEngine.start(
        VllmEngineConfig(model=str(tiny_model_dir), max_model_len=1024, cpu_kv_cache_gib=1)
    )
    yield engine
    await engine.shutdown()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def default_engine(default_model_dir: Path) -> AsyncIterator[VllmEngine]:
    engine = await VllmEngine.start(
        VllmEngineConfig(model=str(default_model_dir), max_model_len=2048, cpu_kv_cache_gib=1)
    )
    yield engine
    await engine.shutdown()
