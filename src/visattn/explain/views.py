"""Figures of recorded attention and Grad-CAM maps (matplotlib, imported when a figure is drawn: ``pip install
'visattn[plot]'``). Every figure is drawn from what was recorded; none runs the model.

* :func:`query_figure` - where chosen query pixels attend, drawn on the image, per stage and head;
* :func:`distance_figure` - the mean attention distance of every head of every block against depth;
* :func:`hilo_figure` - HiLo's Hi-Fi and Lo-Fi heads side by side: one query's weights and the branches' spectra;
* :func:`gradcam_figure` - the image with the Grad-CAM map of each class.

:func:`overlay` (a map coloured and blended onto the image, as an array) is what every panel shows.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .maps import SPATIAL_LAYOUTS, gate_strength, mean_distance, query_map, spectrum
from .record import AttentionMap, AttentionRecord


def _figure(rows: int, cols: int, size: float = 2.0):
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("figures need matplotlib: pip install 'visattn[plot]'") from err
    fig = Figure(figsize=(size * cols, size * rows + 0.4), dpi=80, layout="constrained")
    axes = np.array(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes


def _colormap(name: str):
    from matplotlib import colormaps

    return colormaps[name]


def overlay(image: torch.Tensor, heat: torch.Tensor, stride: tuple[float, float] | None = None, alpha: float = 0.5,
            cmap: str = "jet") -> np.ndarray:
    """``heat (h, w)`` coloured and blended onto ``image (3, H, W)`` (values in [0, 1]): an ``(H, W, 3)`` array.

    With ``stride`` each map cell covers ``sy x sx`` input pixels from the top-left (the cells of a block's map;
    pixels beyond the map keep the image); without it the map is resized over the whole image (bilinear, as CAMs are
    shown). The map is scaled by its maximum, so zero stays the coldest colour.
    """
    img = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()  # (H, W, 3)
    H, W = img.shape[:2]
    heat = heat.detach().float().cpu()
    if stride is None:
        big = F.interpolate(heat[None, None], size=(H, W), mode="bilinear", align_corners=False)[0, 0]
        inside = torch.ones(H, W)
    else:
        iy = (torch.arange(H) / stride[0]).floor().long()  # the cell each pixel row lies in
        ix = (torch.arange(W) / stride[1]).floor().long()
        inside = ((iy < heat.shape[0])[:, None] & (ix < heat.shape[1])[None, :]).float()  # (H, W)
        big = heat[iy.clamp(max=heat.shape[0] - 1)][:, ix.clamp(max=heat.shape[1] - 1)]  # (H, W)
    top = float(big.max())
    scaled = (big / top if top > 0 else big).clamp(0, 1).numpy()
    colour = _colormap(cmap)(scaled)[..., :3]  # (H, W, 3)
    weight = alpha * inside.numpy()[..., None]
    return (1 - weight) * img + weight * colour


def _to_cell(m: AttentionMap, point: tuple[float, float]) -> tuple[int, int]:
    """An input pixel (y, x) as the map cell holding it."""
    (sy, sx), (H, W) = m.image_stride, m.part.size
    return min(int(point[0] // sy), H - 1), min(int(point[1] // sx), W - 1)


def _shown(record: AttentionRecord) -> list[AttentionMap]:
    """The maps of the last recorded block of each stage (of every block when they have no stage)."""
    last = {}
    for m in record:
        last[m.stage if m.stage is not None else m.block] = m.block
    keep = set(last.values())
    return [m for m in record if m.block in keep]


def query_figure(image: torch.Tensor, record: AttentionRecord, points, max_heads: int = 4, path=None):
    """Where each query pixel of ``points`` (``[(y, x), ...]`` in input pixels) attends: one row per point and map of
    the last block of each stage, one column per head (the first ``max_heads``), the map drawn on ``image`` with the
    query marked. CloFormer's local gates (no keys) are shown as how far each head's gates open; a class token's row
    is its attention to the tokens (no query)."""
    maps = _shown(record)
    if not maps:
        raise ValueError("the record holds no attention maps; run the model inside record_attention(model)")
    rows = [(p, m) for p in points for m in maps]
    cols = min(max_heads, max(len(m.heads) for m in maps))
    fig, axes = _figure(len(rows), cols)
    for r, (point, m) in enumerate(rows):
        y, x = _to_cell(m, point) if m.layout != "class" else (0, 0)
        heat = gate_strength(m) if m.layout == "gate" else query_map(m, y, x)  # (nh, H, W)
        stride = m.image_stride
        for c in range(min(cols, heat.shape[0])):
            ax = axes[r, c]
            ax.imshow(overlay(image, heat[c], stride))
            if m.layout in SPATIAL_LAYOUTS:
                ax.plot([point[1]], [point[0]], marker="+", color="white", markersize=10, markeredgewidth=2)
            where = f"stage {m.stage}" if m.stage is not None else (m.block or "block")
            ax.set_title(f"{where} {m.part.name}\nhead {m.heads[c]}", fontsize=7)
    fig.suptitle(f"attention of the query pixels {', '.join(f'({p[0]:g}, {p[1]:g})' for p in points)}", fontsize=9)
    return _save(fig, path)


def distance_figure(record: AttentionRecord, path=None):
    """The mean attention distance (input pixels) of every head against the depth of its block: how local each head
    is, layer by layer (the analysis of Dosovitskiy et al., Fig. 7). Returns the figure; its data are
    :func:`distances`."""
    rows = distances(record)
    if not rows:
        raise ValueError("the record holds no map with queries and keys on the image (gates and class tokens have "
                         "no attention distance)")
    fig, axes = _figure(1, 1, size=4.0)
    ax = axes[0, 0]
    ax.set_axis_on()
    for name in dict.fromkeys(r[1] for r in rows):
        pts = [(depth, d) for depth, part, _, d in rows if part == name]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, label=name, alpha=0.8)
    blocks = record.blocks()
    ax.set_xticks(range(len(blocks)))
    ax.set_xticklabels([str(i) for i in range(len(blocks))], fontsize=7)
    ax.set_xlabel("attention block (depth)")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def distances(record: AttentionRecord) -> list[tuple[int, str, int, float]]:
    """``(block index, part name, head, mean distance in pixels)`` of every head of every spatial map."""
    blocks = {name: i for i, name in enumerate(record.blocks())}
    rows = []
    for m in record:
        if m.layout in SPATIAL_LAYOUTS:
            for head, d in zip(m.heads, mean_distance(m).tolist(), strict=True):
                rows.append((blocks[m.block], m.part.name, head, d))
    return rows


def hilo_figure(image: torch.Tensor, record: AttentionRecord, point, path=None):
    """HiLo's two branches as LITv2 shows them, for the last block that has both: the Hi-Fi and Lo-Fi weights of the
    query pixel ``point`` (mean over the branch's heads) on the image, and the log Fourier magnitude of each branch's
    output (mean over heads and channels, zero frequency at the centre): Hi-Fi keeps the high frequencies, Lo-Fi the
    low ones."""
    pairs = {}
    for m in record:
        if m.part.name in ("hifi", "lofi"):
            pairs.setdefault(m.block, {})[m.part.name] = m
    both = [b for b, parts in pairs.items() if len(parts) == 2]
    if not both:
        raise ValueError("no recorded HiLo block runs both branches (Hi-Fi heads and Lo-Fi heads); record a model "
                         "with HiLo attention and 0 < alpha < 1")
    branches = pairs[both[-1]]
    fig, axes = _figure(2, 2, size=2.4)
    for c, name in enumerate(("hifi", "lofi")):
        m = branches[name]
        y, x = _to_cell(m, point)
        heat = query_map(m, y, x).mean(0)
        axes[0, c].imshow(overlay(image, heat, m.image_stride))
        axes[0, c].plot([point[1]], [point[0]], marker="+", color="white", markersize=10, markeredgewidth=2)
        first, stop = m.part.heads
        heads = f"head {first}" if stop - first == 1 else f"heads {first}-{stop - 1}"
        axes[0, c].set_title(f"{'Hi-Fi' if name == 'hifi' else 'Lo-Fi'} {heads}: query", fontsize=8)
        axes[1, c].imshow(torch.log1p(spectrum(m).mean(0)).numpy(), cmap="viridis")
        axes[1, c].set_title(f"{'Hi-Fi' if name == 'hifi' else 'Lo-Fi'} output spectrum", fontsize=8)
    fig.suptitle(f"HiLo {both[-1]}", fontsize=9)
    return _save(fig, path)


def gradcam_figure(image: torch.Tensor, cams: torch.Tensor, labels: list[str], path=None):
    """The image, then its Grad-CAM map for each class (``cams (k, H, W)`` at the image size, in [0, 1])."""
    k = len(labels)
    cols = min(k + 1, 4)
    fig, axes = _figure(math.ceil((k + 1) / cols), cols, size=2.4)
    axes.flat[0].imshow(image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
    axes.flat[0].set_title("image", fontsize=8)
    for i, label in enumerate(labels):
        axes.flat[i + 1].imshow(overlay(image, cams[i]))
        axes.flat[i + 1].set_title(label, fontsize=8)
    fig.suptitle("Grad-CAM", fontsize=9)
    return _save(fig, path)


def _save(fig, path):
    if path is not None:
        fig.savefig(path)
    return fig
