"""Outlook aggregation (VOLO): per-window attention weights times k x k value windows, summed back onto the map.

Window ``c = (a, b)`` of the ``(h, w) = (ceil(H/s), ceil(W/s))`` grid covers the input rows
``a*s - p + [0, k)`` and columns ``b*s - p + [0, k)``. Its output at window position ``m`` is
``sum_n attn[c, m, n] * v[pos(c, n)]``; outputs of overlapping windows are summed at ``pos(c, m)``
(the fold). Values outside the map are zero and outputs falling outside it are dropped.

With ``p = k // 2`` (odd ``k``) this is exactly ``fold(attn @ unfold(v))`` of the official code. Other
paddings, which the official code rejects, keep the same window grid and simply move every window by
``k//2 - p``: a window always starts ``p`` rows above its cell of the stride grid.
"""

from __future__ import annotations

import torch.nn.functional as F

from .. import _validate
from ..macs import counted


def outlook_grid(H: int, W: int, stride: int) -> tuple[int, int]:
    """Size ``(h, w)`` of the window grid for an ``H x W`` map: one window per ``stride x stride`` cell."""
    return -(-H // stride), -(-W // stride)


def _extent_pads(H, W, h, w, ks, padding, stride):
    """Pads (top, bottom, left, right) that make the windows tile a ((h-1)s+k) x ((w-1)s+k) canvas.

    Bottom/right may be negative (rows no window reaches), which F.pad treats as a crop.
    """
    return padding, (h - 1) * stride + ks - H - padding, padding, (w - 1) * stride + ks - W - padding


def outlook_aggregate(attn, v, kernel_size: int = 3, padding: int = 1, stride: int = 1, impl: str = "fast"):
    """Aggregate values with outlook weights.

    Args:
        attn: ``(B, nh, h, w, k*k, k*k)`` weights (already normalised), indexed ``[..., m, n]``:
            output window position ``m`` gathers from input window position ``n``.
        v: ``(B, nh, H, W, hd)`` values.
        kernel_size, padding, stride: window size ``k``, offset ``p`` (``0 <= p < k``) and grid stride ``s``.
        impl: ``"fast"`` (strided views, no unfold or fold, exports to ONNX) or ``"reference"``
            (unfold, batched matmul, fold).
    Returns:
        ``(B, nh, H, W, hd)``.
    """
    ks = _validate.positive_int("kernel_size", kernel_size)
    s = _validate.positive_int("stride", stride)
    p = _validate.positive_int("padding", padding, minimum=0)
    if p >= ks:
        raise ValueError(f"padding must be < kernel_size ({ks}) so that a window overlaps its cell, got {p}")
    _validate.impl(impl)
    if v.dim() != 5 or attn.dim() != 6:
        raise ValueError(f"expected attn (B, nh, h, w, k*k, k*k) and v (B, nh, H, W, hd), got "
                         f"{tuple(attn.shape)} and {tuple(v.shape)}")
    B, nh, H, W, hd = v.shape
    h, w = outlook_grid(H, W, s)
    if tuple(attn.shape) != (B, nh, h, w, ks * ks, ks * ks):
        raise ValueError(f"attn must have shape {(B, nh, h, w, ks * ks, ks * ks)} for v of shape {tuple(v.shape)} "
                         f"with kernel_size={ks}, stride={s}; got {tuple(attn.shape)}")
    fn = _reference if impl == "reference" else _fast
    return counted("outlook_aggregate", B * nh * h * w * ks ** 4 * hd, fn, attn, v, ks, p, s)


def _reference(attn, v, ks, p, s):
    B, nh, H, W, hd = v.shape
    h, w = attn.shape[2:4]
    pt, pb, pl, pr = _extent_pads(H, W, h, w, ks, p, s)
    Hc, Wc = H + pt + pb, W + pl + pr
    x = v.permute(0, 1, 4, 2, 3).reshape(B, nh * hd, H, W)  # (B, C, H, W)
    x = F.pad(x, (pl, pr, pt, pb))  # (B, C, Hc, Wc)
    cols = F.unfold(x, ks, stride=s)  # (B, C*k*k, h*w)
    cols = cols.reshape(B, nh, hd, ks * ks, h * w).permute(0, 1, 4, 3, 2)  # (B, nh, h*w, k*k, hd)
    out = attn.reshape(B, nh, h * w, ks * ks, ks * ks) @ cols  # (B, nh, h*w, k*k, hd)
    out = out.permute(0, 1, 4, 3, 2).reshape(B, nh * hd * ks * ks, h * w)  # (B, C*k*k, h*w)
    out = F.fold(out, (Hc, Wc), ks, stride=s)  # (B, C, Hc, Wc)
    out = F.pad(out, (-pl, -pr, -pt, -pb))  # (B, C, H, W)
    return out.reshape(B, nh, hd, H, W).permute(0, 1, 3, 4, 2)  # (B, nh, H, W, hd)


def _fast(attn, v, ks, p, s):
    B, nh, H, W, hd = v.shape
    h, w = attn.shape[2:4]
    pt, pb, pl, pr = _extent_pads(H, W, h, w, ks, p, s)
    vp = F.pad(v, (0, 0, pl, pr, pt, pb))  # (B, nh, Hc, Wc, hd)
    he, we = (h - 1) * s + 1, (w - 1) * s + 1  # extent of one strided view of the canvas
    views = [vp[:, :, i:i + he:s, j:j + we:s] for i in range(ks) for j in range(ks)]  # k*k x (B, nh, h, w, hd)
    out = vp.new_zeros(vp.shape)  # (B, nh, Hc, Wc, hd)
    for m in range(ks * ks):
        a_m = attn[..., m, :]  # (B, nh, h, w, k*k)
        acc = a_m[..., 0, None] * views[0]
        for n in range(1, ks * ks):
            acc = acc + a_m[..., n, None] * views[n]  # (B, nh, h, w, hd)
        i, j = divmod(m, ks)
        out[:, :, i:i + he:s, j:j + we:s] += acc
    return F.pad(out, (0, 0, -pl, -pr, -pt, -pb))  # (B, nh, H, W, hd)
