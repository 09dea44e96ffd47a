"""Models from checkpoint files, for ``visattn eval`` and ``visattn export``: a visattn training checkpoint
rebuilds its own model; an official checkpoint is loaded into ``--model`` with :func:`visattn.load_official`.

Loading is strict: a checkpoint that leaves any weight of the model unset (the classifier included), or carries
weights the model lacks, is refused unless ``allow_partial`` is given; then ``notes`` say what was left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import LoadReport, load_file, load_official
from ..models import create_model


@dataclass
class Loaded:
    model: nn.Module
    name: str  # the architecture that was built
    source: str  # "training" or "official"
    size: int | None = None  # input size a training checkpoint recorded
    classes: list[str] | None = None
    report: LoadReport | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Trained:
    """A model trained by ``visattn train``, in eval mode, with what preparing its input needs (see
    :func:`load_checkpoint`)."""

    model: nn.Module
    name: str
    classes: list[str]
    input_size: int

    def preprocess(self, image) -> torch.Tensor:
        """An image file, path or ``PIL.Image`` as this model's input ``(1, 3, S, S)``: RGB, resized to the training
        size, normalised as in training."""
        from .data import preprocess

        return preprocess(image, self.input_size)

    @torch.no_grad()
    def predict(self, image, topk: int = 1) -> list[tuple[str, float]]:
        """The ``topk`` classes of ``image`` with their probabilities, most likely first."""
        probs = self.model(self.preprocess(image)).softmax(dim=-1)[0]
        values, indices = probs.topk(min(topk, len(probs)))
        return [(self.classes[i], float(v)) for v, i in zip(values, indices.tolist(), strict=True)]


def load_checkpoint(path, ema: bool = False) -> Trained:
    """The model of a ``visattn train`` checkpoint (``runs/x/checkpoint.pt``), rebuilt from the architecture and
    arguments the checkpoint records, with its weights (the EMA weights with ``ema``), in eval mode; its class names
    (the image folder's, or ``"0"`` ... ``"9"`` for the bundled digits) and input size. ``.preprocess(image)`` and
    ``.predict(image)`` prepare and classify an image as training read them."""
    loaded = load_model(path, use_ema=ema)
    if loaded.source != "training":
        raise ValueError(f"{path} is not a visattn training checkpoint; for official weights use "
                         f"visattn.create_model(name, pretrained=path)")
    n = loaded.model.num_classes
    classes = list(loaded.classes) if loaded.classes else [str(i) for i in range(n)]
    return Trained(loaded.model, loaded.name, classes, loaded.size or 32)


def is_training_checkpoint(obj) -> bool:
    return isinstance(obj, dict) and "model_name" in obj and "model" in obj


def load_model(checkpoint, model: str | None = None, overrides: dict | None = None, num_classes: int | None = None,
               use_ema: bool = False, allow_partial: bool = False) -> Loaded:
    """Read ``checkpoint`` once and return the model it holds (in eval mode) with what is known about it."""
    path = Path(checkpoint)
    obj = load_file(path)
    if is_training_checkpoint(obj):
        name = obj["model_name"]
        if model is not None and model != name:
            raise ValueError(f"{path} is a visattn training checkpoint of {name!r}, not {model!r}; drop --model "
                             f"(the checkpoint names its own architecture) or pass the matching checkpoint")
        if overrides or num_classes is not None:
            raise ValueError(f"{path} records its own model arguments; --set / --num-classes apply to official "
                             f"checkpoints only")
        net = create_model(name, **obj["model_args"])
        if use_ema and obj.get("ema") is None:
            raise ValueError(f"{path} holds no EMA weights (the run was trained without --ema); drop --ema")
        net.load_state_dict(obj["ema"] if use_ema else obj["model"])
        return Loaded(net.eval(), name, "training", obj.get("input_size"), obj.get("classes"))
    if model is None:
        raise ValueError(f"{path} is not a visattn training checkpoint; name its architecture with --model "
                         f"(see visattn models)")
    kwargs = dict(overrides or {})
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    net = create_model(model, **kwargs)
    report = load_official(net, obj, strict=False, use_ema=use_ema)
    problems = []
    if report.missing:
        problems.append(f"{len(report.missing)} weights of {model} are not in the file (they would keep their random "
                        f"initial values): {report.missing[:6]}")
    if report.unexpected:
        problems.append(f"{len(report.unexpected)} tensors in the file do not belong to {model}: "
                        f"{report.unexpected[:6]}")
    if report.dropped:
        problems.append(f"the file's classifier does not fit (dropped: {report.dropped[:4]}); pass --num-classes "
                        f"with the checkpoint's class count")
    if problems and not allow_partial:
        raise ValueError(f"{path} does not fit {model} ({report.loaded} tensors matched): " + "; ".join(problems)
                         + ". Check --model / --set, or pass --allow-partial to use it anyway")
    return Loaded(net.eval(), model, "official", report=report, notes=problems)
