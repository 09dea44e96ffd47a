"""The hook through which kernels report their own multiply-accumulate count to :func:`visattn.count_macs`, and
to other counters.

The active counter lives in a context variable (thread- and task-local), not in module state: a count running in
one thread never sees a kernel called from another. The call also goes through ``__torch_function__``
(:func:`kernel` is overridable like a torch function), so a ``TorchFunctionMode`` sees each kernel call with its
MAC count as the second argument: that is how thop (ultralytics-thop) counts them (``visattn.integrations.thop``).
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Protocol

import torch

from .._modes import is_tracing


class Counter(Protocol):
    suppress: int

    def book(self, name: str, macs: int) -> None: ...


_ACTIVE: ContextVar[Counter | None] = ContextVar("visattn_mac_counter", default=None)


@contextlib.contextmanager
def counting(counter: Counter):
    """Make ``counter`` the one kernels book into, for the duration of the ``with`` block."""
    token = _ACTIVE.set(counter)
    try:
        yield counter
    finally:
        _ACTIVE.reset(token)


def counted(name: str, macs: int, fn, *args):
    """Run ``fn(*args)``; inside a count, book ``macs`` under ``name`` instead of the ops ``fn`` runs."""
    if not is_tracing():
        tensors = tuple(a for a in args if isinstance(a, torch.Tensor))
        if torch.overrides.has_torch_function(tensors):  # a TorchFunctionMode (a FLOP counter) or a tensor subclass
            return torch.overrides.handle_torch_function(kernel, tensors, name, macs, fn, *args)
    return kernel(name, macs, fn, *args)


def kernel(name: str, macs: int, fn, *args):
    """``fn(*args)``, a kernel of ``macs`` multiply-accumulates; booked with the active :func:`counting` counter."""
    counter = None if is_tracing() else _ACTIVE.get()  # a count never runs traced code (dynamo cannot read it)
    if counter is None:
        return fn(*args)
    counter.book(name, macs)
    counter.suppress += 1
    try:
        return fn(*args)
    finally:
        counter.suppress -= 1
