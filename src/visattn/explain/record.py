"""Attention maps as data: :func:`record_attention` collects, during an ordinary forward, the attention
probabilities of every visattn attention block of a model, in each block's own structure.

While recording, each kernel computes its reference probabilities (the matrices of ``impl="reference"``) beside the
output, which it computes exactly as without recording: outputs are bit-for-bit the same. Without a recording the
kernels never build the matrices. Recording is an eager-mode tool (nothing is recorded while a model is traced).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .._modes import attention_recorder, recording_attention
from ..attention._common import AttentionPart


@dataclass
class AttentionMap:
    """One recorded attention computation of one block.

    Attributes:
        block: the block's path in the recorded module (``"layers.2.blocks.0.attn"``; ``""``: the module itself).
        part: what was computed and where it lies (:class:`~visattn.attention._common.AttentionPart`: ``name``,
            ``layout``, the block's ``heads`` it covers, query map ``size``, key grid, window / kernel / dilation /
            padding / stride).
        probs: the probabilities (gates for ``layout == "gate"``), detached, laid out as ``part.layout`` says.
        values: the values the probabilities weighted (softmax layouts; ``None`` otherwise), for
            :func:`visattn.explain.branch_output`.
        stage: the backbone stage the block belongs to (None outside a visattn backbone).
        image_stride: input pixels per map cell ``(sy, sx)``: the stage's reduction in a backbone, else the ratio of
            the model input's size to the map's, ``(1.0, 1.0)`` for a block recorded on its own.
    """

    block: str
    part: AttentionPart
    probs: torch.Tensor
    values: torch.Tensor | None = None
    stage: int | None = None
    image_stride: tuple[float, float] = (1.0, 1.0)

    @property
    def layout(self) -> str:
        return self.part.layout

    @property
    def heads(self) -> range:
        return range(*self.part.heads)

    def __repr__(self) -> str:
        return (f"AttentionMap({self.block!r}, {self.part.name!r}, layout={self.layout!r}, heads={self.part.heads}, "
                f"size={self.part.size}, probs={tuple(self.probs.shape)})")


class AttentionRecord(Sequence):
    """The :class:`AttentionMap` of every attention computation, in the order they ran (a read-only sequence);
    ``image_size`` is the model input's ``(H, W)`` when it was an image batch."""

    def __init__(self, maps=(), image_size: tuple[int, int] | None = None, pending=None):
        self._maps, self.image_size, self._pending = list(maps), image_size, pending

    def _all(self) -> list[AttentionMap]:
        if self._pending is not None:  # the last block's maps, once its kernels have all reported
            self._pending()
        return self._maps

    def __len__(self) -> int:
        return len(self._all())

    def __getitem__(self, i):
        return self._all()[i]

    def __repr__(self) -> str:
        return f"AttentionRecord({len(self)} maps of {len(self.blocks())} blocks, image_size={self.image_size})"

    def find(self, block: str | None = None, part: str | None = None, layout: str | None = None) -> AttentionRecord:
        """The maps whose block path, part name and layout match the ones given."""
        return AttentionRecord([m for m in self if (block is None or m.block == block)
                                and (part is None or m.part.name == part) and (layout is None or m.layout == layout)],
                               self.image_size)

    def blocks(self) -> list[str]:
        """The recorded block paths, in the order they ran, each once."""
        return list(dict.fromkeys(m.block for m in self))


def attention_blocks(module: nn.Module) -> dict[str, nn.Module]:
    """The attention modules inside ``module`` (itself included) that describe their maps (``attention_parts``)."""
    return {name: m for name, m in module.named_modules() if callable(getattr(m, "attention_parts", None))}


@contextlib.contextmanager
def record_attention(module: nn.Module):
    """Record the attention of every visattn attention block inside ``module`` while the ``with`` body runs.

    Example:
        >>> model = visattn.create_model("litv2_s").eval()
        >>> with visattn.explain.record_attention(model) as maps:
        ...     logits = model(images)
        >>> maps.find(part="lofi")[0].probs.shape   # (B, Lo-Fi heads, H*W, pooled keys)

    Works on backbones, on single blocks, and on blocks inside ``ChannelsFirst`` / ``TokenSequence`` or any other
    network. Records the probabilities before attention dropout (record in eval mode for the maps inference uses).
    Each forward inside the body appends its maps. Outputs are exactly those of the same call without recording.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"record_attention takes an nn.Module (a model or a block), got {type(module).__name__}")
    if attention_recorder() is not None:
        raise ValueError("record_attention is already active in this thread; record once, around the whole model")
    blocks = attention_blocks(module)
    if not blocks:
        raise ValueError(f"{type(module).__name__} holds no visattn attention block (visattn.list_blocks() names "
                         f"them, and the four backbone families use them); nothing could be recorded")
    recorder = _Recorder(module, blocks)
    try:
        with recording_attention(recorder):
            yield recorder.record
    finally:
        recorder.remove()
    if recorder.ran and not len(recorder.record):
        raise ValueError("the attention blocks ran but no kernel reported: the model was traced (torch.compile, "
                         "torch.export, jit.trace); record attention in eager mode")


class _Recorder:
    """Forward pre-hooks tell which block runs (and its map size); the kernels then report to this sink. Only
    pre-hooks: a forward hook on a block would make the block's caller keep its output out of place (see
    ``visattn._modes.observed``), which may change the memory layout, and so the rounding, of what follows. A block's
    frame is closed when all its parts have reported, at the next block's start or when the record is read."""

    def __init__(self, module: nn.Module, blocks: dict[str, nn.Module]):
        self.record = AttentionRecord(pending=self._close)
        self.frame: dict | None = None
        self.ran = False
        self.handles = []
        self.stages = [(info["module"] + ".", i, info["reduction"])
                       for i, info in enumerate(getattr(module, "stage_info", None) or [])]
        if "" not in blocks:  # a model: its input gives the image size
            self.handles.append(module.register_forward_pre_hook(self._image))
        for name, block in blocks.items():
            self.handles.append(block.register_forward_pre_hook(self._enter(name)))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self._close()
        self.record._pending = None

    def _image(self, module, args):
        if args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4:
            self.record.image_size = tuple(args[0].shape[-2:])

    def _enter(self, name):
        def hook(block, args):
            self._close()
            x = args[0]
            parts = block.attention_parts(*x.shape[1:-1])  # maps (B, H, W, C): (H, W); tokens (B, N, C): (N,)
            self.frame = dict(name=name, owner=type(block).__name__, parts=parts, batch=x.shape[0], reports=[])
            self.ran = True
        return hook

    def report(self, kind: str, probs: torch.Tensor, values: torch.Tensor | None = None) -> None:
        """Called by the kernels (through ``visattn._modes.attention_recorder``) with their probabilities."""
        frame = self.frame
        if frame is not None and len(frame["reports"]) < len(frame["parts"]):  # else: not a recorded block's kernel
            values = None if values is None else values.detach().clone()
            frame["reports"].append((kind, probs.detach(), values))

    def _close(self) -> None:
        """Turn the open frame into maps once every part has reported (an incomplete one raised: dropped)."""
        frame = self.frame
        if frame is None or len(frame["reports"]) < len(frame["parts"]):
            return
        self.frame = None
        kinds = [kind for kind, _, _ in frame["reports"]]
        if kinds != [p.report for p in frame["parts"]]:
            raise RuntimeError(f"{frame['owner']} at {frame['name']!r} reported {kinds} but describes "
                               f"{[p.report for p in frame['parts']]}; its attention_parts and forward disagree")
        for part, (_, probs, values) in zip(frame["parts"], frame["reports"], strict=True):
            part = self._place_class_token(part)
            _check_shape(part, probs, frame["batch"], frame["owner"])
            stage, stride = self._where(frame["name"], part)
            self.record._maps.append(AttentionMap(frame["name"], part, probs, values, stage, stride))

    def _place_class_token(self, part: AttentionPart) -> AttentionPart:
        """A class token attends to the tokens of the last map: give it that map's grid when the count fits."""
        if part.layout != "class":
            return part
        last = next((m for m in reversed(self.record._maps) if len(m.part.size) == 2), None)
        if last is None or last.part.size[0] * last.part.size[1] != part.size[0] - 1:
            return part
        return dataclasses.replace(part, key_size=tuple(last.part.size))

    def _where(self, name: str, part: AttentionPart) -> tuple[int | None, tuple[float, float]]:
        size = part.key_size if part.layout == "class" else part.size
        stage = next((i for prefix, i, _ in self.stages if name.startswith(prefix)), None)
        if stage is None and self.stages and name.rpartition(".")[0].startswith("post_network"):
            stage = len(self.stages) - 1  # VOLO's class attention: on the last stage's tokens
        if stage is not None:
            r = float(self.stages[stage][2])
            return stage, (r, r)
        image = self.record.image_size
        if image is None or size is None or len(size) != 2:
            return None, (1.0, 1.0)
        return None, (image[0] / size[0], image[1] / size[1])


def _check_shape(part: AttentionPart, probs: torch.Tensor, B: int, owner: str) -> None:
    """The recorded tensor has the layout the part describes (a block and its kernels agree)."""
    nh = part.heads[1] - part.heads[0]
    size = part.size
    if part.layout == "window":
        (Hp, Wp), ws = part.key_size, part.window
        expected = (B, nh, (Hp // ws) * (Wp // ws), ws * ws, ws * ws)
    elif part.layout == "global":
        expected = (B, nh, size[0] * size[1], part.key_size[0] * part.key_size[1])
    elif part.layout == "dilated":
        expected = (B, nh, *size, part.kernel_size ** 2)
    elif part.layout == "outlook":
        expected = (B, nh, *part.key_size, part.kernel_size ** 2, part.kernel_size ** 2)
    elif part.layout == "gate":
        expected = (B, *size, probs.shape[-1] if probs.shape[-1] % max(nh, 1) == 0 else -1)
    else:  # class
        expected = (B, nh, 1, size[0])
    if tuple(probs.shape) != expected:
        raise RuntimeError(f"{owner}: its {part.name!r} map has shape {tuple(probs.shape)}, but its attention_parts "
                           f"describe {expected}")
