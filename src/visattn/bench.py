"""Block registry for benchmarking and the summary table printed by ``visattn``."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .attention import CloAttention, HiLoAttention, MultiScaleDilatedAttention, OutlookAttention
from .macs import count_macs


@dataclass(frozen=True)
class BlockSpec:
    """How the benchmark builds one block from ``(dim, num_heads, impl)``."""

    name: str
    build: Callable[[int, int, str], nn.Module]
    setting: Callable[[int], str]  # num_heads -> description of the configuration used


def _dilations(num_heads: int) -> tuple[int, ...]:
    """DilateFormer's (1, 2, 3) when the heads split into three groups, else the longest prefix that fits."""
    for groups in (3, 2, 1):
        if num_heads % groups == 0:
            return (1, 2, 3)[:groups]
    return (1,)


BLOCKS: dict[str, BlockSpec] = {
    spec.name: spec
    for spec in (
        BlockSpec("hilo", lambda d, h, impl: HiLoAttention(d, h, window_size=2, alpha=0.5, impl=impl),
                  lambda h: f"window 2, {int(h * 0.5)} of {h} heads Lo-Fi"),
        BlockSpec("dilated", lambda d, h, impl: MultiScaleDilatedAttention(d, h, kernel_size=3, dilation=_dilations(h),
                                                                           impl=impl),
                  lambda h: f"kernel 3, dilations {list(_dilations(h))}"),
        BlockSpec("outlook", lambda d, h, impl: OutlookAttention(d, h, kernel_size=3, padding=1, stride=1, impl=impl),
                  lambda h: "kernel 3, padding 1, stride 1"),
        BlockSpec("clo", lambda d, h, impl: CloAttention(d, h, group_split=(h // 2, h - h // 2), kernel_sizes=(5,),
                                                         window_size=4, impl=impl),
                  lambda h: f"{h // 2} local heads (kernel 5), {h - h // 2} global (pool 4)"),
    )
}


def build_block(name: str, dim: int = 64, num_heads: int = 4, impl: str = "fast") -> nn.Module:
    if name not in BLOCKS:
        raise ValueError(f"unknown block {name!r}; choose from {sorted(BLOCKS)}")
    return BLOCKS[name].build(dim, num_heads, impl)


def time_call(fn: Callable[[], object], warmup: int = 2, repeat: int = 10) -> list[float]:
    """Seconds per call of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def summary_rows(dim: int = 64, num_heads: int = 4, size: tuple[int, int] = (56, 56), batch: int = 1,
                 repeat: int = 10) -> list[dict]:
    """One row per block: parameters, MACs and median forward latency (fast path, float32, inference)."""
    rows = []
    for name, spec in BLOCKS.items():
        block = build_block(name, dim, num_heads).eval()
        x = torch.randn(batch, *size, dim)
        with torch.inference_mode():
            times = time_call(lambda b=block, x=x: b(x), repeat=repeat)
        rows.append(dict(block=name, setting=spec.setting(num_heads), params=sum(p.numel() for p in block.parameters()),
                         macs=count_macs(block, x).total, latency_ms=1e3 * statistics.median(times)))
    return rows


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """columns: (key, header, format spec); text columns are left-aligned, numbers right-aligned."""
    cells = [[format(r[k], f) for k, _, f in columns] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h, _) in enumerate(columns)]
    left = [all(isinstance(r[k], str) for r in rows) for k, _, _ in columns]

    def join(values):
        parts = (v.ljust(w) if lf else v.rjust(w) for v, w, lf in zip(values, widths, left, strict=True))
        return "  ".join(parts).rstrip()

    header = join([h for _, h, _ in columns])
    return "\n".join([header, "-" * len(header)] + [join(c) for c in cells])
