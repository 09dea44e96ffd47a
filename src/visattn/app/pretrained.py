"""``visattn weights``: every variant's official weights: where they are published, their licence and reported
top-1, and whether the file is in the cache (``--fetch NAME`` downloads one now)."""

from __future__ import annotations

from .. import hub
from ..models import list_models
from .common import exit_code, format_table, header


def weight_rows() -> list[dict]:
    rows = []
    for name in list_models():
        w = hub.WEIGHTS.get(name)
        if w is None:
            rows.append(dict(model=name, where="-", license="-", top1="-", cached="-"))
            continue
        if w.url is not None:
            where, cached = w.url, "yes" if hub.cached(name) else "no"
        elif w.page is not None:
            where, cached = f"by hand: {w.page}", "by hand"
        else:
            where, cached = "not published", "-"
        rows.append(dict(model=name, where=where, license=w.license, top1=f"{w.top1:g}", cached=cached))
    return rows


COLUMNS = [("model", "model", ""), ("top1", "top-1", ""), ("cached", "cached", ""), ("license", "licence", ""),
           ("where", "official location", "")]


def add_arguments(parser) -> None:
    parser.add_argument("--fetch", metavar="NAME", help="download NAME's official weights into the cache now")


def run(args, parser) -> int:
    def body():
        if args.fetch:
            path = hub.fetch(args.fetch)
            print(f"{args.fetch}: {path}")
            return 0
        print(header())
        print(f"cache: {hub.cache_dir()}{' (offline: downloads off)' if hub.offline() else ''}\n")
        print(format_table(weight_rows(), COLUMNS))
        print("\nNothing is downloaded unless asked by name: create_model(name, pretrained=True), visattn train "
              "--pretrained NAME, timm's pretrained=True, or visattn weights --fetch NAME.")
        return 0
    return exit_code("weights", body)
