"""Benchmarks: blocks x feature-map sizes x batch sizes (and backbones), fast path beside reference path.

Each group of cases that differ only in ``impl`` is timed round-robin (one call of each path in turn), so
that machine noise hits both paths alike and their ratio is fair. Latency is the median after warm-up, with
the 25th-75th percentile spread; peak memory is measured in a separate pass (``visattn.memory.peak_memory``:
the CUDA allocator's peak, or the peak of live tensor storages on CPU).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from .attention import (
    CloAttention,
    HiLoAttention,
    MultiHeadSelfAttention,
    MultiScaleDilatedAttention,
    OutlookAttention,
    SpatialReductionAttention,
    WindowAttention,
)
from .layers import DropPath
from .macs import count_macs
from .memory import peak_memory


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
        BlockSpec("hilo_lit", lambda d, h, impl: HiLoAttention(d, h, qkv_bias=True, window_size=2, alpha=0.9,
                                                                impl=impl),
                  lambda h: f"LITv2 stage 3: window 2, alpha 0.9 ({int(h * 0.9)} of {h} heads Lo-Fi)"),
        BlockSpec("dilated",
                  lambda d, h, impl: MultiScaleDilatedAttention(d, h, kernel_size=3, dilation=_dilations(h), impl=impl),
                  lambda h: f"kernel 3, dilations {list(_dilations(h))}"),
        BlockSpec("outlook", lambda d, h, impl: OutlookAttention(d, h, kernel_size=3, padding=1, stride=1, impl=impl),
                  lambda h: "kernel 3, padding 1, stride 1"),
        BlockSpec("clo", lambda d, h, impl: CloAttention(d, h, group_split=(h // 2, h - h // 2), kernel_sizes=(5,),
                                                         window_size=4, impl=impl),
                  lambda h: f"{h // 2} local heads (kernel 5), {h - h // 2} global (pool 4)"),
        BlockSpec("window", lambda d, h, impl: WindowAttention(d, h, window_size=7, impl=impl),
                  lambda h: "Swin window 7 (comparison)"),
        BlockSpec("sra", lambda d, h, impl: SpatialReductionAttention(d, h, sr_ratio=2, impl=impl),
                  lambda h: "PVT reduction 2 (comparison)"),
        BlockSpec("mhsa", lambda d, h, impl: MultiHeadSelfAttention(d, h, impl=impl),
                  lambda h: "global attention (comparison)"),
    )
}
PAPER_BLOCKS = ("hilo", "dilated", "outlook", "clo")


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


@dataclass(frozen=True)
class Case:
    """One measurement: a block (or backbone) at one input size, path and mode."""

    kind: str  # "block" or "model"
    name: str
    size: tuple[int, int]
    batch: int
    impl: str = "fast"
    mode: str = "fwd"  # "fwd" (inference) or "fwdbwd" (training step without optimizer)
    dim: int = 64
    heads: int = 4
    dtype: str = "float32"
    device: str = "cpu"

    @property
    def group(self) -> Case:
        return replace(self, impl="")


def _module(case: Case) -> nn.Module:
    if case.kind == "model":
        from .models import create_model

        return create_model(case.name, impl=case.impl)
    return build_block(case.name, case.dim, case.heads, case.impl)


def _input_shape(case: Case) -> tuple[int, ...]:
    return (case.batch, 3, *case.size) if case.kind == "model" else (case.batch, *case.size, case.dim)


def case_macs(case: Case) -> int:
    """MACs of one forward pass of the case, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return count_macs(_module(case), torch.empty(_input_shape(case))).total


def _make(case: Case):
    """Module and input for a case (on its device and dtype)."""
    dtype, device = getattr(torch, case.dtype), torch.device(case.device)
    module = _module(case).to(device=device, dtype=dtype)
    x = torch.randn(_input_shape(case))
    module.train(case.mode == "fwdbwd")
    if case.mode == "fwdbwd":
        for m in module.modules():  # keep dropout / drop path / BatchNorm deterministic and comparable
            if isinstance(m, (nn.Dropout, nn.BatchNorm2d, DropPath)):
                m.eval()
    return module, x.to(device=device, dtype=dtype)


def _step(case: Case, module, x) -> Callable[[], None]:
    if case.mode == "fwd":
        def run():
            with torch.inference_mode():
                module(x)
        return run
    x = x.requires_grad_()
    grad = None

    def run():
        nonlocal grad
        x.grad = None
        for p in module.parameters():
            p.grad = None
        y = module(x)
        if grad is None:
            grad = torch.randn_like(y)
        y.backward(grad)
    return run


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure_group(cases: list[Case], warmup: int = 2, repeat: int = 7) -> list[dict]:
    """Time the cases of one group round-robin, then measure each one's peak memory and MACs."""
    built = [(c, *_make(c)) for c in cases]
    steps = [_step(c, m, x) for c, m, x in built]
    cuda = cases[0].device.startswith("cuda")
    for step in steps:
        for _ in range(warmup):
            step()
    _sync(cases[0].device)
    times = [[] for _ in steps]
    for _ in range(repeat):
        for i, step in enumerate(steps):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                step()
                end.record()
                torch.cuda.synchronize()
                times[i].append(start.elapsed_time(end) / 1e3)
            else:
                t0 = time.perf_counter()
                step()
                times[i].append(time.perf_counter() - t0)
    rows = []
    for (case, module, x), step, ts in zip(built, steps, times, strict=True):
        with peak_memory(case.device) as mem:
            step()
        q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        median = statistics.median(ts)
        rows.append(dict(**asdict(case), latency_ms=1e3 * median, p25_ms=1e3 * q[0], p75_ms=1e3 * q[2],
                         throughput=case.batch / median, peak_mib=mem.peak / 2 ** 20,
                         params=sum(p.numel() for p in module.parameters()), gmacs=case_macs(case) / 1e9))
        del module, x
    return rows


def summary_rows(dim: int = 64, num_heads: int = 4, size: tuple[int, int] = (56, 56), batch: int = 1,
                 repeat: int = 10) -> list[dict]:
    """One row per paper block: parameters, MACs and median forward latency (fast path, float32, inference)."""
    rows = []
    for name in PAPER_BLOCKS:
        block = build_block(name, dim, num_heads).eval()
        x = torch.randn(batch, *size, dim)
        with torch.inference_mode():
            times = time_call(lambda b=block, x=x: b(x), repeat=repeat)
        rows.append(dict(block=name, setting=BLOCKS[name].setting(num_heads),
                         params=sum(p.numel() for p in block.parameters()),
                         macs=count_macs(block, x).total, latency_ms=1e3 * statistics.median(times)))
    return rows


def format_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """columns: (key, header, format spec); text columns are left-aligned, numbers right-aligned."""
    def fmt(v, f):
        return "-" if v is None else format(v, f)

    cells = [[fmt(r.get(k), f) for k, _, f in columns] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h, _) in enumerate(columns)]
    left = [all(isinstance(r.get(k), str) for r in rows) for k, _, _ in columns]

    def join(values):
        parts = (v.ljust(w) if lf else v.rjust(w) for v, w, lf in zip(values, widths, left, strict=True))
        return "  ".join(parts).rstrip()

    header = join([h for _, h, _ in columns])
    return "\n".join([header, "-" * len(header)] + [join(c) for c in cells])


class Progress:
    """A one-line progress bar on stderr (a line per step when stderr is not a terminal)."""

    def __init__(self, total: int, stream=None):
        self.total, self.done, self.stream = total, 0, stream or sys.stderr
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.start = time.perf_counter()

    def step(self, label: str) -> None:
        self.done += 1
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        elapsed = time.perf_counter() - self.start
        line = f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {elapsed:5.0f}s {label}"
        if self.tty:
            self.stream.write("\r" + line[:110].ljust(110) + ("\n" if self.done == self.total else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
