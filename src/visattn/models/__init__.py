"""Backbones built from the library's blocks, behind one registry (``create_model`` / ``register_model``)."""

from . import cloformer, dilateformer, litv2, volo  # noqa: F401  (registers the variants)
from ._base import Backbone, Stage, take_indices
from ._features import FeatureExtractor
from ._registry import Paper, create_model, list_models, model_spec, register_model
from .cloformer import CloFormer
from .dilateformer import DilateFormer
from .litv2 import LITv2
from .volo import VOLO

__all__ = ["LITv2", "VOLO", "Backbone", "CloFormer", "DilateFormer", "FeatureExtractor", "Paper", "Stage",
           "create_model", "list_models", "model_spec", "register_model", "take_indices"]
