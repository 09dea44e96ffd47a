"""The model-zoo table: each variant's parameters and MACs as counted here, beside the papers' figures."""

from __future__ import annotations

import torch

from .macs import count_macs
from .models import create_model, list_models, model_spec


def model_rows(pattern: str = "*", resolution: int = 224, extra_resolutions: bool = True) -> list[dict]:
    """Rows for every variant matching ``pattern``: counted on the meta device (nothing is allocated)."""
    rows = []
    for name in list_models(pattern):
        spec = model_spec(name)
        paper = spec.paper
        with torch.device("meta"):
            model = create_model(name)
        params = sum(p.numel() for p in model.parameters())
        sizes = [(resolution, paper.top1, paper.macs_reference_g if resolution == paper.resolution else None)]
        if extra_resolutions:
            sizes += list(paper.extra)
        for res, top1, paper_macs in sizes:
            with torch.device("meta"):
                report = count_macs(model, torch.empty(1, 3, res, res))
            macs = report.total / 1e9
            note = paper.note if res == resolution else ""
            if paper.excludes:
                without = sum(n for k, n in report.by_module.items() if paper.excludes in k + ".") / 1e9
                note = f"{note} ({paper.macs_g:g} G); {macs - without:.2f} G without them here"
            rows.append(dict(
                model=name if res == resolution else f"{name} @{res}", params_m=params / 1e6,
                paper_params_m=paper.params_m, gmacs=macs,
                paper_gmacs="-" if paper_macs is None else f"{paper_macs:g}",
                diff="-" if paper_macs is None else f"{100 * (macs / paper_macs - 1):+.1f}%",
                top1=top1, note=note))
    return rows
