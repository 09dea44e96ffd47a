"""Timing and memory of blocks and backbones: the machinery behind ``visattn bench`` and ``visattn blocks``.

Each group of cases that differ only in ``impl`` is timed round-robin (one call of each path in turn), so that
machine noise hits both paths alike and their ratio is fair. Latency is the median after warm-up, with the
25th-75th percentile spread; peak memory is measured in a separate pass (``visattn.memory.peak_memory``: the CUDA
allocator's peak, or the peak of live tensor storages on CPU).

The ``reference`` path of a paper block is its official formulation (:mod:`visattn.attention.official`); of the
comparison blocks and the backbones, the module built with ``impl="reference"``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..attention import Official, block_entry, create_block, list_blocks
from ..attention.official import FORMULATIONS
from ..layers import DropPath
from ..macs import count_macs
from ..memory import peak_memory
from ..models import create_model


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


def timm_peer(name: str, size: int) -> nn.Module:
    """timm's implementation of a visattn VOLO variant at ``size`` px, holding the weights of visattn's (so both
    compute the same outputs). Needs timm (the integration environment)."""
    try:
        import timm  # optional: only the timm peer needs it
    except ImportError as err:
        raise ValueError("the timm peer needs timm (and torchvision): see the README's integration section") from err
    if not name.startswith("volo_"):
        raise ValueError(f"the timm peer exists for VOLO variants only, not {name!r}")
    timm_name = name if name.count("_") == 2 else f"{name}_224"
    ours = create_model(name, img_size=size)
    peer = timm.create_model(timm_name, img_size=size)
    peer.load_state_dict(ours.state_dict())
    return peer


def _module(case: Case) -> nn.Module:
    if case.kind == "model":
        if case.impl == "timm":
            return timm_peer(case.name, case.size[0])
        # built for the benchmark size: VOLO's position embedding then needs no resize per call (as timm's)
        return create_model(case.name, impl=case.impl, img_size=case.size[0])
    block = create_block(case.name, case.dim, case.heads, impl=case.impl)
    return Official(block) if case.impl == "reference" and type(block) in FORMULATIONS else block


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
    for name in list_blocks(paper_only=True):
        block = create_block(name, dim, num_heads).eval()
        x = torch.randn(batch, *size, dim)
        with torch.inference_mode():
            times = time_call(lambda b=block, x=x: b(x), repeat=repeat)
        rows.append(dict(block=name, setting=block_entry(name).describe(num_heads),
                         params=sum(p.numel() for p in block.parameters()),
                         macs=count_macs(block, x).total, latency_ms=1e3 * statistics.median(times)))
    return rows
