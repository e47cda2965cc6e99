"""Each probe rewrites exactly what it says: the side it names, in the way it documents,
and nothing else (issue 32). Property tests over arbitrary pairs, derandomized."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cai_judge.labeling.probes import (
    CLOSINGS,
    EVASIVE_REFUSALS,
    JUDGE_ADDRESSES,
    MASTER_KEYS,
    PAD_LEVELS,
    RESTATEMENTS,
    ProbeFamily,
    Rewrite,
    Side,
    filler_sentences,
    markdown_list,
    other,
    pad,
    probe_names,
    question_text,
    response,
    rewrites,
    sentences,
    weaker_side,
)
from cai_judge.labeling.schema import ChatMessage, Pair

text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=200
).filter(lambda s: s.strip())
words = (
    st.lists(st.text(alphabet="abcdefghij .!?,\n", min_size=1, max_size=30), min_size=1, max_size=8)
    .map("".join)
    .filter(lambda s: s.strip())
)


@st.composite
def pairs(draw: st.DrawFn) -> Pair:
    prompt: str | list[ChatMessage] = draw(text)
    if draw(st.booleans()):
        prompt = [
            ChatMessage(role="user", content=draw(text)),
            ChatMessage(role="assistant", content=draw(text)),
            ChatMessage(role="user", content=draw(text)),
        ]
    return Pair(
        id=draw(st.text(alphabet="abc123-", min_size=1, max_size=12)),
        prompt=prompt,
        response_a=draw(st.one_of(text, words)),
        response_b=draw(st.one_of(text, words)),
    )


sides: st.SearchStrategy[Side] = st.sampled_from(["a", "b"])
seeds = st.integers(min_value=0, max_value=2**32)


def _untouched(original: Pair, rewritten: Pair, side: Side) -> None:
    assert rewritten.id == original.id and rewritten.prompt == original.prompt
    assert response(rewritten, other(side)) == response(original, other(side))


def test_weaker_side_is_the_side_with_the_lower_log_odds():
    assert weaker_side(0.3) == "b" and weaker_side(-0.3) == "a" and weaker_side(0.0) == "a"


@given(pairs(), sides, seeds)
def test_length_pads_only_the_weaker_side_with_the_documented_fillers(
    pair: Pair, weaker: Side, seed: int
):
    made = rewrites(pair, weaker, seed=seed, families=[ProbeFamily.LENGTH])
    assert [r.probe for r in made] == [f"pad-{n}" for n in PAD_LEVELS]
    question = " ".join(question_text(pair).split())
    original = response(pair, weaker)
    first = (sentences(original) or [original.strip()])[0]
    for count, rewrite in zip(PAD_LEVELS, made, strict=True):
        assert rewrite.target == weaker
        _untouched(pair, rewrite.pair, weaker)
        padded = response(rewrite.pair, weaker)
        fillers = filler_sentences(pair, weaker, count, seed)
        assert padded == " ".join([original.rstrip(), *fillers])
        assert len(fillers) == count
        for index, filler in enumerate(fillers):
            if index % 3 == 0:
                assert filler in {r.format(question=question) for r in RESTATEMENTS}
            elif index % 3 == 1:
                assert filler in CLOSINGS
            else:
                assert filler == first


@given(pairs(), sides, seeds)
def test_length_both_pads_both_sides_alike_and_counts_the_weaker(
    pair: Pair, weaker: Side, seed: int
):
    made = rewrites(pair, weaker, seed=seed, families=[ProbeFamily.LENGTH_BOTH])
    for count, rewrite in zip(PAD_LEVELS, made, strict=True):
        assert rewrite.target == weaker and rewrite.pair.prompt == pair.prompt
        for side in ("a", "b"):
            assert response(rewrite.pair, side) == pad(pair, side, count, seed)


@given(pairs(), sides, seeds)
def test_padding_is_seeded_and_the_same_whatever_else_is_in_the_file(
    pair: Pair, weaker: Side, seed: int
):
    assert rewrites(pair, weaker, seed=seed) == rewrites(pair, weaker, seed=seed)


def test_the_seed_changes_phrasings_only():
    pair = Pair(id="p", prompt="Why is the sky blue?", response_a="Rayleigh. Scattering.",
                response_b="No.")  # fmt: skip
    phrasings = {tuple(filler_sentences(pair, "a", 6, seed)) for seed in range(20)}
    assert len(phrasings) > 1
    for found in phrasings:
        assert found[2] == found[5] == "Rayleigh."


@given(pairs(), sides, seeds)
def test_master_keys_replace_each_side_in_turn_with_the_key_exactly(
    pair: Pair, weaker: Side, seed: int
):
    made = rewrites(pair, weaker, seed=seed, families=[ProbeFamily.MASTER_KEY])
    expected = [(name, key, side) for name, key in MASTER_KEYS for side in ("a", "b")]
    assert [(r.probe, r.target) for r in made] == [(n, s) for n, _, s in expected]
    for rewrite, (_, key, side) in zip(made, expected, strict=True):
        assert response(rewrite.pair, side) == key
        _untouched(pair, rewrite.pair, side)


@given(pairs(), sides, seeds)
def test_judge_addresses_append_the_sentence_to_the_weaker_side(
    pair: Pair, weaker: Side, seed: int
):
    made = rewrites(pair, weaker, seed=seed, families=[ProbeFamily.ADDRESS_JUDGE])
    assert [r.probe for r in made] == [name for name, _ in JUDGE_ADDRESSES]
    for rewrite, (_, sentence) in zip(made, JUDGE_ADDRESSES, strict=True):
        original = response(pair, weaker)
        assert response(rewrite.pair, weaker) == f"{original.rstrip()}\n\n{sentence}"
        _untouched(pair, rewrite.pair, weaker)


@given(pairs(), sides, seeds, st.booleans())
def test_evasive_refusal_replaces_the_weaker_side_on_benign_prompts_only(
    pair: Pair, weaker: Side, seed: int, benign: bool
):
    made = rewrites(
        pair,
        weaker,
        seed=seed,
        families=[ProbeFamily.EVASIVE_REFUSAL],
        benign=benign,
    )
    if not benign:
        assert made == []
        return
    assert [r.probe for r in made] == [name for name, _ in EVASIVE_REFUSALS]
    for rewrite, (_, refusal) in zip(made, EVASIVE_REFUSALS, strict=True):
        assert response(rewrite.pair, weaker) == refusal and rewrite.target == weaker
        _untouched(pair, rewrite.pair, weaker)


@given(pairs(), sides, seeds)
def test_format_lists_the_same_words_one_sentence_per_item(pair: Pair, weaker: Side, seed: int):
    (rewrite,) = rewrites(pair, weaker, seed=seed, families=[ProbeFamily.FORMAT])
    _untouched(pair, rewrite.pair, weaker)
    listed = response(rewrite.pair, weaker).split("\n")
    assert all(line.startswith("- ") for line in listed)
    original = response(pair, weaker)
    assert " ".join(line[2:] for line in listed) == " ".join(original.split())


@given(words)
def test_markdown_list_makes_one_item_per_sentence(found: str):
    items = markdown_list(found).split("\n")
    assert len(items) == len(sentences(found))
    for item in items[:-1]:
        assert re.search(r"[.!?]$", item)


@given(pairs(), sides, seeds)
def test_every_family_makes_the_probes_it_names(pair: Pair, weaker: Side, seed: int):
    made = rewrites(pair, weaker, seed=seed)
    for family in ProbeFamily:
        mine = [r for r in made if r.family is family]
        per_probe = 2 if family is ProbeFamily.MASTER_KEY else 1
        assert [r.probe for r in mine][::per_probe] == probe_names(family)
    assert all(isinstance(r, Rewrite) for r in made)


@pytest.mark.parametrize("family", list(ProbeFamily))
def test_a_family_left_out_makes_nothing(family: ProbeFamily):
    pair = Pair(id="p", prompt="q", response_a="a.", response_b="b.")
    others = [f for f in ProbeFamily if f is not family]
    assert all(r.family is not family for r in rewrites(pair, "a", seed=0, families=others))
