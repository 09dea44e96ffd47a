"""Benchmark outputs: the stdout table with fast/reference ratios, CSV and JSON with the machine, a PNG plot."""

from __future__ import annotations

import csv
import json
import os
import platform
from pathlib import Path

import torch

from .._version import __version__
from .common import format_table


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
    """Latency and peak memory against resolution: columns fwd / fwd+bwd, colour per block, solid fast and dashed
    reference, one marker per batch size. Returns False without matplotlib."""
    try:  # optional dependency (the plot extra); a Figure of its own draws with Agg, no global backend is set
        from matplotlib.figure import Figure
    except ImportError:
        return False
    blocks = [r for r in rows if r["kind"] == "block"]
    if not blocks:
        return False
    modes = sorted({r["mode"] for r in blocks}, key=["fwd", "fwdbwd"].index)
    names = sorted({r["name"] for r in blocks})
    batches = sorted({r["batch"] for r in blocks})
    colours = {n: f"C{i}" for i, n in enumerate(names)}
    markers = dict(zip(batches, "osD^v", strict=False))
    fig = Figure(figsize=(5.5 * len(modes), 8))
    axes = fig.subplots(2, len(modes), squeeze=False)
    series = {}
    for r in blocks:
        series.setdefault((r["name"], r["impl"], r["batch"], r["mode"]), []).append(
            (r["size"][0] * r["size"][1], r["latency_ms"], r["peak_mib"]))
    for (name, impl, batch, mode), pts in sorted(series.items()):
        pts.sort()
        col = modes.index(mode)
        style = dict(color=colours[name], marker=markers.get(batch, "o"), markersize=4,
                     linestyle="-" if impl == "fast" else "--", label=f"{name} {impl} B{batch}")
        axes[0][col].plot([p[0] for p in pts], [p[1] for p in pts], **style)
        axes[1][col].plot([p[0] for p in pts], [p[2] for p in pts], **style)
    for col, mode in enumerate(modes):
        for row, ylabel in enumerate(("latency (ms)", "peak memory (MiB)")):
            ax = axes[row][col]
            ax.set_title(f"{'forward' if mode == 'fwd' else 'forward + backward'}: {ylabel.split(' (')[0]}")
            ax.set_xlabel("tokens H*W")
            ax.set_ylabel(ylabel)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=7, frameon=False)
    fig.suptitle("visattn blocks: fast (solid) vs reference (dashed)")
    fig.tight_layout(rect=(0, 0.04 + 0.018 * (len(labels) // 4), 1, 0.97))
    fig.savefig(path, dpi=110)
    return True
