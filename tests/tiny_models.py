"""Reduced configurations of the four backbone families (the configurations of the official goldens), shared by the
tests that build whole models: ``tiny(name)`` is the variant ``name`` at these widths and depths, 10 classes."""

import torch

import visattn
from visattn.models import VOLO, CloFormer, DilateFormer, LITv2, model_spec

TINY = {
    LITv2: dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8)),
    DilateFormer: dict(embed_dim=12, depths=(1, 1, 1, 1), num_heads=(3, 3, 6, 12)),
    VOLO: dict(layers=(1, 1, 1, 1), embed_dims=(32, 64, 64, 64), num_heads=(2, 4, 4, 4), stem_hidden_dim=16),
    CloFormer: dict(embed_dims=(8, 16, 32, 64), depths=(2, 1, 1, 1), num_heads=(2, 2, 4, 8),
                    group_splits=((1, 1), (1, 1), (2, 2), (2, 6))),
}
SMALLEST = ["litv2_s", "dilateformer_tiny", "volo_d1", "cloformer_xxs"]  # each family's smallest variant


def tiny_config(name: str) -> dict:
    """The reduced constructor arguments of ``name``'s family (for timm.create_model, smp encoders, helpers)."""
    return dict(TINY[model_spec(name).family])


def tiny(name, **kw):
    torch.manual_seed(0)
    return visattn.create_model(name, **{"num_classes": 10, **tiny_config(name), **kw})
