"""Small helpers shared by the family files."""

from __future__ import annotations


def per_stage(name: str, values, n: int) -> tuple:
    """Check that a per-stage argument has one entry per stage."""
    values = tuple(values)
    if len(values) != n:
        raise ValueError(f"{name} needs one entry per stage ({n} stages from depths), got {len(values)}: {list(values)}")
    return values
