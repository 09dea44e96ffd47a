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
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from ..attention import Official, block_entry, create_block, list_blocks
from ..attention.official import FORMULATIONS
from ..fuse import fuse
from ..layers import DropPath
from ..macs import count_macs
from ..memory import peak_memory
from ..models import create_model
from .runtimes import runtime_module


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
    runtime: str = "eager"  # "eager", "compile" or "onnxruntime" (app.runtimes)

    @property
    def label(self) -> str:
        """The path as the table shows it: ``fast``, ``fused``, ``reference``, ``timm``, ``fused/onnxruntime``..."""
        return self.impl if self.runtime == "eager" else f"{self.impl}/{self.runtime}"


NOISY_SPREAD = 1.15  # calibration p75/p25 above this: the machine's timings move too much for tight ratios


def machine_noise(repeat: int = 9) -> dict:
    """How quiet the machine is now: the 1-minute load average against the cores, and the spread (p75 / p25) of a
    fixed calibration workload (matrix products sized for ~5 ms) timed ``repeat`` times. Ratios measured while the
    spread is large or other processes keep the cores busy can move by 2x between runs."""
    import os

    a = torch.randn(384, 384)
    times = time_call(lambda: [a @ a for _ in range(8)], warmup=2, repeat=repeat)
    q = statistics.quantiles(times, n=4, method="inclusive")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    spread = q[2] / q[0] if q[0] > 0 else 1.0
    busy = load > max(cores - torch.get_num_threads(), 0) + 0.5
    return dict(load_1min=round(load, 2), cores=cores, threads=torch.get_num_threads(),
                calibration_ms=round(1e3 * statistics.median(times), 3), calibration_spread=round(spread, 3),
                noisy=bool(spread > NOISY_SPREAD or busy))


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
        if case.impl == "fused":  # the fast path with visattn.fuse's inference folds
            return fuse(create_model(case.name, img_size=case.size[0]))
        return create_model(case.name, impl=case.impl, img_size=case.size[0])
    block = create_block(case.name, case.dim, case.heads, impl=case.impl)
    return Official(block) if case.impl == "reference" and type(block) in FORMULATIONS else block


def _input_shape(case: Case) -> tuple[int, ...]:
    return (case.batch, 3, *case.size) if case.kind == "model" else (case.batch, *case.size, case.dim)


def case_macs(case: Case) -> int:
    """MACs of one forward pass of the case, counted on the meta device (nothing allocated)."""
    arithmetic = replace(case, impl="fast", runtime="eager") if case.impl == "fused" else case  # folds add none
    with torch.device("meta"):
        return count_macs(_module(arithmetic), torch.empty(_input_shape(case))).total


def _make(case: Case):
    """Module (as the case's runtime runs it), input (on the case's device and dtype) and parameter count."""
    dtype, device = getattr(torch, case.dtype), torch.device(case.device)
    module = _module(case).to(device=device, dtype=dtype)
    x = torch.randn(_input_shape(case)).to(device=device, dtype=dtype)
    module.train(case.mode == "fwdbwd")
    if case.mode == "fwdbwd":
        for m in module.modules():  # keep dropout / drop path / BatchNorm deterministic and comparable
            if isinstance(m, (nn.Dropout, nn.BatchNorm2d, DropPath)):
                m.eval()
    layout = "BCHW" if case.kind == "model" else "BHWC"
    if case.runtime == "compile":
        torch._dynamo.reset()  # each compiled case starts cold: its first call is its own compile time
    params = sum(p.numel() for p in module.parameters())
    return runtime_module(module, case.runtime, x, layout, case.mode), x, params


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
    steps = [_step(c, m, x) for c, m, x, _ in built]
    cuda = cases[0].device.startswith("cuda")
    first_call = []
    for step in steps:
        t0 = time.perf_counter()
        step()  # the first call: compiles under torch.compile
        _sync(cases[0].device)
        first_call.append(time.perf_counter() - t0)
        for _ in range(warmup - 1):
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
    for (case, module, x, params), step, ts, first in zip(built, steps, times, first_call, strict=True):
        # onnxruntime allocates outside PyTorch, and on the CPU the tracking dispatch mode would make a compiled
        # module recompile: their peaks are not measured (None)
        measured = case.runtime == "eager" or (case.runtime == "compile" and case.device.startswith("cuda"))
        with peak_memory(case.device) as mem:
            if measured:
                step()
        q = statistics.quantiles(ts, n=4, method="inclusive") if len(ts) > 1 else [ts[0]] * 3  # within the samples
        median = statistics.median(ts)
        rows.append(dict(**asdict(case), latency_ms=1e3 * median, p25_ms=1e3 * q[0], p75_ms=1e3 * q[2],
                         throughput=case.batch / median, first_call_s=first, label=case.label,
                         peak_mib=mem.peak / 2 ** 20 if measured else None,
                         params=params, gmacs=case_macs(case) / 1e9))
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
