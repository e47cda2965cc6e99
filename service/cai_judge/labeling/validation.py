"""One way to say what is wrong with a validated input: `field.path: reason; ...`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError


def describe_validation_error(error: ValidationError, whole: str = "(top level)") -> str:
    """Every error as `location: message`; `whole` names the input when no field is at fault."""
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item["loc"]) or whole
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


def read_json_lines(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """Each non-blank line's number and value, or (number, None, why it is not JSON)."""
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                yield line_number, None, f"not valid JSON: {error.msg}"
                continue
            yield line_number, value, None
