"""``visattn models``: each variant's parameters and MACs as counted here, beside the papers' figures."""

from __future__ import annotations

import torch

from ..macs import count_macs
from ..models import create_model, list_models, model_spec
from .common import format_table, header, positive


def model_rows(pattern: str = "*", resolution: int | None = None, extra_resolutions: bool = True) -> list[dict]:
    """Rows for every variant matching ``pattern`` at ``resolution`` (default: each variant's own), counted on the
    meta device (nothing is allocated)."""
    rows = []
    for name in list_models(pattern):
        spec = model_spec(name)
        paper = spec.paper
        res0 = resolution or paper.resolution
        with torch.device("meta"):
            model = create_model(name)
        params = sum(p.numel() for p in model.parameters())
        sizes = [(res0, paper.top1, paper.macs_reference_g if res0 == paper.resolution else None)]
        if extra_resolutions:
            sizes += list(paper.extra)
        for res, top1, paper_macs in sizes:
            with torch.device("meta"):
                report = count_macs(model, torch.empty(1, 3, res, res))
            macs = report.total / 1e9
            note = paper.note if res == res0 else ""
            if paper.excludes:
                without = sum(n for k, n in report.by_module.items() if paper.excludes in k + ".") / 1e9
                note = f"{note} ({paper.macs_g:g} G); {macs - without:.2f} G without them here"
            rows.append(dict(
                model=name if res == res0 else f"{name} @{res}", params_m=params / 1e6,
                paper_params_m=paper.params_m, gmacs=macs,
                paper_gmacs="-" if paper_macs is None else f"{paper_macs:g}",
                diff="-" if paper_macs is None else f"{100 * (macs / paper_macs - 1):+.1f}%",
                top1=top1, note=note))
    return rows


def add_arguments(parser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="shell pattern of model names (default: all)")
    parser.add_argument("--resolution", type=positive(int, 32),
                        help="square input size (default: each variant's own, 224 or its fine-tuning size)")
    parser.add_argument("--no-extra", action="store_true", help="skip the fine-tuned high-resolution rows")


def run(args, parser) -> int:
    print(header())
    where = f"{args.resolution}x{args.resolution}" if args.resolution else "each variant's resolution"
    print(f"backbones: parameters and multiply-adds counted by visattn.count_macs at {where} (batch 1), beside the "
          f"papers' figures\n")
    rows = model_rows(args.pattern, args.resolution, extra_resolutions=not args.no_extra)
    if not rows:
        parser.error(f"no model matches {args.pattern!r}")
    print(format_table(rows, [("model", "model", ""), ("params_m", "params M", ".2f"),
                              ("paper_params_m", "paper M", ".2f"), ("gmacs", "GMACs", ".2f"),
                              ("paper_gmacs", "paper G", ""), ("diff", "diff", ""), ("top1", "top-1", ".1f"),
                              ("note", "note", "")]))
    return 0
