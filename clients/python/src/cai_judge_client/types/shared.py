"""Wire types more than one resource answers with: the versions a result depends on and
the per-item error detail (labels, jobs and rewards all carry them).

Response models accept fields they do not know (`extra="allow"`): a newer server may add
fields without breaking an older client.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["ConstitutionRef", "ErrorDetail", "TemplateRef"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class ConstitutionRef(_Model):
    id: str
    version: str


class TemplateRef(_Model):
    id: str
    version: str


class ErrorDetail(_Model):
    type: str
    message: str
    param: str | None = None
