"""Peak tensor memory of a piece of code, on any device.

On CUDA, :func:`peak_memory` uses the caching allocator's ``max_memory_allocated``. Elsewhere (CPU) a dispatch
mode sees every tensor an operation creates and follows its storage with a weak reference: the running total of
live storages created inside the block, and its maximum, are the same quantities ``max_memory_allocated`` reports
on CUDA (tensors that existed before the block, such as parameters and inputs, are not counted).
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class _StorageTracker(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.current = 0
        self.peak = 0
        self._live: dict[int, tuple[int, weakref.ref]] = {}

    def _release(self, key: int) -> None:
        size, _ = self._live.pop(key, (0, None))
        self.current -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key in self._live or storage.nbytes() == 0:
                continue
            ref = weakref.ref(storage, lambda _, k=key: self._release(k))
            self._live[key] = (storage.nbytes(), ref)
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
        return out


class peak_memory:  # noqa: N801  (used as a context manager, like torch.no_grad)
    """Context manager measuring the peak bytes of tensors allocated inside it: ``with peak_memory() as m: ...``,
    then ``m.peak`` (bytes)."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.peak = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._tracker = _StorageTracker().__enter__()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._tracker.__exit__(*exc)
            self.peak = self._tracker.peak
        return False
