"""The one labeling options object (labeling/options.py, DESIGN.md §8): what a job stores,
what old records load as, and that every wire's model builds the same object."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cai_judge.api.schemas import LabelingOptions, LabelRequest
from cai_judge.labeling.label_math import Aggregator
from cai_judge.labeling.options import CALLER_FIELDS, OMITTED_AT_DEFAULT, LabelOptions


def test_to_dict_round_trips_and_keeps_only_the_callers_choices():
    options = LabelOptions(
        constitution="harmless@abcdef12", principles=3, seed=9, aggregator="mean_prob",
        per_principle=True, calibrated=False, mode="cot", cot_max_tokens=40,
        low_mass_threshold=0.2,
    )  # fmt: skip
    stored = options.to_dict()
    assert set(stored) == set(CALLER_FIELDS) - set(OMITTED_AT_DEFAULT)
    assert stored["aggregator"] == "mean_prob"  # JSON values: a job hash stores them as text
    # The server's tuning is not the caller's: it is filled in again by whoever labels.
    assert LabelOptions.from_dict(stored) == options.model_copy(update={"low_mass_threshold": 0.5})


def test_from_dict_owns_the_defaults_of_records_older_than_an_option():
    # A job stored before calibration and CoT existed.
    old = {"principles": 2, "seed": 0, "aggregator": "mean_logodds", "per_principle": False}
    options = LabelOptions.from_dict(old)
    assert (options.calibrated, options.mode, options.cot_max_tokens) == (False, "plain", None)
    assert options.aggregator is Aggregator.MEAN_LOGODDS and options.k == 2
    # Keys it does not know (the server's tuning, a future option) are not the caller's.
    assert LabelOptions.from_dict({**old, "low_mass_threshold": 0.9}).low_mass_threshold == 0.5


def test_options_are_frozen_and_bounded_naming_the_field():
    options = LabelOptions()
    with pytest.raises(ValidationError):
        options.seed = 3  # type: ignore[misc]
    with pytest.raises(ValidationError) as raised:
        LabelOptions(cot_max_tokens=5000)
    assert raised.value.errors()[0]["loc"] == ("cot_max_tokens",)


def test_the_http_wire_builds_the_one_object_with_every_option():
    assert set(LabelingOptions.model_fields) == set(CALLER_FIELDS)
    request = LabelRequest(
        constitution="harmless", pairs=[{"id": "x"}], principles=2, mode="cot",
        cot_max_tokens=16, calibrated=True, seed=4,
    )  # fmt: skip
    command = request.to_command()
    assert command.options == LabelOptions(
        constitution="harmless", principles=2, mode="cot", cot_max_tokens=16, calibrated=True,
        seed=4,
    )  # fmt: skip
    assert command.pairs == [{"id": "x"}]


def test_jobs_store_the_ensemble_and_old_records_load_as_full():
    adaptive = LabelOptions(constitution="harmless", ensemble="adaptive", ensemble_delta=0.2)
    stored = adaptive.to_dict()
    assert (stored["ensemble"], stored["ensemble_delta"]) == ("adaptive", 0.2)
    assert LabelOptions.from_dict(stored) == adaptive
    # A job stored before adaptive ensembles existed labels as it always did.
    old = {"constitution": "harmless", "principles": "all", "seed": 0}
    assert LabelOptions.from_dict(old).ensemble == "full"


def test_a_job_body_without_an_ensemble_keeps_its_digest_across_the_upgrade():
    # What to_dict() stored before `ensemble` existed: the Idempotency-Key digest reads it,
    # so a retry that spans the upgrade must see the same dict, not two more keys.
    before = {
        "constitution": "harmless", "principles": "all", "seed": 0,
        "aggregator": "mean_logodds", "per_principle": False, "calibrated": False,
        "mode": "plain", "cot_max_tokens": None,
    }  # fmt: skip
    assert LabelOptions(constitution="harmless").to_dict() == before
    assert set(LabelOptions(constitution="harmless", ensemble_delta=0.2).to_dict()) == {
        *before,
        "ensemble_delta",
    }
