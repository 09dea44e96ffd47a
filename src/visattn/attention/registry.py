"""Blocks by name: ``create_block("hilo", dim=64)``. The one place that knows how a named configuration is built;
the benchmark, export, integrations and tests all go through it.

A registered block is a class plus a function ``(dim, num_heads) -> default keyword arguments`` (settings such as
DilateFormer's dilations depend on the head count). ``create_block`` fills in those defaults and lets any keyword
argument of the class override them.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .baselines import SpatialReductionAttention, WindowAttention
from .clo import CloAttention
from .dilated import MultiScaleDilatedAttention
from .hilo import HiLoAttention
from .mhsa import MultiHeadSelfAttention
from .outlook import OutlookAttention


@dataclass(frozen=True)
class BlockEntry:
    """A named block configuration."""

    name: str
    cls: type[nn.Module]
    defaults: Callable[[int, int], dict]  # (dim, num_heads) -> keyword arguments
    describe: Callable[[int], str]  # num_heads -> one line about the configuration
    paper: bool = False  # one of the four paper blocks

    def arguments(self) -> list[str]:
        return [p for p in inspect.signature(self.cls.__init__).parameters if p not in ("self", "dim", "num_heads")]


_BLOCKS: dict[str, BlockEntry] = {}


def register_block(name: str, cls: type[nn.Module], defaults: Callable[[int, int], dict] | None = None,
                   describe: Callable[[int], str] | None = None, paper: bool = False) -> None:
    """Add a named configuration of a channels-last block class ``cls(dim, num_heads, **kwargs)``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a block name must be a non-empty string, got {name!r}")
    if name in _BLOCKS:
        raise ValueError(f"block {name!r} is registered already ({_BLOCKS[name].cls.__name__}); choose another name")
    _BLOCKS[name] = BlockEntry(name, cls, defaults or (lambda d, h: {}), describe or (lambda h: cls.__name__), paper)


def list_blocks(pattern: str = "*", paper_only: bool = False) -> list[str]:
    """Registered block names matching a shell-style ``pattern``, the four paper blocks first."""
    names = [n for n, e in _BLOCKS.items() if fnmatch.fnmatch(n, pattern) and (e.paper or not paper_only)]
    return sorted(names, key=lambda n: (not _BLOCKS[n].paper, list(_BLOCKS).index(n)))


def block_entry(name: str) -> BlockEntry:
    if name not in _BLOCKS:
        raise ValueError(f"unknown block {name!r}; choose from {', '.join(list_blocks())}")
    return _BLOCKS[name]


def create_block(name: str, dim: int = 64, num_heads: int = 4, **kwargs) -> nn.Module:
    """Build the block registered as ``name`` for ``dim`` channels and ``num_heads`` heads.

    Keyword arguments (official names: ``window_size``, ``kernel_size``, ``dilation``, ``impl``...) override the
    configuration's defaults; one the class does not take raises ``ValueError`` naming the ones it does.
    """
    entry = block_entry(name)
    allowed = entry.arguments()
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"block {name!r} ({entry.cls.__name__}) does not take {unknown}; its arguments are: "
                         f"{', '.join(allowed)}")
    return entry.cls(dim, num_heads, **{**entry.defaults(dim, num_heads), **kwargs})


def _dilations(num_heads: int) -> tuple[int, ...]:
    """DilateFormer's (1, 2, 3) when the heads split into three groups, else the longest prefix that fits."""
    for groups in (3, 2, 1):
        if num_heads % groups == 0:
            return (1, 2, 3)[:groups]
    return (1,)


register_block("hilo", HiLoAttention, lambda d, h: dict(window_size=2, alpha=0.5),
               lambda h: f"window 2, {int(h * 0.5)} of {h} heads Lo-Fi", paper=True)
register_block("dilated", MultiScaleDilatedAttention, lambda d, h: dict(kernel_size=3, dilation=_dilations(h)),
               lambda h: f"kernel 3, dilations {list(_dilations(h))}", paper=True)
register_block("outlook", OutlookAttention, lambda d, h: dict(kernel_size=3, padding=1, stride=1),
               lambda h: "kernel 3, padding 1, stride 1", paper=True)
register_block("clo", CloAttention,
               lambda d, h: dict(group_split=(h // 2, h - h // 2), kernel_sizes=(5,), window_size=4),
               lambda h: f"{h // 2} local heads (kernel 5), {h - h // 2} global (pool 4)", paper=True)
register_block("hilo_lit", HiLoAttention, lambda d, h: dict(qkv_bias=True, window_size=2, alpha=0.9),
               lambda h: f"LITv2 stage 3: window 2, alpha 0.9 ({int(h * 0.9)} of {h} heads Lo-Fi)")
register_block("window", WindowAttention, lambda d, h: dict(window_size=7), lambda h: "Swin window 7 (comparison)")
register_block("sra", SpatialReductionAttention, lambda d, h: dict(sr_ratio=2),
               lambda h: "PVT reduction 2 (comparison)")
register_block("mhsa", MultiHeadSelfAttention, describe=lambda h: "global attention (comparison)")
