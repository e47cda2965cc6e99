"""One way to say what is wrong with a validated input: `field.path: reason; ...`."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(error: ValidationError, whole: str = "(top level)") -> str:
    """Every error as `location: message`; `whole` names the input when no field is at fault."""
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item["loc"]) or whole
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)
