"""What every importer yields besides records: a rejection with its location and reason."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True)
class Rejected:
    """An entry that could not be imported: where it is (file:line) and why."""

    location: str
    reason: str


def describe_validation_error(exc: ValidationError) -> str:
    """The first few field errors of a pydantic error, on one line."""
    parts = []
    for err in exc.errors()[:3]:
        field = ".".join(str(p) for p in err["loc"]) or "record"
        parts.append(f"{field}: {err['msg']}")
    return "; ".join(parts)
