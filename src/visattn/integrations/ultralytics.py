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

import re
import tempfile
from pathlib import Path

import torch
from torch import nn
from ultralytics.nn import tasks
from ultralytics.nn.modules import C2f, C3k2, TorchVision

from ..attention import create_block
from ..models import create_model

try:  # GFLOPs in YOLO's summaries with the attention products (Ultralytics' thop; absent: YOLO prints 0.0)
    from . import thop as _thop  # noqa: F401
except ImportError:
    _thop = None


def auto_heads(channels: int, multiple: int = 1, head_dim: int = 32) -> int:
    """About one head per ``head_dim`` channels: the largest count <= channels // head_dim that divides
    ``channels`` and is a multiple of ``multiple`` (at least ``multiple``)."""
    for heads in range(max(channels // head_dim, multiple), 0, -1):
        if channels % heads == 0 and heads % multiple == 0:
            return heads
    raise ValueError(f"no head count divides {channels} channels and is a multiple of {multiple} (one head group per "
                     f"dilation); give the layer a channel count divisible by {multiple}, or fewer dilations")


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
        self.build_for(x.shape[1], x.device, x.dtype if x.is_floating_point() else torch.float32)

    def build_for(self, channels: int, device=None, dtype=torch.float32) -> YOLOAttention:
        """Build the block for ``channels`` now (the CSP blocks know their width when they are built)."""
        heads = self.num_heads or self.heads_for(channels)
        with torch.inference_mode(False):  # Ultralytics builds under inference mode; parameters must train later
            block = create_block(self.block_name, channels, heads, **self.kwargs)
        self.block = block.to(device=device, dtype=dtype)
        return self

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


ATTENTION = (HiLo, MSDA, Outlook, CloAttn)


class ParsedAs(type):
    """Metaclass of layers that Ultralytics' YAML parser must treat as one of its own classes (``parse_as``): the
    parser decides by set membership (``m in base_modules``) which rows get input channels, width-scaled output
    channels and depth-scaled repeats, and offers no other way in. A class of this metaclass hashes and compares
    equal to ``parse_as`` (only that: it stays a class of its own, a subclass of ``parse_as`` where it is one)."""

    parse_as: type

    def __eq__(cls, other):
        return other is cls or other is cls.parse_as

    def __hash__(cls):
        return hash(cls.parse_as)


def _csp_init(base):
    def __init__(self, c1: int, c2: int, n: int = 1, *args):
        head, block_args = args[:self.base_args], args[self.base_args:]
        base.__init__(self, c1, c2, n, *head)
        # a visattn layer (x + block(x)) after each inner block, as Ultralytics' own C3k2(attn=True) puts a PSABlock
        self.m = nn.ModuleList(nn.Sequential(m, self.layer(*block_args).build_for(self.c)) for m in self.m)
    return __init__


def _csp(base: type, layer: type[YOLOAttention], base_args: int) -> type:
    """``<base>_<layer>``: Ultralytics' ``base`` (C2f / C3k2, built by its own constructor) with ``layer`` after each
    of its inner blocks. YAML arguments: the base's (C2f: shortcut; C3k2: c3k, e), then the layer's."""
    name = f"{base.__name__}_{layer.__name__}"
    cls = ParsedAs(name, (base,), dict(__init__=_csp_init(base), __module__=__name__, __qualname__=name, layer=layer,
                                       base_args=base_args, parse_as=base,
                                       __doc__=f"Ultralytics' {base.__name__} with visattn's {layer.__name__} after "
                                               f"each inner block."))
    return cls


CSP = {c.__name__: c for base, k in ((C2f, 1), (C3k2, 2)) for c in (_csp(base, layer, k) for layer in ATTENTION)}
globals().update(CSP)  # importable by name: Ultralytics pickles whole models


class VisattnBackbone(nn.Module, metaclass=ParsedAs):
    """A visattn backbone as the first row of a YOLO YAML, returning a list of NCHW maps that ``Index`` rows pick
    (Ultralytics' ``TorchVision`` + ``Index`` convention, parsed as ``TorchVision``: the row's first argument is its
    declared output channels)::

        - [-1, 1, VisattnBackbone, [768, litv2_s]]          # args: c2, model, weights=None, out_indices=(1, 2, 3)
        - [0, 1, Index, [192, 0]]                           # P3/8   (channels: feature_info of the model)
        - [0, 1, Index, [384, 1]]                           # P4/16
        - [0, 1, Index, [768, 2]]                           # P5/32

    ``weights`` is an official checkpoint's path (``create_model(..., pretrained=weights)``); the default
    ``out_indices`` give strides 8, 16, 32, the levels a YOLO neck reads; ``overrides`` (a YAML mapping) are
    constructor arguments (``{drop_path_rate: 0.1}``).
    """

    parse_as = TorchVision

    def __init__(self, model: str, weights: str | None = None, out_indices=(1, 2, 3), overrides: dict | None = None):
        super().__init__()
        with torch.inference_mode(False):
            self.m = create_model(model, pretrained=weights, features_only=True, out_indices=tuple(out_indices),
                                  **(overrides or {}))
        self.model_name = model

    @property
    def channels(self) -> list[int]:
        return [info["num_chs"] for info in self.m.feature_info]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.m(x)

    def extra_repr(self) -> str:
        return f"{self.model_name}, maps {[(i['num_chs'], i['reduction']) for i in self.m.feature_info]}"


LAYERS = {**{cls.__name__: cls for cls in ATTENTION}, **CSP, "VisattnBackbone": VisattnBackbone}


def scaled_yaml(path, scale: str, folder=None) -> Path:
    """A copy of the model YAML ``path`` named for ``scale`` (``yolo11-visattn-csp.yaml`` ->
    ``yolo11n-visattn-csp.yaml``) in ``folder`` (default: ``visattn-yolo`` in the temporary directory).

    Ultralytics reads the scale from the letter after the number in a YAML's file name; when the named file does not
    exist it strips that letter with a regular expression applied to the whole path, which also rewrites folders
    such as ``exp2s/`` or ``10m0/``. A file that exists under its scaled name is read as it is."""
    path = Path(path)
    if scale not in ("n", "s", "m", "l", "x"):
        raise ValueError(f"scale must be one of n, s, m, l, x, got {scale!r}")
    if not path.is_file():
        raise FileNotFoundError(f"no model YAML at {path}")
    stem, found = re.subn(r"^(yolo(?:e-)?v?\d+)", rf"\g<1>{scale}", path.stem, count=1)
    if not found:  # Ultralytics finds the scale only after "yolo<digits>"
        stem = f"yolo0{scale}-{path.stem}"
    folder = Path(folder) if folder is not None else Path(tempfile.gettempdir()) / "visattn-yolo"
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{stem}{path.suffix}"
    out.write_text(path.read_text())
    return out


def yolo(path, scale: str = "n", **kwargs):
    """``ultralytics.YOLO`` for the model YAML ``path`` at ``scale`` (see :func:`scaled_yaml`)."""
    from ultralytics import YOLO

    return YOLO(str(scaled_yaml(path, scale)), **kwargs)


def register() -> None:
    """Make the layers usable by name in YOLO YAMLs (done on import; calling it again changes nothing)."""
    namespace = vars(tasks)
    for name, cls in LAYERS.items():
        if namespace.get(name, cls) is not cls:
            raise RuntimeError(f"Ultralytics already defines a layer named {name!r}; visattn will not replace it")
        namespace[name] = cls


register()
