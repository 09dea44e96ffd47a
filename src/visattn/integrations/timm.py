"""visattn backbones in timm's registry: ``import visattn.integrations.timm`` registers every variant as
``visattn_<name>`` (``visattn_litv2_s``, ``visattn_volo_d1_384``...), never over a timm name.

Then timm's own API drives them: ``timm.create_model("visattn_volo_d1", num_classes=10, features_only=True,
out_indices=(1, 3), pretrained=True, pretrained_cfg_overlay=dict(file="official.pth"))``,
``timm.data.resolve_data_config({}, model=model)``, ``timm.data.create_transform(**config)``, timm's optimisers,
losses and training / validation loops. Each variant carries a pretrained config timm's tools read (input size,
interpolation, crop, mean/std, class count, first conv, classifier, paper, license where the official repository
states one; VOLO's are taken from timm's own VOLO entries). ``pretrained=True`` fetches the official weights through
:func:`visattn.hub.fetch` (visattn's cache, offline switch and checks; variants without published weights say
where to get them); ``pretrained_cfg_overlay=dict(file=...)`` takes any official or timm checkpoint instead. Files
are read through visattn's own unwrapping (VOLO adopts the checkpoint's position-embedding grid).

Feature extraction is timm's ``getter`` wrapper around the model's ``forward_intermediates``: any input size, the
maps in the order of ``out_indices``; without ``out_indices`` every level once, at strides 4, 8, 16, 32 (VOLO through
its feature pyramid, ``feature_pyramid=False`` for its stage maps), the pattern segmentation_models_pytorch and
mmpretrain's ``TIMMBackbone`` expect. ``output_stride`` other than 32 is refused with the decoders that work.
"""

from __future__ import annotations

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, get_pretrained_cfg, is_model, model_entrypoint, register_model

from ..checkpoint import strip_prefixes, unwrap
from ..hub import WEIGHTS, fetch
from ..models import list_models, model_spec
from ..models._registry import family_arguments

PREFIX = "visattn_"

# family -> (first conv, classifier, eval crop of the official evaluation, paper, license of the official repository)
FAMILIES = {
    "LITv2": ("patch_embed.proj", "head", 0.875, "arXiv:2205.13213", None),
    "DilateFormer": ("patch_embed.proj.0", "head", 0.875, "arXiv:2302.01791", None),
    "VOLO": ("patch_embed.conv.0", ("head", "aux_head"), 0.96, "arXiv:2106.13112", None),
    "CloFormer": ("patch_embed.conv1.conv.0", "head", 0.875, "arXiv:2303.17803", "mit"),
}


class TimmAdapter:
    """timm's backbone methods on top of a visattn :class:`~visattn.models.Backbone` (same parameters and keys)."""

    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        if norm or output_fmt != "NCHW":
            raise ValueError("visattn backbones give un-normalised NCHW stage maps (norm=False, output_fmt='NCHW')")
        final, feats = self.features_and_final(x, self.feature_indices(indices),
                                               final=not (intermediates_only or stop_early))
        return feats if intermediates_only else (final, feats)

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True):
        take = list(self.feature_indices(indices))
        if prune_head:  # the head and everything the maps do not need
            self.prune_features(take, keep_norm=not prune_norm)
        return take

    def reset_classifier(self, num_classes: int, global_pool=None) -> None:
        if global_pool not in (None, "", "avg", "token"):
            raise ValueError(f"visattn backbones pool as their paper does; global_pool={global_pool!r} is not offered")
        super().reset_classifier(num_classes)  # the family's own (VOLO also resets aux_head)


_ADAPTED: dict[type, type] = {}


def adapted(family: type) -> type:
    """``family`` with timm's methods (a subclass; the state-dict keys are the family's)."""
    if family not in _ADAPTED:
        _ADAPTED[family] = type(f"Timm{family.__name__}", (TimmAdapter, family), {"__module__": __name__})
    return _ADAPTED[family]


def checkpoint_filter(state_dict: dict, model) -> dict:
    """timm's ``pretrained_filter_fn``: visattn's unwrapping of official files, VOLO's position-embedding grid; layers
    no official checkpoint has (VOLO's feature pyramid) keep their initialisation, timm's strict load holds the
    rest."""
    sd = strip_prefixes(unwrap(state_dict))
    if hasattr(model, "official_shapes"):  # VOLO: a fine-tuned grid becomes the model's before timm loads
        model.adopt_shapes(model.official_shapes(sd))
    new = tuple(f"{m}." for m in getattr(model, "_new_modules", ()))
    if new:
        sd.update({k: v for k, v in model.state_dict().items() if k.startswith(new) and k not in sd})
    return sd


def pretrained_cfg(name: str) -> dict:
    spec = model_spec(name)
    first_conv, classifier, crop, paper, license_ = FAMILIES[spec.family.__name__]
    size = spec.paper.resolution if spec.paper else 224
    published = WEIGHTS.get(name)
    url = (published.url or "") if published else ""  # informational: pretrained=True fetches through visattn.hub
    cfg = dict(url=url, num_classes=1000, input_size=(3, size, size), pool_size=None, crop_pct=crop,
               interpolation="bicubic", mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, first_conv=first_conv,
               classifier=classifier, paper_ids=paper, license=license_, origin_url="visattn")
    if spec.family.__name__ == "VOLO":  # timm carries the official VOLO evaluation settings: use them
        timm_name = name if name.count("_") == 2 else f"{name}_224"
        if is_model(timm_name):
            own = get_pretrained_cfg(timm_name).to_dict()
            cfg.update({k: own[k] for k in ("crop_pct", "interpolation", "mean", "std", "license", "paper_ids",
                                            "crop_mode") if own.get(k) is not None})
    return cfg


def _entrypoint(name: str):
    spec = model_spec(name)

    def create(pretrained: bool = False, **kwargs):
        output_stride = kwargs.pop("output_stride", None)
        if output_stride not in (None, 32):
            raise ValueError(f"{PREFIX + name} has output stride 32 (its last map is 1/32 of the input); "
                             f"output_stride={output_stride} (dilated last stages, as DeepLabV3 / DeepLabV3+ / PAN "
                             f"ask for) is not offered. Use a decoder that takes a 4-8-16-32 pyramid: Unet, FPN, "
                             f"UPerNet, Segformer, Linknet, MAnet, UnetPlusPlus")
        overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
        if pretrained and not (overlay.get("file") or overlay.get("url") or overlay.get("hf_hub_id")):
            overlay["file"] = str(fetch(name))  # the official weights, through visattn's cache and checks
        if overlay:
            kwargs["pretrained_cfg_overlay"] = overlay
        if kwargs.get("features_only") and "feature_pyramid" in family_arguments(spec.family):
            kwargs.setdefault("feature_pyramid", True)  # decoders expect strides 4, 8, 16, 32
        # out_indices=None: every level once (timm's builder would otherwise ask for 0..4)
        return build_model_with_cfg(adapted(spec.family), PREFIX + name, pretrained,
                                    pretrained_filter_fn=checkpoint_filter,
                                    feature_cfg=dict(feature_cls="getter", out_indices=None),
                                    **{**spec.config, **kwargs})

    create.__name__ = create.__qualname__ = PREFIX + name
    create.__module__ = __name__
    create.__doc__ = f"visattn's {name} ({spec.family.__name__}) for timm.create_model."
    return create


default_cfgs: dict[str, dict] = {}  # read by timm's register_model


def register() -> list[str]:
    """Register every visattn variant in timm (done on import; calling it again changes nothing)."""
    names = []
    for name in list_models():
        timm_name = PREFIX + name
        if is_model(timm_name):
            if getattr(model_entrypoint(timm_name), "__module__", None) != __name__:
                raise RuntimeError(f"timm already has a model named {timm_name!r}; visattn will not replace it")
            continue
        default_cfgs[timm_name] = pretrained_cfg(name)
        fn = _entrypoint(name)
        globals()[timm_name] = fn
        register_model(fn)
        names.append(timm_name)
    return names


register()
