"""Constitutions on the wire (`/v1/constitutions`): what `create` sends and what the
service stores and lists (docs/DESIGN.md §1: a version is the content's hash)."""

from __future__ import annotations

from pydantic import BaseModel

from cai_judge_client.types.shared import _Model

__all__ = [
    "Constitution",
    "ConstitutionList",
    "ConstitutionSpec",
    "ConstitutionSummary",
    "Principle",
    "RevisionExample",
]


class Principle(_Model):
    id: str
    question: str
    critique: str | None = None
    revision: str | None = None


class RevisionExample(_Model):
    """One worked SL-CAI critique-and-revision exchange, shown to the model as few-shot
    turns before the real one (a constitution's optional `revision_examples`)."""

    prompt: str
    response: str
    critique_request: str
    critique: str
    revision_request: str
    revision: str


class ConstitutionSpec(BaseModel):
    """What `create_constitution` sends: the same content as a constitution YAML file."""

    id: str
    description: str = ""
    template: str = "cai-mc-v1"
    principles: list[Principle]
    revision_examples: list[RevisionExample] | None = None


class Constitution(_Model):
    """One stored version (`ConstitutionDetail` on the wire); `version` is its content hash."""

    version: str
    id: str
    description: str
    template: str
    principles: list[Principle]
    revision_examples: list[RevisionExample] | None = None


class ConstitutionSummary(_Model):
    id: str
    latest_version: str
    versions: list[str]
    principles: int
    description: str


class ConstitutionList(_Model):
    constitutions: list[ConstitutionSummary]
