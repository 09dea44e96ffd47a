"""One registry behind ``create_model`` / ``list_models``. A variant is a row: a family class plus its config."""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass, field

from torch import nn

from ..checkpoint import load_official
from ..hub import fetch
from ._base import Backbone
from ._features import FeatureExtractor


@dataclass(frozen=True)
class Paper:
    """Figures reported by the paper / official repository for one variant."""

    params_m: float
    macs_g: float | None  # as printed in the paper's table (None: not reported)
    top1: float
    resolution: int = 224
    note: str = ""
    # fine-tuned high-resolution checkpoints: (resolution, top-1, GMACs reported or None)
    extra: tuple[tuple[int, float, float | None], ...] = ()
    macs_counted_g: float | None = None  # an exact count of the official model where the paper rounds or omits
    excludes: str = ""  # a module-name fragment whose MACs the paper's figure leaves out

    @property
    def macs_reference_g(self) -> float:
        """The figure our own count is compared with: the exact count where one is known, else the paper's."""
        return self.macs_counted_g if self.macs_counted_g is not None else self.macs_g


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: type[Backbone]
    config: dict = field(default_factory=dict)
    paper: Paper | None = None


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, family: type[Backbone], config: dict, paper: Paper | None = None) -> None:
    """Register a variant: a row of ``family``'s constructor arguments under ``name`` (what ``create_model`` builds).

    ``config`` keys must be arguments of ``family``; ``paper`` holds the figures ``visattn models`` compares with.
    """
    if not isinstance(family, type) or not issubclass(family, Backbone):
        raise TypeError(f"family must be a visattn Backbone subclass, got {family!r}")
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is registered already; choose another name")
    unknown = sorted(set(config) - set(family_arguments(family)))
    if unknown:
        raise ValueError(f"{family.__name__} does not take {unknown}; its arguments are: "
                         f"{', '.join(family_arguments(family))}")
    _REGISTRY[name] = ModelSpec(name, family, dict(config), paper)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (``"volo_*"``), sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_spec(name: str) -> ModelSpec:
    if name not in _REGISTRY:
        close = fnmatch.filter(_REGISTRY, f"*{name.split('_')[0]}*") if isinstance(name, str) else []
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}"
                         + (f" (did you mean one of {close}?)" if close else ""))
    return _REGISTRY[name]


def family_arguments(family: type[Backbone]) -> list[str]:
    return [p for p in inspect.signature(family.__init__).parameters if p != "self"]


def create_model(name: str, pretrained=None, features_only: bool = False, out_indices=None,
                 **overrides) -> nn.Module:
    """Build a registered backbone.

    Args:
        name: one of :func:`list_models`.
        pretrained: ``True`` for the variant's official weights (fetched once into the cache, see
            :mod:`visattn.hub`), or the path (``.pth``/``.pth.tar``/``.safetensors``) or state dict of a checkpoint;
            loaded with :func:`visattn.load_official` (strict; position embeddings adopted, a head of another class
            count dropped). Nothing is downloaded unless ``pretrained=True``.
        features_only: return a :class:`FeatureExtractor` whose ``forward`` gives NCHW maps at strides 4, 8, 16, 32
            (the stage maps; VOLO's through a feature pyramid, ``feature_pyramid=False`` gives its stage maps).
        out_indices: levels a feature extractor returns, in that order (default: all; an int ``n``: the last
            ``n``; negative indices count from the end).
        **overrides: constructor arguments with the official names (``embed_dim``, ``depths``, ``num_classes``,
            ``drop_path_rate``, ...), replacing the variant's values. Every family takes ``in_chans``,
            ``num_classes``, ``img_size``, ``drop_rate``, ``drop_path_rate`` and ``impl``.
    """
    spec = model_spec(name)
    allowed = family_arguments(spec.family)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"{name} does not take {unknown}; its arguments are: {', '.join(allowed)}")
    if out_indices is not None and not features_only:
        raise ValueError("out_indices only applies with features_only=True")
    if pretrained is False:
        pretrained = None
    if pretrained is True:
        pretrained = fetch(name)  # before building: a variant without published weights says so at once
    if features_only and "feature_pyramid" in allowed:
        overrides.setdefault("feature_pyramid", True)  # decoders expect strides 4, 8, 16, 32
    model = spec.family(**{**spec.config, **overrides})
    if pretrained is not None:
        load_official(model, pretrained)
    return FeatureExtractor(model, out_indices) if features_only else model
