"""Argument and input checks shared by every block.

User errors raise ``ValueError`` / ``TypeError`` whose message names the argument and the fix, so that a
mistake surfaces at the call site instead of as a reshape error deep inside a kernel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

IMPLS = ("fast", "reference")


def positive_int(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def odd_int(name: str, value) -> int:
    positive_int(name, value)
    if value % 2 == 0:
        raise ValueError(
            f"{name} must be odd so that the window is centred on its query, got {value}; "
            f"use {value - 1} or {value + 1}"
        )
    return value


def int_list(name: str, value, *, minimum: int = 1, odd: bool = False) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise TypeError(f"{name} must be a list of ints, got {type(value).__name__} ({value!r})")
    out = []
    for i, v in enumerate(value):
        if odd:
            odd_int(f"{name}[{i}]", v)
        else:
            positive_int(f"{name}[{i}]", v, minimum=minimum)
        out.append(int(v))
    return tuple(out)


def flag(name: str, value) -> bool:
    """A real bool (``qkv_bias="no"`` is a string, and a non-empty string is truthy: refused)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def probability(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1), got {type(value).__name__}")
    if not 0.0 <= value < 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return float(value)


def qk_scale(value) -> float | None:
    """``None`` (use ``hd ** -0.5``) or a finite positive number."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"qk_scale must be a positive number or None (hd ** -0.5), got {type(value).__name__} "
                        f"({value!r})")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"qk_scale must be a finite number > 0 or None (hd ** -0.5), got {value!r}")
    return float(value)


def heads(dim, num_heads) -> int:
    """Check ``dim`` and ``num_heads`` and return the head dimension."""
    positive_int("dim", dim)
    positive_int("num_heads", num_heads)
    if dim % num_heads:
        divisors = [h for h in range(1, dim + 1) if dim % h == 0 and abs(h - num_heads) <= max(4, num_heads)]
        raise ValueError(
            f"dim ({dim}) must be divisible by num_heads ({num_heads}); choose num_heads in {divisors} "
            f"or a dim that is a multiple of {num_heads}"
        )
    return dim // num_heads


def impl(value) -> str:
    if value not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {value!r}")
    return value


def channels_last_map(x, dim: int, block: str) -> None:
    """Check that ``x`` is a floating ``(B, H, W, C)`` map with ``C == dim``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{block} expects a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{block} expects a floating-point tensor, got {x.dtype}; convert it with x.float()")
    if x.dim() != 4:
        hint = ""
        if x.dim() == 3:
            hint = "; for token sequences (B, N, C) wrap the block: visattn.TokenSequence(block)(x, H, W)"
        raise ValueError(f"{block} expects a channels-last map (B, H, W, C), got shape {tuple(x.shape)}{hint}")
    if x.shape[-1] != dim:
        hint = ""
        if x.shape[1] == dim:
            hint = "; this looks like an NCHW map: wrap the block with visattn.ChannelsFirst(block)"
        raise ValueError(f"{block} was built for dim={dim} channels but the input has {x.shape[-1]} "
                         f"(shape {tuple(x.shape)}, expected (B, H, W, {dim})){hint}")
    if x.shape[1] < 1 or x.shape[2] < 1:
        raise ValueError(f"{block} needs H, W >= 1, got shape {tuple(x.shape)}")
