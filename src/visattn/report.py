"""Benchmark outputs: the stdout table with fast/reference ratios, CSV and JSON with the machine, a PNG plot."""

from __future__ import annotations

import csv
import json
import os
import platform
from pathlib import Path

import torch

from . import __version__
from .bench import format_table


def machine_info(device: str = "cpu") -> dict:
    info = dict(visattn=__version__, torch=torch.__version__, python=platform.python_version(),
                platform=platform.platform(), processor=platform.processor() or platform.machine(),
                cpu_count=os.cpu_count(), threads=torch.get_num_threads())
    if device.startswith("cuda") and torch.cuda.is_available():
        info.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(device))
    return info


def add_ratios(rows: list[dict]) -> list[dict]:
    """Attach reference/fast latency and fast/reference memory ratios to the fast rows of each group."""
    by_group = {}
    for r in rows:
        key = tuple((k, r[k]) for k in ("kind", "name", "size", "batch", "mode", "dim", "heads", "dtype", "device"))
        by_group.setdefault(key, {})[r["impl"]] = r
    for group in by_group.values():
        fast, ref = group.get("fast"), group.get("reference")
        if fast and ref:
            fast["speedup"] = ref["latency_ms"] / fast["latency_ms"]
            fast["mem_ratio"] = fast["peak_mib"] / ref["peak_mib"] if ref["peak_mib"] else None
    return rows


TABLE_COLUMNS = [("name", "block", ""), ("size_s", "HxW", ""), ("batch", "B", "d"), ("mode", "mode", ""),
                 ("impl", "path", ""), ("latency_ms", "ms", ".2f"), ("spread", "p25-p75 ms", ""),
                 ("throughput", "items/s", ".1f"), ("peak_mib", "peak MiB", ".1f"), ("gmacs", "GMACs", ".3f"),
                 ("speedup", "ref/fast", ".2f"), ("mem_ratio", "mem fast/ref", ".2f")]


def table(rows: list[dict]) -> str:
    shown = [dict(r, size_s=f"{r['size'][0]}x{r['size'][1]}", spread=f"{r['p25_ms']:.2f}-{r['p75_ms']:.2f}")
             for r in rows]
    return format_table(shown, TABLE_COLUMNS)


def write_csv(rows: list[dict], path: Path) -> None:
    keys = sorted({k for r in rows for k in r})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{r[k][0]}x{r[k][1]}" if k == "size" else r.get(k)) for k in keys})


def write_json(rows: list[dict], meta: dict, path: Path) -> None:
    path.write_text(json.dumps(dict(machine=meta, results=rows), indent=1, default=str))


def write_plot(rows: list[dict], path: Path) -> bool:
    """Latency and peak memory against resolution, one line per block and path. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    series = {}
    for r in rows:
        if r["kind"] != "block":
            continue
        key = (r["name"], r["impl"], r["batch"], r["mode"])
        series.setdefault(key, []).append((r["size"][0] * r["size"][1], r["latency_ms"], r["peak_mib"]))
    for (name, impl, batch, mode), pts in sorted(series.items()):
        pts.sort()
        label = f"{name} {impl} B{batch} {mode}"
        style = "-o" if impl == "fast" else "--x"
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], style, label=label, markersize=4)
        axes[1].plot([p[0] for p in pts], [p[2] for p in pts], style, label=label, markersize=4)
    for ax, ylabel in zip(axes, ("latency (ms)", "peak memory (MiB)"), strict=True):
        ax.set_xlabel("tokens H*W")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
