"""The SDK's wire models (clients/python, `cai_judge_client.types`) against the service's
OpenAPI document: field names and which are required, model by model.

The SDK copies the service's types rather than importing them (it installs without the
service), so this test is what keeps the copies honest. The document comes from
`create_app().openapi()`, the same document `/openapi.json` serves, built in process on
the fake engine: no server, milliseconds. Redis is configured (never reached) so that the
jobs routes, and `JobStatusBody`, are in the document.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from cai_judge.api.app import create_app
from cai_judge.labeling.constitution import ConstitutionRegistry
from cai_judge.settings import Settings
from cai_judge_client import types as sdk_types
from tests.support.fake_engine import FakeEngine


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    app = create_app(
        Settings(max_model_len=1024, redis_url="redis://127.0.0.1:1/0"),
        engine=FakeEngine(max_model_len=1024),
        registry=ConstitutionRegistry.with_builtins(),
    )
    document: dict[str, Any] = app.openapi()
    return document["components"]["schemas"]


def _properties(schema: dict[str, Any]) -> tuple[set[str], set[str]]:
    return set(schema.get("properties", {})), set(schema.get("required", []))


def _sdk_fields(model: type[BaseModel]) -> tuple[set[str], set[str]]:
    fields = model.model_fields
    return set(fields), {name for name, field in fields.items() if field.is_required()}


CONTRACT: dict[str, type[BaseModel]] = {
    "LabelRequest": sdk_types.LabelRequest,
    "LabelResponse": sdk_types.LabelResponse,
    "Label": sdk_types.Label,
    "PairError": sdk_types.PairError,
    "ErrorDetail": sdk_types.ErrorDetail,
    "Usage": sdk_types.Usage,
    "Pair": sdk_types.Pair,
    "ChatMessage": sdk_types.ChatMessage,
    "ConstitutionRef": sdk_types.ConstitutionRef,
    "TemplateRef": sdk_types.TemplateRef,
    "PrincipleResult": sdk_types.PrincipleResult,
    "ConstitutionDetail": sdk_types.Constitution,
    "ConstitutionList": sdk_types.ConstitutionList,
    "ConstitutionSummary": sdk_types.ConstitutionSummary,
    "ConstitutionSpec": sdk_types.ConstitutionSpec,
    "Principle": sdk_types.Principle,
    "LabelCalibration": sdk_types.LabelCalibration,
    "Rationale": sdk_types.Rationale,
    "RevisionExample": sdk_types.RevisionExample,
    "GroupRewards": sdk_types.GroupRewards,
    "ItemReward": sdk_types.ItemReward,
    "CompletionDetail": sdk_types.CompletionDetail,
    "RewardProvenance": sdk_types.RewardProvenance,
    "EnsembleProvenance": sdk_types.EnsembleProvenance,
    # On the wire only while the server has Redis (the jobs routes), as this app has.
    "JobStatusBody": sdk_types.Job,
}


# Fields the server always sends that the SDK reads as optional: the SDK's adapters fill in
# results of their own (fallbacks) and its tests build results without them.
OPTIONAL_IN_SDK: dict[str, set[str]] = {
    "GroupRewards": {"provenance"},
    "ItemReward": {"provenance"},
}


def test_sdk_types_match_the_openapi_schema(schemas: dict[str, Any]) -> None:
    for name, model in CONTRACT.items():
        assert name in schemas, f"the service no longer has a schema {name}"
        fields, required = _properties(schemas[name])
        assert _sdk_fields(model) == (fields, required - OPTIONAL_IN_SDK.get(name, set())), name
    # The per-item error's detail, as the issue names it: {id, index, error:{type, message, param}}.
    assert _properties(schemas["PairError"])[0] == {"id", "index", "error"}
    assert _properties(schemas["ErrorDetail"])[0] == {"type", "message", "param"}
