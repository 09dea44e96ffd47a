"""Deformable convolution against a loop reference written from the DCNv1 formula, plus reductions."""

import pytest
import torch
import torch.nn.functional as F

from visattn import DeformConv2d, deform_conv2d


def bilinear(img, y, x):
    """img (C, H, W) at real (y, x): zero outside, corners weighted by distance."""
    C, H, W = img.shape
    y0, x0 = int(torch.floor(y)), int(torch.floor(x))
    out = torch.zeros(C, dtype=img.dtype)
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            if 0 <= yy < H and 0 <= xx < W:
                out = out + img[:, yy, xx] * (1 - abs(y - yy)) * (1 - abs(x - xx))
    return out


def loop_reference(x, offset, weight, bias, stride, padding, dilation):
    B, C, H, W = x.shape
    Cout, _, kh, kw = weight.shape
    Ho, Wo = offset.shape[2:]
    out = torch.zeros(B, Cout, Ho, Wo, dtype=x.dtype)
    for b in range(B):
        for oy in range(Ho):
            for ox in range(Wo):
                acc = bias.clone()
                for a in range(kh):
                    for c in range(kw):
                        i = a * kw + c
                        y = oy * stride - padding + a * dilation + offset[b, 2 * i, oy, ox]
                        xx = ox * stride - padding + c * dilation + offset[b, 2 * i + 1, oy, ox]
                        acc = acc + weight[:, :, a, c] @ bilinear(x[b], y, xx)
                out[b, :, oy, ox] = acc
    return out


@pytest.mark.parametrize("k,s,p,d,hw", [(2, 2, 0, 1, (6, 5)), (3, 1, 1, 1, (4, 5)), (3, 2, 1, 2, (7, 6)),
                                        (2, 2, 0, 1, (1, 3))])
def test_matches_loop_reference(k, s, p, d, hw):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *hw, dtype=torch.float64, generator=g)
    weight = torch.randn(4, 3, k, k, dtype=torch.float64, generator=g)
    bias = torch.randn(4, dtype=torch.float64, generator=g)
    Ho = (hw[0] + 2 * p - d * (k - 1) - 1) // s + 1
    Wo = (hw[1] + 2 * p - d * (k - 1) - 1) // s + 1
    offset = 1.5 * torch.randn(2, 2 * k * k, Ho, Wo, dtype=torch.float64, generator=g)  # some samples leave the map
    out = deform_conv2d(x, offset, weight, bias, s, p, d)
    torch.testing.assert_close(out, loop_reference(x, offset, weight, bias, s, p, d))


def test_zero_offsets_reduce_to_a_plain_convolution():
    x = torch.randn(2, 5, 9, 8, dtype=torch.float64)
    w, b = torch.randn(6, 5, 3, 3, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    offset = torch.zeros(2, 18, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(deform_conv2d(x, offset, w, b, 2, 1, 1), F.conv2d(x, w, b, 2, 1))


def test_integer_offsets_shift_the_sampling_grid():
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    w = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    offset = torch.zeros(1, 8, 4, 4, dtype=torch.float64)
    offset[:, 1::2] = 1.0  # every tap one column to the right
    shifted = F.pad(x[..., 1:], (0, 1))
    torch.testing.assert_close(deform_conv2d(x, offset, w, None, 2), F.conv2d(shifted, w, None, 2))


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(2, 2, 2, 2, dtype=torch.float64, generator=g, requires_grad=True)
    # keep samples away from integer positions, where bilinear interpolation has kinks
    offset = (0.3 + 0.4 * torch.rand(1, 8, 2, 2, dtype=torch.float64, generator=g)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, o, ww: deform_conv2d(a, o, ww, None, 2), (x, offset, w))


def test_module_starts_as_a_convolution_and_checks_shapes():
    layer = DeformConv2d(3, 4, 2, stride=2)
    x = torch.randn(1, 3, 6, 6)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight, layer.bias, 2))
    with pytest.raises(ValueError, match="offset must have shape"):
        deform_conv2d(x, torch.zeros(1, 8, 2, 2), layer.weight, stride=2)
    with pytest.raises(ValueError, match="weight expects 3 input channels"):
        deform_conv2d(torch.randn(1, 2, 6, 6), torch.zeros(1, 8, 3, 3), layer.weight, stride=2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_samples_where_float64_does(dtype, request):
    """Positions and flat indices are not computed in the input's dtype: in bfloat16 a 46x46 map sampled at
    fractional offsets read the wrong pixels (relative error 1.4), in float16 the flat index of the last pixel
    rounded past the map (an index error on the CPU, a device-side assert on CUDA: seen on an H200)."""
    if dtype == torch.bfloat16:
        request.getfixturevalue("bf16")
    torch.manual_seed(0)
    x = torch.randn(1, 8, 46, 46, dtype=torch.float64)
    offset = torch.randn(1, 8, 23, 23, dtype=torch.float64) * 3  # 2x2 taps, stride 2: (1, 2*4, 23, 23)
    weight, bias = torch.randn(16, 8, 2, 2, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    # the reference in float64 from the half-precision inputs, so that only the kernel's own rounding differs
    xh, oh, wh, bh = (t.to(dtype) for t in (x, offset, weight, bias))
    expected = deform_conv2d(*(t.double() for t in (xh, oh, wh, bh)), stride=2)
    out = deform_conv2d(xh, oh, wh, bh, stride=2)
    assert out.dtype == dtype
    rel = ((out.double() - expected).abs().max() / expected.abs().max()).item()
    assert rel < (2e-2 if dtype == torch.bfloat16 else 4e-3), rel
