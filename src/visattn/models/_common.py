"""Small helpers shared by the family files."""

from __future__ import annotations


def per_stage(name: str, values, n: int) -> tuple:
    """Check that a per-stage argument has one entry per stage."""
    values = tuple(values)
    if len(values) != n:
        raise ValueError(f"{name} needs one entry per stage ({n} stages from depths), "
                         f"got {len(values)}: {list(values)}")
    return values


def drop_path_schedule(rate: float, n: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to ``rate`` over ``n`` blocks (``torch.linspace(0, rate, n)``)."""
    return [rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]
