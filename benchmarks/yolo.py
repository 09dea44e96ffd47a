"""YOLO11n and YOLOv8n without and with each visattn wiring: a standalone layer, attention inside a CSP block, a visattn
backbone. Parameters, the GFLOPs Ultralytics prints (with visattn's thop rules) and CPU latency at 640x640,
batch 1, the models interleaved.

Run in the integration environment:

    .venv-integration/bin/python benchmarks/yolo.py --repeat 10 > benchmarks/results/yolo-1.md

The variants are made from Ultralytics' own model dictionaries at run time (nothing of them is copied here):
* layer: ``HiLo`` inserted after SPPF (P5, stride 32), every later index shifted;
* csp: the P5 CSP block of the backbone (C3k2 / C2f) replaced by ``C3k2_HiLo`` / ``C2f_HiLo``;
* backbone: the backbone up to SPPF replaced by ``VisattnBackbone`` (cloformer_xxs, maps at strides 8, 16, 32) and
  three ``Index`` rows, the neck and head unchanged (their indices remapped).
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch
from ultralytics.nn.tasks import DetectionModel, yaml_model_load
from ultralytics.utils.torch_utils import get_flops

import visattn
import visattn.integrations.ultralytics  # noqa: F401  (the YAML names)

BACKBONE = "cloformer_xxs"


def shift(f, at: int, by: int = 1):
    """A row's ``from`` with absolute indices >= ``at`` moved by ``by``."""
    if isinstance(f, list):
        return [shift(x, at, by) for x in f]
    return f + by if f >= at else f


def insert_after(cfg: dict, index: int, row: list) -> dict:
    cfg = copy.deepcopy(cfg)
    rows = cfg["backbone"] + cfg["head"]
    rows = [[shift(r[0], index + 1), *r[1:]] for r in rows]
    rows.insert(index + 1, row)
    n = len(cfg["backbone"]) + (1 if index < len(cfg["backbone"]) else 0)
    cfg["backbone"], cfg["head"] = rows[:n], rows[n:]
    return cfg


def variants(family: str) -> dict[str, dict]:
    base = yaml_model_load(f"{family}n.yaml")  # Ultralytics' own, scale n
    rows = base["backbone"]
    sppf = next(i for i, r in enumerate(rows) if r[2] == "SPPF")
    csp = max(i for i, r in enumerate(rows[:sppf]) if r[2] in ("C3k2", "C2f"))
    out = {"baseline": base, "layer (HiLo after SPPF)": insert_after(base, sppf, [-1, 1, "HiLo", []])}
    with_csp = copy.deepcopy(base)
    with_csp["backbone"][csp][2] = f"{rows[csp][2]}_HiLo"
    out[f"csp ({rows[csp][2]}_HiLo at P5)"] = with_csp
    channels = [i["num_chs"] for i in visattn.create_model(BACKBONE, features_only=True, out_indices=(1, 2, 3))
                .feature_info]
    # the stride-8 / 16 / 32 maps of the stock backbone: the rows just before the stride-16 / 32 convs, and SPPF's input
    downs = [i for i, r in enumerate(rows[:sppf]) if r[2] == "Conv" and r[3][2:3] == [2]]
    p3, p4 = downs[-2] - 1, downs[-1] - 1
    new = [[-1, 1, "VisattnBackbone", [channels[-1], BACKBONE]], [0, 1, "Index", [channels[0], 0]],
           [0, 1, "Index", [channels[1], 1]], [0, 1, "Index", [channels[2], 2]]]
    tail = rows[sppf:]  # SPPF (and C2PSA)
    remap = {p3: 1, p4: 2}
    offset = len(new) - sppf  # rows from SPPF on move by this much
    backbone = new + [[r[0], *r[1:]] for r in tail]

    def move(f):
        if isinstance(f, list):
            return [move(x) for x in f]
        return f if f < 0 else remap.get(f, f + offset)

    head = [[move(r[0]), *r[1:]] for r in base["head"]]
    out[f"backbone ({BACKBONE})"] = dict(copy.deepcopy(base), backbone=backbone, head=head)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="timed forwards per model (default 10)")
    args = parser.parse_args()
    models = {}
    for family in ("yolo11", "yolov8"):
        for label, cfg in variants(family).items():
            torch.manual_seed(0)
            models[(family, label)] = DetectionModel(cfg, verbose=False).eval()
    x = torch.rand(1, 3, 640, 640)
    rows = {k: dict(params=sum(p.numel() for p in m.parameters()) / 1e6, gflops=get_flops(m, 640), times=[])
            for k, m in models.items()}
    with torch.inference_mode():
        for m in models.values():
            m(x)  # warm-up
        for _ in range(args.repeat):  # interleaved: every model once per round
            for k, m in models.items():
                t0 = time.perf_counter()
                m(x)
                rows[k]["times"].append(time.perf_counter() - t0)
    print(f"<!-- torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"threads, float32, 640x640, batch 1, eval (unfused), repeat {args.repeat} -->")
    print("| model | wiring | params (M) | GFLOPs (as YOLO prints) | latency ms (median) | p25-p75 ms |")
    print("|---|---|---|---|---|---|")
    for (family, label), r in rows.items():
        q = statistics.quantiles(r["times"], n=4, method="inclusive")
        print(f"| {family}n | {label} | {r['params']:.2f} | {r['gflops']:.2f} | "
              f"{1e3 * statistics.median(r['times']):.1f} | {1e3 * q[0]:.1f}-{1e3 * q[2]:.1f} |")


if __name__ == "__main__":
    main()
