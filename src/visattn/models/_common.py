"""Small helpers shared by the family files."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .. import _validate

_POSITIVE_INTS = ("embed_dim", "patch_size", "stem_hidden_dim", "kernel_size", "out_kernel", "out_stride",
                  "pooling_scale")
_STAGE_INTS = ("depths", "layers", "embed_dims", "num_heads", "mlp_kernel_sizes", "window_sizes")
_PROBABILITIES = ("drop_rate", "attn_drop_rate", "drop_path_rate", "attn_drop", "mlp_drop")


def _positive_number(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_arguments(arguments: dict) -> None:
    """Check the arguments every family shares by name (a family passes its ``locals()``), so that a bad override
    fails here with its name rather than deep inside a layer."""
    for name in _POSITIVE_INTS:
        if name in arguments:
            _validate.positive_int(name, arguments[name])
    for name in _STAGE_INTS:
        if name in arguments:
            values = arguments[name]
            if not isinstance(values, Sequence) or isinstance(values, str) or not values:
                raise ValueError(f"{name} must be a non-empty list with one entry per stage, got {values!r}")
            for i, v in enumerate(values):
                _validate.positive_int(f"{name}[{i}]", v)
    for name in _PROBABILITIES:
        if name in arguments:
            _validate.probability(name, arguments[name])
    if "mlp_ratio" in arguments:
        _positive_number("mlp_ratio", arguments["mlp_ratio"])
    for i, r in enumerate(arguments.get("mlp_ratios", ())):
        _positive_number(f"mlp_ratios[{i}]", r)
    if "qk_scale" in arguments:
        _validate.qk_scale(arguments["qk_scale"])


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
