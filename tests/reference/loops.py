"""Slow references written from the formulas in SPEC.md, with explicit loops over positions and windows.

They share no code with the library (no visattn kernels, no unfold/fold, no SDPA) so that a bug in the
library cannot hide in its own reference. Batch and head dimensions are vectorised; space is looped.
"""

from __future__ import annotations

import torch


def softmax_attention(q, k, v, scale):
    """q (..., N, hd), k/v (..., M, hd): one query at a time."""
    outs = []
    for i in range(q.shape[-2]):
        logits = (q[..., i, None, :] * k).sum(-1) * scale  # (..., M)
        w = torch.exp(logits - logits.max(-1, keepdim=True).values)
        w = w / w.sum(-1, keepdim=True)
        outs.append((w[..., None] * v).sum(-2))  # (..., hd)
    return torch.stack(outs, dim=-2)


def window_attention(q, k, v, ws, scale):
    """q/k/v (B, nh, H, W, hd), H and W multiples of ws."""
    B, nh, H, W, hd = q.shape
    out = torch.zeros_like(q)
    for a in range(0, H, ws):
        for b in range(0, W, ws):
            def tok(t, a=a, b=b):
                return t[:, :, a:a + ws, b:b + ws].reshape(B, nh, ws * ws, hd)
            o = softmax_attention(tok(q), tok(k), tok(v), scale)
            out[:, :, a:a + ws, b:b + ws] = o.reshape(B, nh, ws, ws, hd)
    return out


def dilated_attention(q, k, v, ks, r, scale):
    """Neighbours (i + a*r, j + b*r), a, b in [-(ks//2), ks//2]; outside: zero key (logit 0) and zero value."""
    B, nh, H, W, hd = q.shape
    out = torch.zeros_like(q)
    half = ks // 2
    for i in range(H):
        for j in range(W):
            keys, vals = [], []
            for a in range(-half, half + 1):
                for b in range(-half, half + 1):
                    ii, jj = i + a * r, j + b * r
                    if 0 <= ii < H and 0 <= jj < W:
                        keys.append(k[:, :, ii, jj])
                        vals.append(v[:, :, ii, jj])
                    else:
                        keys.append(torch.zeros_like(k[:, :, 0, 0]))
                        vals.append(torch.zeros_like(v[:, :, 0, 0]))
            K, V = torch.stack(keys, -2), torch.stack(vals, -2)  # (B, nh, k*k, hd)
            out[:, :, i, j] = softmax_attention(q[:, :, i, j, None], K, V, scale)[..., 0, :]
    return out


def outlook_aggregate(attn, v, ks, p, s):
    """attn (B, nh, h, w, k*k, k*k), v (B, nh, H, W, hd); window (a, b) starts at (a*s - p, b*s - p)."""
    B, nh, H, W, hd = v.shape
    h, w = attn.shape[2:4]
    out = torch.zeros_like(v)

    def val(y, x):
        return v[:, :, y, x] if 0 <= y < H and 0 <= x < W else torch.zeros_like(v[:, :, 0, 0])

    for a in range(h):
        for b in range(w):
            y0, x0 = a * s - p, b * s - p
            window = torch.stack([val(y0 + n // ks, x0 + n % ks) for n in range(ks * ks)], -2)  # (B, nh, k*k, hd)
            for m in range(ks * ks):
                y, x = y0 + m // ks, x0 + m % ks
                if 0 <= y < H and 0 <= x < W:
                    out[:, :, y, x] += (attn[:, :, a, b, m, :, None] * window).sum(-2)
    return out


def avg_cells(x, kh, kw, ceil=False):
    """Average (B, H, W, C) over kh x kw cells: floor mode drops the remainder, ceil mode averages partial cells."""
    B, H, W, C = x.shape
    rows = range(0, H, kh) if ceil else range(0, H - kh + 1, kh)
    cols = range(0, W, kw) if ceil else range(0, W - kw + 1, kw)
    out = torch.stack([torch.stack([x[:, a:a + kh, b:b + kw].mean(dim=(1, 2)) for b in cols], 1) for a in rows], 1)
    return out  # (B, H', W', C)


def linear(x, layer):
    w = layer.weight.reshape(layer.weight.shape[0], -1)
    y = torch.einsum("...i,oi->...o", x, w)
    return y + layer.bias if layer.bias is not None else y


def hilo(m, x):
    B, H, W, C = x.shape
    ws, hd = m.ws, m.head_dim
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    xp = torch.zeros(B, Hp, Wp, C, dtype=x.dtype)
    xp[:, :H, :W] = x
    outs = []
    if m.h_heads:
        qkv = linear(xp, m.h_qkv).reshape(B, Hp, Wp, 3, m.h_heads, hd).permute(3, 0, 4, 1, 2, 5)
        o = window_attention(qkv[0], qkv[1], qkv[2], ws, m.scale)[:, :, :H, :W]
        outs.append(linear(o.permute(0, 2, 3, 1, 4).reshape(B, H, W, -1), m.h_proj))
    if m.l_heads:
        q = linear(x, m.l_q).reshape(B, H * W, m.l_heads, hd).transpose(1, 2)
        src = avg_cells(xp, ws, ws) if ws > 1 else x
        kv = linear(src.reshape(B, -1, C), m.l_kv).reshape(B, -1, 2, m.l_heads, hd).permute(2, 0, 3, 1, 4)
        o = softmax_attention(q, kv[0], kv[1], m.scale)
        outs.append(linear(o.transpose(1, 2).reshape(B, H, W, -1), m.l_proj))
    return torch.cat(outs, -1)


def msda(m, x):
    B, H, W, C = x.shape
    G = len(m.dilation)
    nhg = m.num_heads // G
    qkv = linear(x, m.qkv).reshape(B, H, W, 3, G, nhg, m.head_dim).permute(3, 4, 0, 5, 1, 2, 6)
    outs = [dilated_attention(qkv[0, g], qkv[1, g], qkv[2, g], m.kernel_size, r, m.scale).permute(0, 2, 3, 1, 4)
            .reshape(B, H, W, -1) for g, r in enumerate(m.dilation)]
    return linear(torch.cat(outs, -1), m.proj)


def outlook(m, x):
    B, H, W, C = x.shape
    nh, hd, k, s = m.num_heads, m.head_dim, m.kernel_size, m.stride
    v = linear(x, m.v).reshape(B, H, W, nh, hd).permute(0, 3, 1, 2, 4)
    centre = avg_cells(x, s, s, ceil=True)
    h, w = centre.shape[1:3]
    a = linear(centre, m.attn).reshape(B, h, w, nh, k * k, k * k).permute(0, 3, 1, 2, 4, 5)
    a = torch.softmax(a * m.scale, dim=-1)
    out = outlook_aggregate(a, v, k, m.padding, s).permute(0, 2, 3, 1, 4).reshape(B, H, W, C)
    return linear(out, m.proj)


def depthwise(x, conv):
    """(B, H, W, C) zero-padded 'same' depthwise convolution with an odd kernel, as a sum of shifted maps."""
    B, H, W, C = x.shape
    k = conv.kernel_size[0]
    half = k // 2
    xp = torch.zeros(B, H + 2 * half, W + 2 * half, C, dtype=x.dtype)
    xp[:, half:half + H, half:half + W] = x
    out = conv.bias.clone().expand(B, H, W, C).clone()
    for a in range(k):
        for b in range(k):
            out = out + xp[:, a:a + H, b:b + W] * conv.weight[:, 0, a, b]
    return out


def clo(m, x):
    B, H, W, C = x.shape
    hd = m.head_dim
    outs = []
    for i in range(len(m.qkvs)):
        qkv = depthwise(linear(x, m.qkvs[i]), m.convs[i])
        q, k, v = qkv.chunk(3, -1)
        blk = m.act_blocks[i].act_block
        a = linear(torch.nn.functional.silu(linear(q * k, blk[0])), blk[2])
        outs.append(torch.tanh(a * m.scale) * v)
    if m.global_heads:
        gh, ws = m.global_heads, m.window_size
        q = linear(x, m.global_q).reshape(B, H * W, gh, hd).transpose(1, 2)
        src = avg_cells(x, min(ws, H), min(ws, W)) if ws > 1 else x
        kv = linear(src.reshape(B, -1, C), m.global_kv).reshape(B, -1, 2, gh, hd).permute(2, 0, 3, 1, 4)
        o = softmax_attention(q, kv[0], kv[1], m.scale)
        outs.append(o.transpose(1, 2).reshape(B, H, W, -1))
    return linear(torch.cat(outs, -1), m.proj)


# ---- attention maps (visattn.explain), from the same formulas, one query / window / position at a time ----------

def softmax_weights(q, k, scale):
    """q (..., N, hd), k (..., M, hd) -> (..., N, M), one query at a time."""
    rows = []
    for i in range(q.shape[-2]):
        logits = (q[..., i, None, :] * k).sum(-1) * scale  # (..., M)
        w = torch.exp(logits - logits.max(-1, keepdim=True).values)
        rows.append(w / w.sum(-1, keepdim=True))
    return torch.stack(rows, dim=-2)


def window_weights(q, k, ws, scale):
    """q/k (B, nh, H, W, hd), H and W multiples of ws -> (B, nh, nw, ws*ws, ws*ws), windows row-major."""
    B, nh, H, W, hd = q.shape
    out = []
    for a in range(0, H, ws):
        for b in range(0, W, ws):
            def tok(t, a=a, b=b):
                return t[:, :, a:a + ws, b:b + ws].reshape(B, nh, ws * ws, hd)
            out.append(softmax_weights(tok(q), tok(k), scale))
    return torch.stack(out, dim=2)


def dilated_weights(q, k, ks, r, scale):
    """(B, nh, H, W, k*k): neighbour a*k + b at ((a - k//2) r, (b - k//2) r); outside the map a zero key (logit 0)."""
    B, nh, H, W, hd = q.shape
    out = torch.zeros(B, nh, H, W, ks * ks, dtype=q.dtype)
    half = ks // 2
    for i in range(H):
        for j in range(W):
            logits = []
            for a in range(-half, half + 1):
                for b in range(-half, half + 1):
                    ii, jj = i + a * r, j + b * r
                    inside = 0 <= ii < H and 0 <= jj < W
                    logits.append((q[:, :, i, j] * k[:, :, ii, jj]).sum(-1) * scale if inside
                                  else torch.zeros(B, nh, dtype=q.dtype))
            out[:, :, i, j] = torch.softmax(torch.stack(logits, -1), -1)
    return out


def hilo_maps(m, x):
    B, H, W, C = x.shape
    ws, hd = m.ws, m.head_dim
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    xp = torch.zeros(B, Hp, Wp, C, dtype=x.dtype)
    xp[:, :H, :W] = x
    maps = []
    if m.h_heads:
        qkv = linear(xp, m.h_qkv).reshape(B, Hp, Wp, 3, m.h_heads, hd).permute(3, 0, 4, 1, 2, 5)
        maps.append(window_weights(qkv[0], qkv[1], ws, m.scale))
    if m.l_heads:
        q = linear(x, m.l_q).reshape(B, H * W, m.l_heads, hd).transpose(1, 2)
        src = avg_cells(xp, ws, ws) if ws > 1 else x
        kv = linear(src.reshape(B, -1, C), m.l_kv).reshape(B, -1, 2, m.l_heads, hd).permute(2, 0, 3, 1, 4)
        maps.append(softmax_weights(q, kv[0], m.scale))
    return maps


def msda_maps(m, x):
    B, H, W, C = x.shape
    G = len(m.dilation)
    qkv = linear(x, m.qkv).reshape(B, H, W, 3, G, m.num_heads // G, m.head_dim).permute(3, 4, 0, 5, 1, 2, 6)
    return [dilated_weights(qkv[0, g], qkv[1, g], m.kernel_size, r, m.scale)
            for g, r in enumerate(m.dilation)]


def outlook_maps(m, x):
    B, H, W, C = x.shape
    k = m.kernel_size
    centre = avg_cells(x, m.stride, m.stride, ceil=True)
    h, w = centre.shape[1:3]
    a = linear(centre, m.attn).reshape(B, h, w, m.num_heads, k * k, k * k).permute(0, 3, 1, 2, 4, 5)
    return [torch.softmax(a * m.scale, dim=-1)]


def clo_maps(m, x):
    B, H, W, C = x.shape
    hd = m.head_dim
    maps = []
    for i in range(len(m.qkvs)):
        q, k, _ = depthwise(linear(x, m.qkvs[i]), m.convs[i]).chunk(3, -1)
        blk = m.act_blocks[i].act_block
        maps.append(torch.tanh(linear(torch.nn.functional.silu(linear(q * k, blk[0])), blk[2]) * m.scale))
    if m.global_heads:
        gh, ws = m.global_heads, m.window_size
        q = linear(x, m.global_q).reshape(B, H * W, gh, hd).transpose(1, 2)
        src = avg_cells(x, min(ws, H), min(ws, W)) if ws > 1 else x
        kv = linear(src.reshape(B, -1, C), m.global_kv).reshape(B, -1, 2, gh, hd).permute(2, 0, 3, 1, 4)
        maps.append(softmax_weights(q, kv[0], m.scale))
    return maps
