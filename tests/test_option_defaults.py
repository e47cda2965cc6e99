"""Every front's labeling defaults are LabelOptions' (issue 30: no default written twice).

The CLI's flags, the HTTP schema (`create_app().openapi()`), the proto (proto3 has no
defaults: an unset field is its zero, and the service maps it) and the SDK each state or
imply a default for each option; this compares each with the one options object and fails
on any drift, and on an option one front does not carry. No engine: nothing is started.
"""

from __future__ import annotations

from typing import Any

import pytest
import typer.main

from cai_judge.api.app import create_app
from cai_judge.cli import common
from cai_judge.cli.main import app as cli_app
from cai_judge.grpc.convert import options_from_proto
from cai_judge.grpc.gen.v1 import judge_pb2 as pb
from cai_judge.labeling.options import CALLER_FIELDS, LabelOptions
from cai_judge.settings import Settings

DEFAULTS = LabelOptions()
# As every wire carries them: JSON values.
JSON_DEFAULTS = DEFAULTS.model_dump(mode="json")
# The constitution is required on every wire but the CLI's; it has no default to compare.
COMPARED = [f for f in CALLER_FIELDS if f != "constitution"]


def cli_command(name: str) -> Any:
    # typer's own click command (typer vendors click): read through its attributes.
    return typer.main.get_command(cli_app).commands[name]  # type: ignore[attr-defined]


def cli_defaults(name: str) -> dict[str, Any]:
    """The defaults of a command's flags that are LabelOptions fields, as the field takes
    them (through the same `flag_value` the command's values go through)."""
    command = cli_command(name)
    found = {}
    for param in command.params:
        # --constitution names the CLI's default constitution (the wires require one).
        if param.name in LabelOptions.model_fields and param.name != "constitution":
            found[param.name] = common.flag_value(LabelOptions, param.name, param.default)
    return found


def test_the_label_command_has_a_flag_for_every_option_a_caller_sets():
    # A field added to LabelOptions becomes a flag without CLI code (label_flags).
    wanted = set(LabelOptions.model_fields) - common.NOT_FLAGS
    assert wanted <= set(cli_defaults("label"))


@pytest.mark.parametrize("name", ["label", "probe", "calibrate", "eval", "compare"])
def test_cli_defaults_are_the_options_defaults(name: str):
    found = cli_defaults(name)
    assert found, f"`{name}` has no label flag"
    for field, value in found.items():
        assert value == getattr(DEFAULTS, field), f"`{name} --{field}` defaults to {value!r}"


def test_cli_bounds_are_the_options_bounds():
    params = {p.name: p for p in cli_command("label").params}
    seed = LabelOptions.model_fields["seed"].metadata
    bounds = {type(m).__name__: getattr(m, type(m).__name__.lower()) for m in seed}
    seed = params["seed"].type_descriptor.parameter_info
    assert (seed.min, seed.max) == (bounds["Ge"], bounds["Le"])
    mode = params["mode"].type_descriptor.annotation
    assert [m.value for m in mode] == ["plain", "cot"]


def test_http_schema_defaults_are_the_options_defaults():
    schema = create_app(Settings()).openapi()["components"]["schemas"]
    for model in ("LabelRequest", "JobRequest"):
        if model not in schema:
            continue
        properties = schema[model]["properties"]
        for field in COMPARED:
            assert field in properties, f"{model} does not carry {field}"
            assert properties[field].get("default") == JSON_DEFAULTS[field], (model, field)
    assert "LabelRequest" in schema


def test_proto_unset_fields_take_the_options_defaults():
    # proto3: an unset scalar reads as its zero, and UNSPECIFIED is an enum's zero.
    options = options_from_proto(pb.LabelOptions(constitution="harmless"))
    assert options == DEFAULTS.model_copy(update={"constitution": "harmless"})
    carried = set(pb.LabelOptions.DESCRIPTOR.fields_by_name)
    assert set(CALLER_FIELDS) <= carried, f"the proto lacks {set(CALLER_FIELDS) - carried}"


def test_sdk_defaults_are_the_options_defaults():
    from cai_judge_client import types as sdk_types
    from cai_judge_client._labeling_plan import OPTION_DEFAULTS
    from cai_judge_client.integrations._core import JUDGE_DEFAULTS

    assert {f: JSON_DEFAULTS[f] for f in COMPARED} == OPTION_DEFAULTS
    request = sdk_types.LabelRequest.model_fields
    for field in COMPARED:
        assert request[field].default == JSON_DEFAULTS[field], f"LabelRequest.{field}"
    for field in ("principles", "seed"):
        assert JUDGE_DEFAULTS[field] == JSON_DEFAULTS[field], f"the adapters' {field}"
