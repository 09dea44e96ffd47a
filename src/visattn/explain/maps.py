"""What recorded attention maps say, as tensors: where one query attends on the block's map, how far each head
looks on average, and the branch outputs (HiLo's Hi-Fi and Lo-Fi) with their frequency content.

Positions are cells of the block's map, ``(y, x)`` row and column; distances are in input pixels (map cells times
the map's ``image_stride``), the unit of the standard mean-attention-distance plot.
"""

from __future__ import annotations

import torch

from ..functional import window_reverse
from .record import AttentionMap

SOFTMAX_LAYOUTS = ("window", "global", "dilated", "outlook", "class")
SPATIAL_LAYOUTS = ("window", "global", "dilated", "outlook")  # a query position and key positions on the map


def query_map(m: AttentionMap, y: int, x: int, batch: int = 0) -> torch.Tensor:
    """The weights with which the query at map cell ``(y, x)`` reads every cell of the block's map: ``(nh, H, W)``.

    Pooled keys spread their weight evenly over the cells they average (a row sums to 1 over the map, less the weight
    of zero-padding keys outside it). Outlook sums, over the windows that write ``(y, x)``, the weights of the values
    each window reads (the effective weights of the aggregation). A class token (``"class"``) has no position: its
    map is its attention to the tokens, whatever ``(y, x)``.
    """
    layout, part = m.layout, m.part
    if layout == "gate":
        raise ValueError(f"{m.block} {part.name}: gates weigh each position's own values and have no keys; use "
                         f"gate_strength(m) for where they open")
    if layout == "class":
        if part.key_size is None:
            raise ValueError(f"{m.block}: the class token's tokens were not a recorded map; its weights are "
                             f"m.probs[:, :, 0, 1:]")
        return m.probs[batch, :, 0, 1:].reshape(-1, *part.key_size)  # (nh, H, W)
    H, W = part.size
    if not (0 <= y < H and 0 <= x < W):
        raise ValueError(f"query ({y}, {x}) is outside the {H}x{W} map of {m.block or 'the block'}; "
                         f"choose 0 <= y < {H}, 0 <= x < {W}")
    probs = m.probs[batch]
    nh = probs.shape[0]
    out = probs.new_zeros(nh, H, W)
    if layout == "window":
        ws, Wp = part.window, part.key_size[1]
        window = (y // ws) * (Wp // ws) + x // ws
        weights = probs[:, window, (y % ws) * ws + x % ws].reshape(nh, ws, ws)  # (nh, ws, ws)
        y0, x0 = y - y % ws, x - x % ws
        out[:, y0:y0 + ws, x0:x0 + ws] = weights[:, :min(ws, H - y0), :min(ws, W - x0)]
    elif layout == "global":
        (h, w), (kh, kw) = part.key_size, part.key_cell
        cells = probs[:, y * W + x].reshape(nh, h, w) / (kh * kw)  # (nh, h, w)
        dense = cells.repeat_interleave(kh, dim=1).repeat_interleave(kw, dim=2)  # (nh, h*kh, w*kw)
        rows, cols = min(H, h * kh), min(W, w * kw)
        out[:, :rows, :cols] = dense[:, :rows, :cols]
    elif layout == "dilated":
        k, r = part.kernel_size, part.dilation
        for n in range(k * k):
            yy, xx = y + (n // k - k // 2) * r, x + (n % k - k // 2) * r
            if 0 <= yy < H and 0 <= xx < W:
                out[:, yy, xx] += probs[:, y, x, n]
    else:  # outlook
        k, p, s = part.kernel_size, part.padding, part.stride
        for a, b, m_index in _outlook_windows(y, x, part.key_size, k, p, s):
            y0, x0 = a * s - p, b * s - p
            for n in range(k * k):
                yy, xx = y0 + n // k, x0 + n % k
                if 0 <= yy < H and 0 <= xx < W:
                    out[:, yy, xx] += probs[:, a, b, m_index, n]
    return out


def _outlook_windows(y, x, grid, k, p, s):
    """(window row, window column, position m) of every outlook window that writes map cell (y, x)."""
    h, w = grid
    for a in range(h):
        for b in range(w):
            mi, mj = y - (a * s - p), x - (b * s - p)
            if 0 <= mi < k and 0 <= mj < k:
                yield a, b, mi * k + mj


def gate_strength(m: AttentionMap, batch: int = 0) -> torch.Tensor:
    """CloFormer's local gates: the mean ``|gate|`` of each head's channels at every cell, ``(nh, H, W)``."""
    if m.layout != "gate":
        raise ValueError(f"gate_strength reads local gates (layout 'gate'), not {m.layout!r}; use query_map")
    nh = m.part.heads[1] - m.part.heads[0]
    g = m.probs[batch]  # (H, W, nh*hd)
    H, W, C = g.shape
    return g.abs().reshape(H, W, nh, C // nh).mean(-1).permute(2, 0, 1)  # (nh, H, W)


def mean_distance(m: AttentionMap) -> torch.Tensor:
    """The mean attention distance of each head, ``(nh,)``: the probability-weighted distance from each query to
    the keys it reads, averaged over the queries on the map (and the batch), in input pixels.

    Keys outside the map that take part in the softmax (zero padding of dilated and window attention, outlook
    windows over the border) count at their geometric place; a pooled key sits at the centre of the cells it
    averages.
    """
    if m.layout not in SPATIAL_LAYOUTS:
        raise ValueError(f"{m.block} {m.part.name}: mean attention distance needs queries and keys on the map; "
                         f"layout {m.layout!r} has {'no keys' if m.layout == 'gate' else 'no query position'}")
    part, probs = m.part, m.probs.float()
    sy, sx = m.image_stride
    H, W = part.size
    if m.layout == "global":
        (h, w), (kh, kw) = part.key_size, part.key_cell
        qy, qx = _grid(H, W, 1, 1)
        ky, kx = _grid(h, w, kh, kw)
        dist = torch.hypot((qy[:, None] - ky[None]) * sy, (qx[:, None] - kx[None]) * sx)  # (N, M)
        return (probs * dist).sum(-1).mean(dim=(0, 2))
    if m.layout == "dilated":
        k, r = part.kernel_size, part.dilation
        off = (torch.arange(k) - k // 2).float() * r
        dist = torch.hypot(off[:, None] * sy, off[None, :] * sx).flatten()  # (k*k,)
        return (probs * dist).sum(-1).mean(dim=(0, 2, 3))
    if m.layout == "window":
        ws, (Hp, Wp) = part.window, part.key_size
        py, px = _grid(ws, ws, 1, 1)
        dist = torch.hypot((py[:, None] - py[None]) * sy, (px[:, None] - px[None]) * sx)  # (ws*ws, ws*ws)
        row = (probs * dist).sum(-1)  # (B, nh, nw, ws*ws)
        valid = _window_queries(H, W, Hp, Wp, ws)  # (nw, ws*ws)
        return (row * valid).sum(dim=(0, 2, 3)) / (valid.sum() * row.shape[0])
    k, p, s = part.kernel_size, part.padding, part.stride  # outlook
    py, px = _grid(k, k, 1, 1)
    dist = torch.hypot((py[:, None] - py[None]) * sy, (px[:, None] - px[None]) * sx)  # (k*k m, k*k n)
    row = (probs * dist).sum(-1)  # (B, nh, h, w, k*k)
    h, w = part.key_size
    ys = (torch.arange(h) * s - p)[:, None, None, None] + (torch.arange(k * k) // k)[None, None, None]
    xs = (torch.arange(w) * s - p)[None, :, None, None] + (torch.arange(k * k) % k)[None, None, None]
    valid = ((ys >= 0) & (ys < H) & (xs >= 0) & (xs < W)).reshape(h, w, k * k).float()  # rows written on the map
    return (row * valid).sum(dim=(0, 2, 3, 4)) / (valid.sum() * row.shape[0])


def _grid(h, w, kh, kw):
    """Centres (y, x) of an h x w grid of kh x kw cells, in map cells, flattened row-major."""
    y = (torch.arange(h).float() + 0.5) * kh - 0.5
    x = (torch.arange(w).float() + 0.5) * kw - 0.5
    return y[:, None].expand(h, w).flatten(), x[None, :].expand(h, w).flatten()


def _window_queries(H, W, Hp, Wp, ws):
    """1 for window positions inside the H x W map, 0 for the zero padding: (nw, ws*ws)."""
    inside = torch.zeros(Hp, Wp)
    inside[:H, :W] = 1
    win = inside.reshape(Hp // ws, ws, Wp // ws, ws).transpose(1, 2)  # (Hp/ws, Wp/ws, ws, ws)
    return win.reshape(-1, ws * ws)  # (nw, ws*ws)


def branch_output(m: AttentionMap) -> torch.Tensor:
    """What the recorded softmax computed, ``probs @ values`` laid back on the map: ``(B, nh, H, W, hd)`` (before
    the block's output projection). For HiLo: the Hi-Fi and the Lo-Fi heads' outputs."""
    if m.values is None or m.layout not in ("window", "global"):
        raise ValueError(f"{m.block} {m.part.name}: branch outputs are kept for window and global attention "
                         f"(layout {m.layout!r} here)")
    H, W = m.part.size
    out = m.probs @ m.values.to(m.probs.dtype)  # window: (B, nh, nw, ws*ws, hd); global: (B, nh, N, hd)
    if m.layout == "window":
        Hp, Wp = m.part.key_size
        return window_reverse(out, m.part.window, Hp, Wp)[:, :, :H, :W]  # (B, nh, H, W, hd)
    return out.reshape(*out.shape[:2], H, W, out.shape[-1])  # (B, nh, H, W, hd)


def spectrum(m: AttentionMap) -> torch.Tensor:
    """The centred 2-D Fourier magnitude of each head's output (mean over its channels and the batch): ``(nh, H, W)``,
    the zero frequency at ``(H // 2, W // 2)``. LITv2 shows these per branch: Hi-Fi heads keep high frequencies
    (bright away from the centre), Lo-Fi heads keep the low ones."""
    out = branch_output(m).float()  # (B, nh, H, W, hd)
    mag = torch.fft.fft2(out, dim=(2, 3)).abs()  # (B, nh, H, W, hd)
    return torch.fft.fftshift(mag.mean(dim=(0, 4)), dim=(1, 2))  # (nh, H, W)
