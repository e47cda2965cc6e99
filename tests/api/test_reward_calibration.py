"""Length control on the rewards path (`calibrated: true`, issue 32): every match's margin goes
through the server's calibration profile before the reward math, on every route and mode; the
default leaves rewards as they were, to the bit; no fitting profile is a 422 naming
`calibrated`. In process on the fake engine with a length-only profile (T = 1): what is under
test is where the profile is applied, so each number is predicted from the raw margin and the
profile's length term β̄_S·log(tokens_a / tokens_b)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from cai_judge.labeling.calibration_profile import CalibrationProfile
from cai_judge.labeling.label_math import sigmoid
from cai_judge.labeling.rewards import bradley_terry, mean_rewards, schedule
from tests.support.api import Client, assert_envelope
from tests.support.length_profiles import length_profile, length_term, logit, write_profile

PROMPT = "How do I pick a lock?"
# Lengths 3 to 30 words, so every match has a length ratio far from 1.
COMPLETIONS = [
    "Call a locksmith.",
    "I can't help with breaking into property you don't own.",
    "Insert a tension wrench into the bottom of the keyhole, then rake the pins gently until "
    "the plug turns; practise on a lock you own.",
    "If it is your own lock and you are locked out, a locksmith can open it without damage, and "
    "many will ask you to show that you live there first, which protects everyone involved.",
]
REFERENCE = COMPLETIONS[1]


async def serve_profile(client: Client, directory: Path, **key: Any) -> CalibrationProfile:
    """A length-only profile for the app's judge, written where `calibration_dir` will read it."""
    async with client() as http:
        profile = length_profile(http.app.state.services, **key)  # type: ignore[attr-defined]
    write_profile(profile, directory)
    return profile


@pytest.fixture
def tokenizer(fake_engine: Any) -> Any:
    return fake_engine.tokenizer


async def post_ok(http: httpx.AsyncClient, url: str, body: Any) -> Any:
    response = await http.post(url, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def group_body(**options: Any) -> dict[str, Any]:
    return {
        "constitution": "harmless",
        "seed": 3,
        "detail": True,
        "groups": [{"id": "g", "prompt": PROMPT, "completions": COMPLETIONS}],
        **options,
    }


def match_margins(detail: list[dict[str, Any]], matches: list[tuple[int, int]]) -> list[float]:
    """Each scheduled match's margin, from its first completion's side."""
    return [
        next(m["margin"] for m in detail[a]["matches"] if m["opponent"] == b) for a, b in matches
    ]


@pytest.mark.parametrize("opponents", ["all", 2])
@pytest.mark.parametrize("scoring", ["mean", "bradley_terry"])
async def test_group_rewards_debias_each_match_before_the_reward_math(
    client: Client, tmp_path: Path, tokenizer: Any, opponents: Any, scoring: str
):
    profile = await serve_profile(client, tmp_path)
    body = group_body(opponents=opponents, scoring=scoring)
    async with client(calibration_dir=tmp_path) as http:
        [raw] = (await post_ok(http, "/v1/rewards", body))["results"]
        [debiased] = (await post_ok(http, "/v1/rewards", body | {"calibrated": True}))["results"]
    matches = schedule(len(COMPLETIONS), opponents, 3)
    principles = debiased["provenance"]["principles"]
    before = match_margins(raw["detail"], matches)
    after = match_margins(debiased["detail"], matches)
    for (a, b), m, z in zip(matches, before, after, strict=True):
        assert z == m - length_term(profile, tokenizer, principles, COMPLETIONS[a], COMPLETIONS[b])
    # The reward math ran on the debiased outcomes, and on nothing else.
    outcomes = [sigmoid(z) for z in after]
    expected = (
        mean_rewards(len(COMPLETIONS), matches, outcomes)
        if scoring == "mean"
        else bradley_terry(len(COMPLETIONS), matches, outcomes).strengths
    )
    assert debiased["rewards"] == expected
    assert debiased["provenance"]["calibration_profile"] == profile.hash
    assert "calibration_profile" not in raw["provenance"]
    if scoring == "mean":
        # Every β is positive: the longest completion loses reward, the shortest gains.
        assert debiased["rewards"][3] < raw["rewards"][3]
        assert debiased["rewards"][0] > raw["rewards"][0]


async def test_reference_rewards_are_the_debiased_p_a(
    client: Client, tmp_path: Path, tokenizer: Any
):
    profile = await serve_profile(client, tmp_path)
    items = [
        {"id": str(i), "prompt": PROMPT, "completion": c, "reference": REFERENCE}
        for i, c in enumerate(COMPLETIONS)
    ]
    body = {"constitution": "harmless", "detail": True, "items": items}
    async with client(calibration_dir=tmp_path) as http:
        raw = (await post_ok(http, "/v1/rewards", body))["results"]
        debiased = (await post_ok(http, "/v1/rewards", body | {"calibrated": True}))["results"]
    for completion, before, after in zip(COMPLETIONS, raw, debiased, strict=True):
        term = length_term(
            profile, tokenizer, after["provenance"]["principles"], completion, REFERENCE
        )
        [match] = after["detail"]["matches"]
        assert match["margin"] == before["detail"]["matches"][0]["margin"] - term
        assert after["reward"] == sigmoid(match["margin"])
        assert after["provenance"]["calibration_profile"] == profile.hash


async def test_sampled_principles_debias_with_each_labels_own_mean_beta(
    client: Client, tmp_path: Path
):
    """principles: k gives each match its own principles, so its own β̄_S: the rewards' margins
    are exactly the calibrated /v1/labels margins of the same pairs."""
    profile = await serve_profile(client, tmp_path, selection=2)
    body = group_body(principles=2, calibrated=True)
    matches = schedule(len(COMPLETIONS), "all", 3)
    pairs = [
        {"id": f"{a}-{b}", "prompt": PROMPT, "response_a": COMPLETIONS[a],
         "response_b": COMPLETIONS[b]}
        for a, b in matches
    ]  # fmt: skip
    labels_body = {"constitution": "harmless", "principles": 2, "seed": 3, "calibrated": True}
    async with client(calibration_dir=tmp_path) as http:
        [rewards] = (await post_ok(http, "/v1/rewards", body))["results"]
        labels = (await post_ok(http, "/v1/labels", labels_body | {"pairs": pairs}))["labels"]
    assert {label["calibration"]["profile"] for label in labels} == {profile.hash}
    assert len({tuple(label["principles"]) for label in labels}) > 1  # β̄_S differs per match
    assert match_margins(rewards["detail"], matches) == [label["margin"] for label in labels]


async def test_default_rewards_are_unchanged_to_the_bit(client: Client, tmp_path: Path):
    """With profiles loaded, a request without `calibrated` (or with false) gets exactly what
    a server without profiles answers: the outcomes are the raw labels' p_a."""
    await serve_profile(client, tmp_path)
    bodies = [group_body(), group_body(scoring="bradley_terry", opponents=2)]
    async with client() as http:
        plain = [(await post_ok(http, "/v1/rewards", b))["results"] for b in bodies]
        matches = schedule(len(COMPLETIONS), "all", 3)
        pairs = [
            {"id": "x", "prompt": PROMPT, "response_a": COMPLETIONS[a],
             "response_b": COMPLETIONS[b]}
            for a, b in matches
        ]  # fmt: skip
        labels = (await post_ok(http, "/v1/labels", {"constitution": "harmless", "pairs": pairs}))[
            "labels"
        ]
    async with client(calibration_dir=tmp_path) as http:
        loaded = [(await post_ok(http, "/v1/rewards", b))["results"] for b in bodies]
        off = [
            (await post_ok(http, "/v1/rewards", b | {"calibrated": False}))["results"]
            for b in bodies
        ]
    assert plain == loaded == off
    assert plain[0][0]["rewards"] == mean_rewards(
        len(COMPLETIONS), matches, [label["p_a"] for label in labels]
    )


# -- the trainer routes: `?calibrated=true` ------------------------------------------------

CHATML = "<|im_start|>user\nHow do I pick a lock?<|im_end|>\n<|im_start|>assistant\n"
OPENRLHF = {
    "query": [CHATML + c + "<|im_end|>" for c in COMPLETIONS],
    "prompts": [CHATML] * len(COMPLETIONS),
    "labels": [REFERENCE] * len(COMPLETIONS),
}
SLIME = [{"prompt": PROMPT, "response": c, "label": REFERENCE} for c in COMPLETIONS]


async def reference_rewards(http: httpx.AsyncClient, prompt: str, calibrated: bool) -> list[float]:
    """What /v1/rewards answers for the completions against REFERENCE in reference mode."""
    items = [
        {"id": str(i), "prompt": prompt, "completion": c, "reference": REFERENCE}
        for i, c in enumerate(COMPLETIONS)
    ]
    body = {"constitution": "harmless", "items": items, "calibrated": calibrated}
    return [r["reward"] for r in (await post_ok(http, "/v1/rewards", body))["results"]]


async def test_trainer_routes_take_calibrated_from_the_query(
    client: Client, tmp_path: Path, tokenizer: Any
):
    profile = await serve_profile(client, tmp_path)
    principles = list(profile.terms.length_sensitivity or {})
    async with client(calibration_dir=tmp_path) as http:
        openrlhf = {
            flag: (await post_ok(http, f"/v1/rewards/openrlhf?constitution=harmless{q}", OPENRLHF))
            for flag, q in ((False, ""), (True, "&calibrated=true"))
        }
        slime = {
            flag: await post_ok(http, f"/v1/rewards/slime?constitution=harmless{q}", SLIME)
            for flag, q in ((False, ""), (True, "&calibrated=true"))
        }
        expected = await reference_rewards(http, CHATML, calibrated=True)
        expected_slime = await reference_rewards(http, PROMPT, calibrated=True)
    assert openrlhf[True]["rewards"] == expected
    assert slime[True] == expected_slime
    for raw, debiased, completion in zip(
        openrlhf[False]["rewards"], openrlhf[True]["rewards"], COMPLETIONS, strict=True
    ):
        term = length_term(profile, tokenizer, principles, completion, REFERENCE)
        assert logit(debiased) == pytest.approx(logit(raw) - term, abs=1e-9)
    assert slime[False] != slime[True]


async def test_group_assembly_judges_the_group_with_debiased_matches(
    client: Client, tmp_path: Path
):
    """`?group_size=` on the trainer routes and POST /v1/rewards/sample: the assembled group's
    rewards are /v1/rewards' calibrated group rewards for the same completions."""
    await serve_profile(client, tmp_path)
    query = "constitution=harmless&group_size=4&group_wait_s=10&calibrated=true"
    body = {"constitution": "harmless", "calibrated": True,
            "groups": [{"id": "g", "prompt": PROMPT, "completions": COMPLETIONS}]}  # fmt: skip
    async with client(calibration_dir=tmp_path) as http:
        [group] = (await post_ok(http, "/v1/rewards", body))["results"]
        [raw] = (await post_ok(http, "/v1/rewards", body | {"calibrated": False}))["results"]
        slime = await post_ok(http, f"/v1/rewards/slime?{query}", SLIME)
        samples = await asyncio.gather(
            *(
                post_ok(
                    http,
                    f"/v1/rewards/sample?{query}",
                    {"prompt": PROMPT, "completion": c, "group_key": "g"},
                )
                for c in COMPLETIONS
            )
        )
        alone = await post_ok(
            http,
            "/v1/rewards/sample?constitution=harmless&calibrated=true",
            {"prompt": PROMPT, "completion": COMPLETIONS[3], "label": REFERENCE},
        )
        [reference] = (
            await post_ok(
                http,
                "/v1/rewards",
                {"constitution": "harmless", "calibrated": True, "items": [
                    {"id": "i", "prompt": PROMPT, "completion": COMPLETIONS[3],
                     "reference": REFERENCE}]},
            )
        )["results"]  # fmt: skip
    assert group["rewards"] != raw["rewards"]
    assert slime == group["rewards"]
    # Slots follow arrival order: the same matches, possibly each seen from the other side
    # (σ(−m) and 1 − σ(m) may differ in the last bit).
    assert sorted(s["reward"] for s in samples) == pytest.approx(
        sorted(group["rewards"]), abs=1e-12
    )
    assert {s["how"] for s in samples} == {"group"}
    assert (alone["reward"], alone["how"]) == (reference["reward"], "reference")


async def test_openrlhf_group_assembly_is_calibrated(client: Client, tmp_path: Path):
    await serve_profile(client, tmp_path)
    body = {"constitution": "harmless", "calibrated": True,
            "groups": [{"id": "g", "prompt": CHATML, "completions": COMPLETIONS}]}  # fmt: skip
    async with client(calibration_dir=tmp_path) as http:
        [group] = (await post_ok(http, "/v1/rewards", body))["results"]
        grouped = await post_ok(
            http, "/v1/rewards/openrlhf?constitution=harmless&group_size=4&calibrated=true",
            OPENRLHF,
        )  # fmt: skip
    assert grouped["rewards"] == group["rewards"]


# -- refusals: no profile fits -------------------------------------------------------------

ROUTES = [
    ("/v1/rewards", {"constitution": "harmless", "calibrated": True,
                     "groups": [{"id": "g", "prompt": PROMPT, "completions": COMPLETIONS}]}),
    ("/v1/rewards/openrlhf?constitution=harmless&calibrated=true", OPENRLHF),
    ("/v1/rewards/openrlhf?constitution=harmless&calibrated=true&group_size=4", OPENRLHF),
    ("/v1/rewards/slime?constitution=harmless&calibrated=true", SLIME),
    ("/v1/rewards/slime?constitution=harmless&calibrated=true&group_size=4", SLIME),
    ("/v1/rewards/sample?constitution=harmless&calibrated=true&group_size=4",
     {"prompt": PROMPT, "completion": COMPLETIONS[0]}),
]  # fmt: skip


@pytest.mark.parametrize(("url", "body"), ROUTES)
async def test_no_profile_is_a_422_naming_calibrated(
    client: Client, tmp_path: Path, url: str, body: Any
):
    async with client() as http:
        response = await http.post(url, json=body)
    assert_envelope(response, 422, "calibrated", "CAI_JUDGE_CALIBRATION_DIR")
    assert response.json()["error"]["type"] == "calibration_unavailable"


@pytest.mark.parametrize(("url", "body"), ROUTES)
async def test_a_profile_for_other_options_is_a_422_naming_what_differs(
    client: Client, tmp_path: Path, url: str, body: Any
):
    """The profile was fitted for every principle; these requests sample 2. Refused before a
    sample waits for its group (the grouped routes answer at once)."""
    await serve_profile(client, tmp_path)
    url = url + "&principles=2" if "?" in url else url
    body = body | {"principles": 2} if url == "/v1/rewards" else body
    async with client(calibration_dir=tmp_path) as http:
        response = await asyncio.wait_for(http.post(url, json=body), 5)
    assert_envelope(response, 422, "calibrated", "principle selection")
    assert response.json()["error"]["type"] == "calibration_mismatch"
