"""The one place where code asks how it is being run: traced (``torch.compile``, ``torch.export``, the ONNX
exporter) or eager, whether autograd is recording, and whether a forward hook observes a module's output.

Kernels use :func:`is_tracing` to keep traced graphs free of branches on symbolic sizes (pad unconditionally
instead of ``if H % ws``) and to avoid ``out=`` writes into strided slices (dynamo rejects them), and
:func:`records_grad` to choose between an autograd function that saves little and a buffered inference path;
inside ``torch.func`` transforms (:func:`under_transform`) kernels use plain differentiable operations instead.
:func:`attention_recorder` says whether attention probabilities are being recorded (``visattn.explain``): kernels
then hand their reference probabilities to it beside the output they compute as always.
:func:`check` raises a user error in eager mode and records the same condition as a runtime assertion while
tracing, so every check runs on every path.
"""

from __future__ import annotations

import contextlib
import threading

import torch
from torch import nn
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks


def is_tracing() -> bool:
    """True while a tracer records the code: dynamo (``torch.compile``, ``torch.export``,
    ``torch.onnx.export(dynamo=True)``) or the TorchScript tracer (``torch.jit.trace``, the legacy ONNX exporter
    that Ultralytics' ``export(format="onnx")`` uses)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def is_exporting() -> bool:
    """True while an exporter traces the code (``torch.export``, ``torch.onnx.export``): kernels may then record
    the formulation that makes the best exported graph, which is not always the fastest eager one."""
    return torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()


def is_graph_exporting() -> bool:
    """True while ``torch.export`` (directly or under ``torch.onnx.export(dynamo=True)``) traces the code: shapes are
    symbolic and ops such as ``fold`` export with them. Not under the legacy TorchScript-based ONNX exporter (what
    Ultralytics' ``export(format="onnx")`` uses), whose ``col2im`` needs constant sizes."""
    return torch.compiler.is_exporting()


def is_compiling() -> bool:
    """True while ``torch.compile`` (dynamo, not an exporter) traces the code for inductor."""
    return torch.compiler.is_compiling() and not is_exporting()


def observed(module: torch.nn.Module) -> bool:
    """True when a forward hook (on ``module``, inside it, or global) may hold a reference to what ``module``
    returns: such an output must not be overwritten in place by the eager-inference buffer reuse."""
    return bool(_global_forward_hooks) or any(m._forward_hooks for m in module.modules())


def plain(*layers: nn.Module) -> bool:
    """True when every layer is an untouched ``nn.Linear`` / ``nn.Conv2d``: exactly that class, no forward hooks
    (its own or global; pruning masks are pre-hooks), no parametrization. Blocks may then read the weights into fused
    or layout-saving products; otherwise they call the layer, so hooks (Grad-CAM, thop, pruning masks), LoRA-style
    wrappers put in its place, quantized replacements and parametrizations take effect."""
    if _global_forward_hooks or _global_forward_pre_hooks:
        return False
    for m in layers:
        if (type(m) not in (nn.Linear, nn.Conv2d) or m._forward_hooks or m._forward_pre_hooks
                or "parametrizations" in m._modules):
            return False
    return True


def storage_id(t: torch.Tensor) -> tuple[int, int]:
    """Which memory ``t`` views (its storage object and offset), read without touching the data pointer: fake tensors
    (``FakeTensorMode``, tracing tools) warn on ``data_ptr()`` and will refuse it."""
    return t.untyped_storage()._cdata, t.storage_offset()


def tensor_version(t: torch.Tensor) -> int | None:
    """``t._version`` (bumped by every in-place change), or None for an inference tensor, which keeps none."""
    return None if t.is_inference() else t._version


def records_grad(*tensors: torch.Tensor) -> bool:
    """True when autograd is on and records an operation on any of ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def under_transform() -> bool:
    """True inside a ``torch.func`` transform (grad, vmap, jacrev...): custom autograd functions are avoided."""
    return torch._C._functorch.peek_interpreter_stack() is not None


_recording = threading.local()  # .sinks: the recorders active in this thread, innermost last
_recordings = 0  # recordings open in any thread: the one read the kernels pay for when none is
_count_lock = threading.Lock()


def attention_recorder():
    """The sink kernels hand their attention probabilities to (``sink.report(kind, probs, values=None)``) while
    :func:`visattn.explain.record_attention` is active in this thread, else None. Never while traced or inside a
    ``torch.func`` transform (recording is an eager-mode tool): then the kernels run exactly as without it."""
    if not _recordings or is_tracing() or under_transform():  # dynamo never reads the thread-local state
        return None
    sinks = getattr(_recording, "sinks", None)
    return sinks[-1] if sinks else None


@contextlib.contextmanager
def recording_attention(sink):
    """Make ``sink`` this thread's :func:`attention_recorder` for the ``with`` body (nested recordings: innermost)."""
    global _recordings
    sinks = _recording.__dict__.setdefault("sinks", [])
    sinks.append(sink)
    with _count_lock:
        _recordings += 1
    try:
        yield sink
    finally:
        with _count_lock:
            _recordings -= 1
        del sinks[max(i for i, s in enumerate(sinks) if s is sink)]


def check(condition, message: str, error: type[Exception] = ValueError) -> None:
    """Raise ``error(message)`` when ``condition`` is false. Under ``torch.compile`` a condition on symbolic sizes
    becomes ``torch._check``; under ``torch.export`` it is left out: on the exporter's backed sizes it would become a
    guard that narrows the user's ``Dim`` ranges (the checks guard user input; traced kernels pad so they hold)."""
    if torch.compiler.is_exporting():
        return
    if torch.compiler.is_compiling():  # dynamo: symbolic sizes (the TorchScript tracer has concrete ones)
        torch._check(condition, lambda: message)
    elif not condition:
        raise error(message)


def round_up(n, multiple: int):
    """``n`` rounded up to a multiple of ``multiple``, written as ``ceil(n / m) * m`` so that, for a symbolic ``n``
    (``torch.export`` with named ``Dim`` ranges), the result is visibly a positive multiple: ``round_up(H, ws) // ws``
    and ``% ws`` then simplify, where ``H + (-H) % ws`` leaves guards on floor divisions no range can prove."""
    count = (n + multiple - 1) // multiple
    if isinstance(n, torch.SymInt):  # a count the solver knows is >= 1: reshapes of (count, ws) need count > 0
        count = torch.sym_max(1, count)
    return count * multiple


def crop_hw(t: torch.Tensor, H, W) -> torch.Tensor:
    """``t[..., :H, :W, :]`` of a ``(..., Hp, Wp, C)`` tensor with ``H <= Hp``, ``W <= Wp``. Traced by dynamo, a
    negative pad instead of a slice: a slice makes the exporter compare ``H`` with ``Hp``, a guard it cannot always
    prove, while the pad's output size is exactly ``H``."""
    if torch.compiler.is_compiling():
        Hp, Wp = t.shape[-3], t.shape[-2]
        return torch.nn.functional.pad(t, (0, 0, 0, W - Wp, 0, H - Hp))
    return t[..., :H, :W, :]
