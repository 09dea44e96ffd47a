"""visattn blocks by name in Ultralytics YOLO model YAMLs.

``import visattn.integrations.ultralytics`` (once, before the model is built) makes four layer names available::

    - [-1, 1, HiLo, []]               # LITv2 HiLo attention       args: [num_heads, window_size, alpha]
    - [-1, 1, MSDA, [8]]              # DilateFormer MSDA          args: [num_heads, kernel_size, dilation]
    - [-1, 1, Outlook, []]            # VOLO outlook attention     args: [num_heads, kernel_size, padding, stride]
    - [-1, 1, CloAttn, []]            # CloFormer attention        args: [num_heads, group_split, kernel_sizes,
                                      #                                   window_size]

Each layer takes an NCHW map and returns one of the same shape: ``x + block(x)``, the plain residual of YOLO's own
attention blocks (PSABlock). The channel count is read from the input when the model is first run (Ultralytics runs
every model once while building it), so one YAML works at every scale (n/s/m/l/x). ``num_heads`` defaults to one
head per 32 channels (rounded down to a count the block accepts); MSDA's default dilations are (1, 2), because YOLO
widths are rarely divisible into DilateFormer's three groups. Other arguments keep the official names and defaults.

Ultralytics has no plugin interface: the names are added to the namespace its YAML parser reads
(``ultralytics.nn.tasks``); :func:`register` is idempotent and never replaces an Ultralytics name. Ultralytics is
AGPL-3.0; this module only calls its public API.
"""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn import tasks

from ..attention import create_block


def auto_heads(channels: int, multiple: int = 1, head_dim: int = 32) -> int:
    """About one head per ``head_dim`` channels: the largest count <= channels // head_dim that divides
    ``channels`` and is a multiple of ``multiple`` (at least ``multiple``)."""
    for heads in range(max(channels // head_dim, multiple), 0, -1):
        if channels % heads == 0 and heads % multiple == 0:
            return heads
    return multiple


class YOLOAttention(nn.Module):
    """Base of the YAML layers: builds its visattn block for the input's channel count on the first call."""

    block_name = ""

    def __init__(self, num_heads: int | None = None, **kwargs):
        super().__init__()
        self.num_heads, self.kwargs = num_heads, kwargs
        self.block: nn.Module | None = None

    def heads_for(self, channels: int) -> int:
        return auto_heads(channels)

    def build(self, x: torch.Tensor) -> None:
        channels = x.shape[1]
        heads = self.num_heads or self.heads_for(channels)
        with torch.inference_mode(False):  # Ultralytics builds under inference mode; parameters must train later
            block = create_block(self.block_name, channels, heads, **self.kwargs)
        self.block = block.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.block is None:
            self.build(x)
        return x + self.block(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, C, H, W)

    def extra_repr(self) -> str:
        return f"{self.block_name}, num_heads={self.num_heads or 'auto'}, {self.kwargs}"


class HiLo(YOLOAttention):
    block_name = "hilo"

    def __init__(self, num_heads: int | None = None, window_size: int = 2, alpha: float = 0.5):
        super().__init__(num_heads, window_size=window_size, alpha=alpha)


class MSDA(YOLOAttention):
    block_name = "dilated"

    def __init__(self, num_heads: int | None = None, kernel_size: int = 3, dilation=(1, 2)):
        super().__init__(num_heads, kernel_size=kernel_size, dilation=tuple(dilation))

    def heads_for(self, channels: int) -> int:
        return auto_heads(channels, multiple=len(self.kwargs["dilation"]))


class Outlook(YOLOAttention):
    block_name = "outlook"

    def __init__(self, num_heads: int | None = None, kernel_size: int = 3, padding: int = 1, stride: int = 1):
        super().__init__(num_heads, kernel_size=kernel_size, padding=padding, stride=stride)


class CloAttn(YOLOAttention):
    block_name = "clo"

    def __init__(self, num_heads: int | None = None, group_split=None, kernel_sizes=(5,), window_size: int = 4):
        kwargs = dict(kernel_sizes=tuple(kernel_sizes), window_size=window_size)
        if group_split is not None:
            kwargs["group_split"] = tuple(group_split)
        super().__init__(num_heads, **kwargs)

    def heads_for(self, channels: int) -> int:
        return auto_heads(channels, multiple=2)  # half local, half global by default


LAYERS = {cls.__name__: cls for cls in (HiLo, MSDA, Outlook, CloAttn)}


def register() -> None:
    """Make the layers usable by name in YOLO YAMLs (done on import; calling it again changes nothing)."""
    namespace = vars(tasks)
    for name, cls in LAYERS.items():
        if namespace.get(name, cls) is not cls:
            raise RuntimeError(f"Ultralytics already defines a layer named {name!r}; visattn will not replace it")
        namespace[name] = cls


register()
