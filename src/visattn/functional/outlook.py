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

import torch
import torch.nn.functional as F

from .. import _validate
from .._modes import attention_recorder, check, is_compiling, is_graph_exporting, records_grad, under_transform
from ._buffers import can_overwrite, dot_into
from ._counting import counted
from ._recompute import differentiable_grads


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
    if _compiled_strided(s):
        return _eager_outlook_aggregate(attn, v, ks, p, s, impl)
    _check_shapes(attn, v, ks, s)
    B, nh, H, W, hd = v.shape
    h, w = attn.shape[2:4]
    fn = _reference if impl == "reference" or under_transform() or is_graph_exporting() else _fast
    return counted("outlook_aggregate", B * nh * h * w * ks ** 4 * hd, fn, attn, v, ks, p, s)


def outlook_attention(logits, v, kernel_size: int = 3, padding: int = 1, stride: int = 1, scale: float = 1.0,
                      impl: str = "fast"):
    """``outlook_aggregate(softmax(logits * scale, dim=-1), v, ...)``: the softmax fused with the aggregation.

    Same arguments as :func:`outlook_aggregate`, with raw ``logits (B, nh, h, w, k*k, k*k)``. The fast path keeps
    only the normalised weights and v for backward and computes the softmax gradient in place.
    """
    _validate.impl(impl)
    if _compiled_strided(stride):
        return _eager_outlook_attention(logits, v, kernel_size, padding, stride, scale, impl)
    recorder = attention_recorder()
    if recorder is not None:  # visattn.explain: taken before the fast path may normalise the logits in place
        recorder.report("outlook", probabilities(logits, scale))
    if impl == "reference" or under_transform() or is_graph_exporting():  # plain differentiable ops
        return outlook_aggregate(probabilities(logits, scale), v, kernel_size, padding, stride, impl)
    if not records_grad(logits, v):
        ac = logits.permute(0, 1, 4, 5, 2, 3)  # (B, nh, k*k, k*k, h, w): softmax over a non-trailing axis
        if can_overwrite(ac) and scale == 1:  # eager inference on fresh logits: the softmax in place
            ac.sub_(ac.amax(dim=3, keepdim=True)).exp_()
            attn = ac.div_(ac.sum(dim=3, keepdim=True)).permute(0, 1, 4, 5, 2, 3)
        else:
            attn = (ac if scale == 1 else ac * scale).softmax(dim=3).permute(0, 1, 4, 5, 2, 3)
        return outlook_aggregate(attn, v, kernel_size, padding, stride, impl)
    ks = _validate.positive_int("kernel_size", kernel_size)
    _check_shapes(logits, v, ks, _validate.positive_int("stride", stride))
    B, nh, H, W, hd = v.shape
    h, w = logits.shape[2:4]

    def fused(a, vv, k, pp, ss):
        out = _Outlook.apply(a.permute(0, 1, 4, 5, 2, 3), vv.permute(0, 1, 4, 2, 3), k, pp, ss, scale)
        return out.permute(0, 1, 3, 4, 2)  # (B, nh, H, W, hd) view

    return counted("outlook_aggregate", B * nh * h * w * ks ** 4 * hd, fused, logits, v, ks, padding, stride)


def probabilities(logits, scale: float = 1.0):
    """The window weights of the reference path, ``softmax(logits * scale)`` over the last axis:
    ``(B, nh, h, w, k*k, k*k)``, indexed ``[..., m, n]`` as :func:`outlook_aggregate` takes them."""
    return (logits * scale).softmax(dim=-1)  # (B, nh, h, w, k*k, k*k)


def _compiled_strided(stride) -> bool:
    """Strided windows under ``torch.compile``: inductor's code for them (both paths: the strided fold of the fast
    one, col2im after the permuted window products of the reference one) corrupts the heap in torch 2.13 (VOLO-D1's
    outlooker, stride 2: double free at the first call), so the kernel runs eagerly behind a graph break
    (tests/test_compile.py holds VOLO to this). torch.export (``is_graph_exporting``) records the unfold / matmul /
    fold form instead: for ONNX ~100x fewer nodes and ~3x faster in onnxruntime than the unrolled offsets (RESULTS.md
    10). The TorchScript-based ONNX exporter records the unrolled offsets (its col2im needs constant sizes)."""
    return stride > 1 and is_compiling()


@torch.compiler.disable
def _eager_outlook_attention(*args):
    return outlook_attention(*args)


@torch.compiler.disable
def _eager_outlook_aggregate(*args):
    return outlook_aggregate(*args)


def _check_shapes(attn, v, ks, s):
    if v.dim() != 5 or attn.dim() != 6:
        raise ValueError(f"expected attn (B, nh, h, w, k*k, k*k) and v (B, nh, H, W, hd), got "
                         f"{tuple(attn.shape)} and {tuple(v.shape)}")
    B, nh, H, W, hd = v.shape
    h, w = outlook_grid(H, W, s)
    expected = (B, nh, h, w, ks * ks, ks * ks)
    for got, want in zip(attn.shape, expected, strict=True):  # per axis: symbolic sizes stay unguarded
        check(got == want, f"attn must have shape {expected} for v of shape {tuple(v.shape)} with "
                           f"kernel_size={ks}, stride={s}; got {tuple(attn.shape)}")


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
    """Channel-first memory order (B, nh, k*k, k*k, h, w) for the weights and (B, nh, hd, H, W) for the values,
    free of copies when the caller lays them out that way (as the module does). No unfold, no fold."""
    ac = attn.permute(0, 1, 4, 5, 2, 3)  # (B, nh, k*k, k*k, h, w)
    vc = v.permute(0, 1, 4, 2, 3)  # (B, nh, hd, H, W)
    if records_grad(attn, v):
        out = _Outlook.apply(ac, vc, ks, p, s, None)
    else:
        out = _relative_forward(_relative_weights(ac, ks, p), vc, ks) if s == 1 else _strided_forward(ac, vc, ks, p, s)
    return out.permute(0, 1, 3, 4, 2)  # (B, nh, H, W, hd) view


def _relative_boxes(ks, p, H, W):
    """For stride 1: (m, n, d, output box, window-grid box) of every weight; window m of centre c writes row
    y = c - p + mi, and n - m is the relative offset d of the value it reads."""
    D, r = 2 * ks - 1, ks - 1
    for mi in range(ks):
        y0, y1 = max(0, mi - p), min(H, H + mi - p)  # rows whose window centre y + p - mi is on the map
        for mj in range(ks):
            x0, x1 = max(0, mj - p), min(W, W + mj - p)
            if y0 >= y1 or x0 >= x1:
                continue
            for ni in range(ks):
                for nj in range(ks):
                    out_box = (slice(y0, y1), slice(x0, x1))
                    src_box = (slice(y0 + p - mi, y1 + p - mi), slice(x0 + p - mj, x1 + p - mj))
                    yield mi * ks + mj, ni * ks + nj, (ni - mi + r) * D + (nj - mj + r), out_box, src_box


def _relative_weights(ac, ks, p):
    """W_d[y] = sum_m attn[y + p - m, m, m + d]: (B, nh, (2k-1)^2, H, W) weight maps, one per relative offset."""
    B, nh, _, _, H, W = ac.shape
    weights = ac.new_zeros(B, nh, (2 * ks - 1) ** 2, H, W)
    for m, n, d, (ys, xs), (cy, cx) in _relative_boxes(ks, p, H, W):
        weights[:, :, d, ys, xs] += ac[:, :, m, n, cy, cx]
    return weights


def _relative_forward(weights, vc, ks):
    """Stride 1: out[y] = sum_d W_d[y] * v[y + d] over the (2k-1)^2 offsets: (2k-1)^2 instead of k^4
    multiply-adds per element, since the weight maps carry no channel factor."""
    H, W = vc.shape[-2:]
    D, r = 2 * ks - 1, ks - 1
    vp = F.pad(vc, (r, r, r, r))  # (B, nh, hd, H+2r, W+2r)
    out = weights[:, :, 0, None] * vp[..., :H, :W]  # (B, nh, hd, H, W)
    for d in range(1, D * D):
        di, dj = divmod(d, D)
        out.addcmul_(weights[:, :, d, None], vp[..., di:di + H, dj:dj + W])
    return out


def _strided_views(vc, ks, p, s, h, w):
    """v padded by p at the top/left and a fixed k at the bottom/right (always enough, and independent of the
    map's parity, so traced graphs do not specialise), with the strided window view boxes."""
    vp = F.pad(vc, (p, ks, p, ks))  # (B, nh, hd, H+p+k, W+p+k)
    he, we = (h - 1) * s + 1, (w - 1) * s + 1
    boxes = [(slice(i, i + he, s), slice(j, j + we, s)) for i in range(ks) for j in range(ks)]
    return vp, boxes


def _windows(t, boxes):
    """The k*k strided window views of a padded channel-first map, stacked for per-position matrix products:
    ``(B, nh, hd, Hc, Wc)`` -> ``(B, nh, h, w, k*k, hd)``."""
    stacked = torch.stack([t[..., ys, xs] for ys, xs in boxes], dim=-1)  # (B, nh, hd, h, w, k*k)
    return stacked.permute(0, 1, 3, 4, 5, 2)  # (B, nh, h, w, k*k, hd) view


def _strided_forward(ac, vc, ks, p, s):
    """Stride > 1: per window position, ``weights (k*k x k*k) @ window values (k*k x hd)`` as batched matrix products,
    then each window row added onto its strided place (the fold). The window rows go in groups whose gathered
    windows are no larger than the map itself: the windows and their products (each k*k/s^2 times the map) are the
    largest tensors of the block, and holding them for the whole grid at once made VOLO's peak memory exceed
    timm's (RESULTS.md 17)."""
    H, W = vc.shape[-2:]
    h, w = ac.shape[-2:]
    vp, boxes = _strided_views(vc, ks, p, s, h, w)
    canvas = None  # (B, nh, hd, H+p+k, W+p+k), allocated after the first products (a lower peak)
    groups = max(1, -(-(h * w * ks * ks) // max(H * W, 1)))  # windows / map, rounded up: k*k/s^2 -> 3 for VOLO
    step = max(1, -(-h // groups))  # window rows per group
    for i0 in range(0, h, step):
        i1 = min(i0 + step, h)
        rows = [(slice(ys.start + i0 * s, ys.start + (i1 - 1) * s + 1, s), xs) for ys, xs in boxes]
        out = ac[..., i0:i1, :].permute(0, 1, 4, 5, 2, 3) @ _windows(vp, rows)  # (B, nh, i1-i0, w, k*k, hd)
        if canvas is None:
            canvas = torch.zeros_like(vp)
        for m, (ys, xs) in enumerate(rows):
            canvas[..., ys, xs] += out[..., m, :].permute(0, 1, 4, 2, 3)  # (B, nh, hd, i1-i0, w)
        del out
    return canvas[..., p:p + H, p:p + W]  # (B, nh, hd, H, W)


class _Outlook(torch.autograd.Function):
    """Outlook aggregation with an explicit backward (autograd of the in-place slice writes would clone the whole
    gradient once per write). With ``scale`` the input is raw logits and the softmax over the last window axis is
    fused in: only the normalised weights are kept, and the backward turns the weight gradient into the logit
    gradient in place. A backward that builds a graph (``create_graph=True``) recomputes with the differentiable
    unfold/fold path when the weights were the input; with the fused softmax (whose logits are not kept, to save
    memory) it raises instead of returning a wrong number."""

    @staticmethod
    def forward(ctx, ac, vc, ks, p, s, scale):
        attn = ac if scale is None else (ac if scale == 1 else ac * scale).softmax(dim=3)  # (B, nh, k*k, k*k, h, w)
        ctx.save_for_backward(attn, vc)
        ctx.ks, ctx.p, ctx.s, ctx.scale = ks, p, s, scale
        if s == 1:
            return _relative_forward(_relative_weights(attn, ks, p), vc, ks)
        return _strided_forward(attn, vc, ks, p, s)

    @staticmethod
    def backward(ctx, gout):
        attn, vc = ctx.saved_tensors
        ks, p, s, scale = ctx.ks, ctx.p, ctx.s, ctx.scale
        if torch.is_grad_enabled():  # create_graph: the gradient must itself be differentiable
            if scale is not None:
                raise RuntimeError("higher derivatives through the fused softmax of the fast outlook kernel are not "
                                   "supported (it keeps the weights, not the logits); build the block with "
                                   "impl='reference' for them (torch.func transforms work on both paths)")
            return (*differentiable_grads(_channel_first_reference, (attn, vc), (ks, p, s), gout),
                    None, None, None, None)
        gout = gout.contiguous()
        backward = _relative_backward if s == 1 else _strided_backward
        gattn, gv = backward(attn, vc, gout, ks, p, s)
        if scale is not None:  # softmax over axis 3: dL = A * (dA - sum_n A dA), in place
            dot = torch.zeros_like(attn[:, :, :, :1])
            for n in range(attn.shape[3]):
                dot.addcmul_(attn[:, :, :, n:n + 1], gattn[:, :, :, n:n + 1])
            gattn.sub_(dot).mul_(attn).mul_(scale)
        return gattn, gv, None, None, None, None


def _channel_first_reference(attn, vc, ks, p, s):
    """The unfold/fold path on channel-first operands."""
    out = _reference(attn.permute(0, 1, 4, 5, 2, 3), vc.permute(0, 1, 3, 4, 2), ks, p, s)  # (B, nh, H, W, hd)
    return out.permute(0, 1, 4, 2, 3)  # (B, nh, hd, H, W)


def _relative_backward(attn, vc, gout, ks, p, s):
    B, nh, hd, H, W = vc.shape
    D, r = 2 * ks - 1, ks - 1
    weights = _relative_weights(attn, ks, p)
    vp = F.pad(vc, (r, r, r, r))
    gweights = weights.new_empty(weights.shape)
    gvp = torch.zeros_like(vp)
    tmp = vp.new_empty(B, nh, hd, H, W)
    for d in range(D * D):
        di, dj = divmod(d, D)
        dot_into(gweights[:, :, d], gout, vp[..., di:di + H, dj:dj + W], tmp)
        gvp[..., di:di + H, dj:dj + W].addcmul_(weights[:, :, d, None], gout)
    del weights, vp, tmp
    gattn = gweights.new_zeros(attn.shape)  # (B, nh, k*k, k*k, H, W): a gather of the weight-map gradients
    for m, n, d, (ys, xs), (cy, cx) in _relative_boxes(ks, p, H, W):
        gattn[:, :, m, n, cy, cx] = gweights[:, :, d, ys, xs]
    return gattn, gvp[..., r:r + H, r:r + W]


def _strided_backward(attn, vc, gout, ks, p, s):
    """The two batched products of the forward, transposed: ``grad weights = grad windows @ values^T`` and
    ``grad values = weights^T @ grad windows``, the latter folded back onto the padded map."""
    h, w = attn.shape[-2:]
    H, W = vc.shape[-2:]
    vp, boxes = _strided_views(vc, ks, p, s, h, w)
    grad_windows = _windows(F.pad(gout, (p, ks, p, ks)), boxes)  # (B, nh, h, w, k*k, hd); outside the map: zero
    a = attn.permute(0, 1, 4, 5, 2, 3)  # (B, nh, h, w, k*k, k*k) view
    gattn = (grad_windows @ _windows(vp, boxes).transpose(-1, -2)).permute(0, 1, 4, 5, 2, 3)  # (B, nh, m, n, h, w)
    gwin = a.transpose(-1, -2) @ grad_windows  # (B, nh, h, w, k*k, hd)
    gvp = torch.zeros_like(vp)
    for n, (ys, xs) in enumerate(boxes):
        gvp[..., ys, xs] += gwin[..., n, :].permute(0, 1, 4, 2, 3)  # (B, nh, hd, h, w)
    return gattn.contiguous(), gvp[..., p:p + H, p:p + W]
