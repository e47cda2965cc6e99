"""One way to say what is wrong with a validated input: `field.path: reason; ...`.

The HTTP error envelope, per-item errors, the CLI's bad-line reports and constitution
files all describe pydantic errors through `describe_errors`, so a field is named the
same way (`pairs.3.prompt.1.role`) wherever it is reported.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

# Shown in one message before "(and N more)": enough to fix an input in one pass.
MAX_PROBLEMS_SHOWN = 5
_UNION_TAGS = {"int", "str", "float", "bool", "list", "dict", "function-after"}
_WIRE_ROOTS = ("body", "query", "path", "header")


def _is_union_tag(part: str) -> bool:
    # pydantic names the union member it tried ("constrained-int", "literal['all']",
    # "Pair"); our field names are snake_case, so these never collide with them.
    return part in _UNION_TAGS or "-" in part or "[" in part or part[:1].isupper()


def location_to_param(location: Sequence[Any]) -> str:
    """("body", "pairs", 0, "str", "response_a") -> "pairs.0.response_a"."""
    parts = [str(p) for p in location if isinstance(p, int) or not _is_union_tag(str(p))]
    if parts and parts[0] in _WIRE_ROOTS:
        parts = parts[1:]
    return ".".join(parts)


_BOUND_PHRASES = {
    "less_than_equal": ("le", "at most {}"),
    "less_than": ("lt", "below {}"),
    "greater_than_equal": ("ge", "at least {}"),
    "greater_than": ("gt", "above {}"),
}


def problem_message(error: Mapping[str, Any]) -> str:
    """What is wrong with one field: a bound is stated as the limit and the value sent."""
    ctx = error.get("ctx") or {}
    found = _BOUND_PHRASES.get(str(error.get("type")))
    if found and found[0] in ctx:
        return f"must be {found[1].format(ctx[found[0]])} (got {error.get('input')!r})"
    return str(error["msg"])


def field_problems(
    errors: Sequence[Mapping[str, Any]], prefix: Sequence[str | int] = ()
) -> list[tuple[str, str]]:
    """(field path, problem) per field at fault, in order.

    For a union such as `principles: int | "all"` pydantic reports every member; the
    members with a bound say what the user can do ("at most 256"), the others only that
    the value is not `all`, so a field with a bounded member reports only those.
    """
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for error in errors:
        grouped.setdefault(location_to_param([*prefix, *error.get("loc", ())]), []).append(error)
    problems = []
    for param, group in grouped.items():
        bounded = [e for e in group if str(e.get("type")) in _BOUND_PHRASES]
        problems.append((param, "; ".join(problem_message(e) for e in bounded or group)))
    return problems


def describe_errors(
    errors: Sequence[Mapping[str, Any]],
    prefix: Sequence[str | int] = (),
    whole: str = "(top level)",
) -> tuple[str, str | None]:
    """A message naming every field at fault (up to a few), and the first field's path."""
    problems = field_problems(errors, prefix)
    described = [f"{param or whole}: {problem}" for param, problem in problems]
    message = "; ".join(described[:MAX_PROBLEMS_SHOWN])
    if len(described) > MAX_PROBLEMS_SHOWN:
        message += f" (and {len(described) - MAX_PROBLEMS_SHOWN} more)"
    first_param = problems[0][0] or None if problems else None
    return message, first_param


def describe_validation_error(error: ValidationError, whole: str = "(top level)") -> str:
    """Every error as `location: message`; `whole` names the input when no field is at fault."""
    return describe_errors(error.errors(), whole=whole)[0]


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
