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
    """Attach reference/path latency and path/reference memory ratios to every non-reference row of each group
    (``fast``, ``fused``, the compiled and onnxruntime rows, the peer), and timm/path to every visattn row beside
    the timm peer."""
    by_group = {}
    for r in rows:
        key = tuple((k, r[k]) for k in ("kind", "name", "size", "batch", "mode", "dim", "heads", "dtype", "device"))
        by_group.setdefault(key, {})[r.get("label", r["impl"])] = r
    for group in by_group.values():
        ref = group.get("reference")
        for label, row in group.items():
            if label == "reference" or not ref:
                continue
            row["speedup"] = ref["latency_ms"] / row["latency_ms"]
            # the spread of the ratio from the two p25-p75 spreads (slowest path vs fastest reference and back)
            row["speedup_lo"] = ref["p25_ms"] / row["p75_ms"]
            row["speedup_hi"] = ref["p75_ms"] / row["p25_ms"]
            row["mem_ratio"] = row["peak_mib"] / ref["peak_mib"] if ref["peak_mib"] and row["peak_mib"] is not None \
                else None
        peer = group.get("timm")
        for label, row in group.items():
            if peer and label not in ("timm", "reference"):  # fast, fused and their compiled / onnxruntime forms
                row["vs_timm"] = peer["latency_ms"] / row["latency_ms"]
    return rows


TABLE_COLUMNS = [("name", "block", ""), ("size_s", "HxW", ""), ("batch", "B", "d"), ("mode", "mode", ""),
                 ("label", "path", ""), ("latency_ms", "ms", ".2f"), ("spread", "p25-p75 ms", ""),
                 ("throughput", "items/s", ".1f"), ("peak_mib", "peak MiB", ".1f"), ("gmacs", "GMACs", ".3f"),
                 ("speedup", "ref/path", ".2f"), ("mem_ratio", "mem path/ref", ".2f")]
PEER_COLUMN = ("vs_timm", "timm/path", ".2f")
FIRST_CALL_COLUMN = ("first_call_s", "1st call s", ".1f")  # compile time for torch.compile rows


def table(rows: list[dict]) -> str:
    shown = [dict(r, size_s=f"{r['size'][0]}x{r['size'][1]}", spread=f"{r['p25_ms']:.2f}-{r['p75_ms']:.2f}",
                  label=r.get("label", r["impl"])) for r in rows]
    peer = [PEER_COLUMN] if any("vs_timm" in r for r in rows) else []
    first = [FIRST_CALL_COLUMN] if any(r.get("runtime", "eager") != "eager" for r in rows) else []
    return format_table(shown, TABLE_COLUMNS + peer + first)


def write_csv(rows: list[dict], path: Path) -> None:
    keys = sorted({k for r in rows for k in r})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{r[k][0]}x{r[k][1]}" if k == "size" else r.get(k)) for k in keys})


def write_json(rows: list[dict], meta: dict, path: Path) -> None:
    path.write_text(json.dumps(dict(machine=meta, results=rows), indent=1, default=str))


def write_plot(rows: list[dict], path: Path, noisy: bool = False) -> bool:
    """What a reader compares: the speed-up of the fast path over the reference (with the p25-p75 spread of the
    ratio as error bars) and the peak-memory ratio, one bar per block x size, one colour per batch size; columns
    forward / forward+backward. Returns False without matplotlib or without block rows with both paths."""
    try:  # optional dependency (the plot extra); a Figure of its own draws with Agg, no global backend is set
        from matplotlib.figure import Figure
    except ImportError:
        return False
    rows = [r for r in rows if r["kind"] == "block" and r.get("label", r["impl"]) == "fast" and "speedup" in r]
    if not rows:
        return False
    modes = [m for m in ("fwd", "fwdbwd") if any(r["mode"] == m for r in rows)]
    blocks = list(dict.fromkeys(r["name"] for r in rows))
    sizes = sorted({tuple(r["size"]) for r in rows}, key=lambda s: (s[0] * s[1], s))
    batches = sorted({r["batch"] for r in rows})
    slots = [(b, s) for b in blocks for s in sizes if any(r["name"] == b and tuple(r["size"]) == s for r in rows)]
    width = 0.8 / len(batches)
    fig = Figure(figsize=(max(7.0, 0.55 * len(slots) * len(modes) + 3), 7.5))
    axes = fig.subplots(2, len(modes), squeeze=False)
    for col, mode in enumerate(modes):
        for row, (key, label) in enumerate((("speedup", "speed-up: reference time / fast time"),
                                            ("mem_ratio", "peak memory: fast / reference"))):
            ax = axes[row][col]
            for j, batch in enumerate(batches):
                xs, ys, lo, hi = [], [], [], []
                for i, (block, size) in enumerate(slots):
                    r = next((r for r in rows if (r["name"], tuple(r["size"]), r["batch"], r["mode"]) ==
                              (block, size, batch, mode)), None)
                    if r is None or r.get(key) is None:
                        continue
                    xs.append(i + (j - (len(batches) - 1) / 2) * width)
                    ys.append(r[key])
                    lo.append(max(0.0, r[key] - r["speedup_lo"]) if key == "speedup" else 0.0)
                    hi.append(max(0.0, r["speedup_hi"] - r[key]) if key == "speedup" else 0.0)
                ax.bar(xs, ys, width, color=f"C{j}", label=f"batch {batch}",
                       yerr=[lo, hi] if key == "speedup" else None, capsize=2, error_kw=dict(lw=0.8))
            ax.axhline(1.0, color="black", lw=0.8, ls="--")
            ax.set_xticks(range(len(slots)))
            ax.set_xticklabels([f"{b}\n{s[0]}x{s[1]}" for b, s in slots], fontsize=7)
            ax.set_ylabel(label, fontsize=8)
            ax.set_title(f"{'forward' if mode == 'fwd' else 'forward + backward'}", fontsize=9)
            ax.grid(True, axis="y", alpha=0.3)
            if key == "speedup":
                tops = sorted(r["speedup_hi"] for r in rows if r["mode"] == mode and r.get("speedup_hi"))
                if tops:  # one wild error bar must not flatten every bar: clip the axis at ~the 95th percentile
                    cap = tops[min(len(tops) - 1, int(0.95 * len(tops)))] * 1.3
                    ax.set_ylim(0, max(cap, max(r["speedup"] for r in rows if r["mode"] == mode) * 1.1, 1.2))
                else:
                    ax.set_ylim(bottom=0)
    axes[0][0].legend(fontsize=8, frameon=False)
    title = "visattn: fast path vs the official formulation (above 1: faster / below 1: less memory)"
    if noisy:
        title += "\nWARNING: measured on a busy or noisy machine; ratios are unreliable"
    fig.suptitle(title, fontsize=10, color="firebrick" if noisy else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True
