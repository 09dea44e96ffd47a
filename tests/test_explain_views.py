"""What the recorded maps say and what the figures draw: query maps peak where the attention does, mean attention
distances of known locality, spectra at known frequencies, and figures whose panels hold exactly those arrays."""

import math

import pytest
import torch
from tiny_models import tiny

import visattn
from visattn.attention._common import AttentionPart
from visattn.explain import AttentionMap, mean_distance, query_map, record_attention, spectrum, views
from visattn.functional import outlook_aggregate

pytest.importorskip("matplotlib")


def one_hot(shape, index):
    t = torch.zeros(shape)
    t[index] = 1
    return t


def test_query_map_puts_each_weight_on_its_key():
    """One-hot maps of every spatial layout: the weight lands on the key cell the layout says."""
    window = AttentionMap("", AttentionPart("w", "window", (0, 1), (5, 7), (6, 8), window=2),
                          one_hot((1, 1, 12, 4, 4), (0, 0, 6, 2, 1)))  # window (1, 2), query (1, 0), key (0, 1)
    assert query_map(window, 3, 4)[0].nonzero().tolist() == [[2, 5]]
    pooled = AttentionMap("", AttentionPart("g", "global", (0, 1), (6, 9), (3, 3), (2, 3)),
                          one_hot((1, 1, 54, 9), (0, 0, 1 * 9 + 1, 2 * 3 + 1)))  # key cell (2, 1): rows 4-5, cols 3-5
    heat = query_map(pooled, 1, 1)[0]
    assert heat[4:6, 3:6].eq(1 / 6).all() and heat.sum() == pytest.approx(1)
    dilated = AttentionMap("", AttentionPart("d", "dilated", (0, 1), (7, 8), kernel_size=3, dilation=2),
                           one_hot((1, 1, 7, 8, 9), (0, 0, 3, 3, 2)))  # neighbour (0, 2): offset (-2, +2)
    assert query_map(dilated, 3, 3)[0].nonzero().tolist() == [[1, 5]]
    outside = AttentionMap("", dilated.part, one_hot((1, 1, 7, 8, 9), (0, 0, 0, 0, 0)))  # a zero-padding key
    assert query_map(outside, 0, 0).sum() == 0


@pytest.mark.parametrize("k, p, s", [(3, 1, 1), (3, 1, 2), (2, 0, 2), (3, 0, 2)])
def test_outlook_query_map_is_the_aggregation_jacobian(k, p, s):
    """The effective weights of output pixel (y, x) on every value pixel are what outlook_aggregate does with them:
    aggregating one-hot values (one channel per pixel) gives the query maps of every pixel at once."""
    torch.manual_seed(0)
    H, W = 5, 6
    h, w = -(-H // s), -(-W // s)
    probs = torch.rand(1, 1, h, w, k * k, k * k, dtype=torch.float64).softmax(-1)
    basis = torch.eye(H * W, dtype=torch.float64).reshape(1, 1, H, W, H * W)  # value of pixel j: e_j
    jacobian = outlook_aggregate(probs, basis, k, p, s, impl="reference")[0, 0]  # (H, W, H*W)
    m = AttentionMap("", AttentionPart("o", "outlook", (0, 1), (H, W), (h, w), kernel_size=k, padding=p, stride=s),
                     probs)
    for y in range(H):
        for x in range(W):
            torch.testing.assert_close(query_map(m, y, x)[0], jacobian[y, x].reshape(H, W))


def test_mean_distance_is_bounded_by_the_neighbourhood():
    """MSDA kernel 3: dilation r keeps every head within r * sqrt(2) (map cells; times the stride in a backbone)."""
    block = visattn.MultiScaleDilatedAttention(24, 6, kernel_size=3, dilation=(1, 2, 3)).eval()
    with torch.no_grad(), record_attention(block) as maps:
        block(torch.randn(2, 9, 11, 24))
    for m, r in zip(maps, (1, 2, 3), strict=True):
        d = mean_distance(m)
        assert d.shape == (2,) and (d > 0).all() and (d <= r * math.sqrt(2) + 1e-6).all(), (r, d)
    model = tiny("dilateformer_tiny").eval()
    with torch.no_grad(), record_attention(model) as maps:
        model(torch.randn(1, 3, 64, 64))
    first = maps.find(block="stages.0.blocks.0.attn", part="dilation 1")[0]
    assert first.image_stride == (4.0, 4.0) and (mean_distance(first) <= 4 * math.sqrt(2) + 1e-6).all()


def test_mean_distance_of_known_maps():
    one = AttentionMap("", AttentionPart("d", "dilated", (0, 1), (4, 4), kernel_size=3, dilation=3),
                       one_hot((1, 1, 4, 4, 9), (slice(None), slice(None), slice(None), slice(None), 0)))
    assert mean_distance(one).item() == pytest.approx(3 * math.sqrt(2))  # every query reads offset (-3, -3)
    uniform = AttentionMap("", AttentionPart("w", "window", (0, 1), (4, 4), (4, 4), window=2),
                           torch.full((1, 1, 4, 4, 4), 0.25), image_stride=(2.0, 2.0))
    assert mean_distance(uniform).item() == pytest.approx(2 * (0 + 1 + 1 + math.sqrt(2)) / 4)
    block = visattn.MultiHeadSelfAttention(8, 2).eval()
    with torch.no_grad():
        block.qkv.weight[:8] = 0  # q = 0: uniform attention over the map
    with torch.no_grad(), record_attention(block) as maps:
        block(torch.randn(1, 3, 5, 8))
    ys, xs = torch.meshgrid(torch.arange(3.0), torch.arange(5.0), indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], 1)
    expected = torch.cdist(pos, pos).mean()
    torch.testing.assert_close(mean_distance(maps[0]), expected.repeat(2))


def test_spectrum_peaks_at_the_output_frequency():
    H, W = 8, 12
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    wave = torch.cos(2 * math.pi * (2 * ys / H + 3 * xs / W))  # frequency (2, 3)
    values = wave.reshape(1, 1, H * W, 1)  # each query reads itself (identity probabilities)
    m = AttentionMap("", AttentionPart("g", "global", (0, 1), (H, W), (H, W)), torch.eye(H * W)[None, None], values)
    s = spectrum(m)[0]
    peaks = sorted(divmod(int(i), W) for i in s.flatten().topk(2).indices)
    assert peaks == [(H // 2 - 2, W // 2 - 3), (H // 2 + 2, W // 2 + 3)]


def test_overlay_colours_the_cells_of_the_map():
    image = torch.zeros(3, 20, 24)
    heat = one_hot((4, 5), (1, 3))  # cells of 4x4 pixels: the map covers 16 x 20 of the image
    out = views.overlay(image, heat, stride=(4, 4), alpha=1.0)
    hot = views._colormap("jet")(1.0)[:3]
    cold = views._colormap("jet")(0.0)[:3]
    assert (abs(out[4:8, 12:16] - hot) < 1e-6).all() and (abs(out[0:4, 0:4] - cold) < 1e-6).all()
    assert (out[16:, :] == 0).all() and (out[:, 20:] == 0).all()  # beyond the map: the image


@pytest.fixture(scope="module")
def litv2_record():
    model = tiny("litv2_s").eval()
    image = torch.rand(3, 64, 64)
    with torch.no_grad(), record_attention(model) as maps:
        model(image[None] * 4 - 2)
    return image, maps


def panels(fig):
    return [(ax.get_title(), ax.images[0].get_array()) for ax in fig.axes if ax.images]


def test_query_figure_draws_the_query_maps(litv2_record, tmp_path):
    image, maps = litv2_record
    fig = views.query_figure(image, maps, [(40.0, 10.0)], max_heads=3, path=tmp_path / "q.png")
    drawn = panels(fig)
    expected = []
    for m in maps:  # one block per stage here (depth 1): every map, its first three heads
        heat = query_map(m, 40 // int(m.image_stride[0]), 10 // int(m.image_stride[1]))
        expected += [views.overlay(image, heat[h], m.image_stride) for h in range(min(3, len(m.heads)))]
    assert len(drawn) == len(expected)
    for (title, arr), exp in zip(drawn, expected, strict=True):
        assert abs(arr - exp).max() < 1e-6, title
    assert (tmp_path / "q.png").stat().st_size > 1000


def test_distance_and_hilo_figures(litv2_record, tmp_path):
    image, maps = litv2_record
    fig = views.distance_figure(maps, tmp_path / "d.png")
    points = sorted(tuple(p) for c in fig.axes[0].collections for p in c.get_offsets().tolist())
    expected = sorted((float(b), d) for b, _, _, d in views.distances(maps))
    assert len(points) == len(expected) == 4 + 8  # stage 2: 1 Hi-Fi + 3 Lo-Fi heads; stage 3: 8 Lo-Fi heads
    torch.testing.assert_close(torch.tensor(points), torch.tensor(expected))
    fig = views.hilo_figure(image, maps, (20.0, 30.0), tmp_path / "h.png")
    (_, hi), (_, lo), (_, hi_spec), (_, lo_spec) = panels(fig)
    hifi = maps.find(part="hifi")[-1]
    assert abs(hi - views.overlay(image, query_map(hifi, 20 // 16, 30 // 16).mean(0), hifi.image_stride)).max() < 1e-6
    assert torch.allclose(torch.as_tensor(hi_spec), torch.log1p(spectrum(hifi).mean(0)))
    with pytest.raises(ValueError, match="no recorded HiLo block"):
        views.hilo_figure(image, maps.find(part="lofi"), (0, 0))


def test_gradcam_figure_shows_each_class(tmp_path):
    image = torch.rand(3, 16, 16)
    cams = torch.rand(2, 16, 16)
    fig = views.gradcam_figure(image, cams, ["cat (0.9)", "dog (0.1)"], tmp_path / "g.png")
    (t0, a0), (t1, a1), (t2, a2) = panels(fig)
    assert (t1, t2) == ("cat (0.9)", "dog (0.1)")
    assert abs(a1 - views.overlay(image, cams[0])).max() < 1e-6
    assert abs(a0 - image.permute(1, 2, 0).numpy()).max() < 1e-6
    from matplotlib.image import imread

    assert imread(tmp_path / "g.png").ndim == 3
