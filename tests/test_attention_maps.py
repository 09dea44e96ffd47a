"""visattn.explain.record_attention: the recorded maps are the reference kernels' matrices (and the loop references'),
in each block's own structure, for every block and family at odd sizes; recording never changes an output, and
without it the fast path never builds a matrix."""

import importlib

import pytest
import torch
from tiny_models import SMALLEST, tiny

import visattn
from conftest import build
from reference import loops
from visattn import CloAttention, HiLoAttention, MultiScaleDilatedAttention, OutlookAttention
from visattn._modes import attention_recorder
from visattn.explain import record_attention
from visattn.explain.maps import SOFTMAX_LAYOUTS

LOOP_MAPS = {HiLoAttention: loops.hilo_maps, MultiScaleDilatedAttention: loops.msda_maps,
             OutlookAttention: loops.outlook_maps, CloAttention: loops.clo_maps}
ODD = [(1, 1), (5, 3), (7, 9)]


def recorded(block, x):
    with torch.no_grad(), record_attention(block) as maps:
        out = block(x)
    return out, maps


@pytest.mark.parametrize("hw", ODD, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_maps_equal_the_loop_references(config_name, hw):
    """Every paper block configuration (conftest.CONFIGS): the fast path's recorded maps are the loop references'
    weights, part by part, in float64."""
    block = build(config_name)
    x = torch.randn(2, *hw, block.dim, dtype=torch.float64)
    _, maps = recorded(block, x)
    expected = LOOP_MAPS[type(block)](block, x)
    assert [m.part for m in maps] == block.attention_parts(*hw)
    assert len(maps) == len(expected)
    for m, ref in zip(maps, expected, strict=True):
        torch.testing.assert_close(m.probs, ref, msg=lambda s, m=m: f"{m.part.name}: {s}")


@pytest.mark.parametrize("name", visattn.list_blocks())
@pytest.mark.parametrize("hw", [(5, 3), (9, 14)], ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_every_registered_block_records_the_reference_matrices(name, hw):
    """The maps recorded on the fast path are bit-for-bit those the reference path computes (the matrices of
    impl="reference"), and the softmax rows sum to 1."""
    torch.manual_seed(0)
    fast = visattn.create_block(name, 24, 6).double().eval()
    ref = visattn.create_block(name, 24, 6, impl="reference").double().eval()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, *hw, 24, dtype=torch.float64)
    out, maps = recorded(fast, x)
    ref_out, ref_maps = recorded(ref, x)
    torch.testing.assert_close(out, ref_out)
    assert len(maps) == len(ref_maps) == len(fast.attention_parts(*hw)) > 0
    for m, r in zip(maps, ref_maps, strict=True):
        assert m.part == r.part and torch.equal(m.probs, r.probs), m
        if m.layout in SOFTMAX_LAYOUTS:
            torch.testing.assert_close(m.probs.sum(-1), torch.ones_like(m.probs[..., 0]))
            assert (m.probs >= 0).all()
        else:  # CloFormer's gates: tanh
            assert m.probs.abs().max() <= 1


def test_window_and_global_maps_rebuild_the_kernel_outputs():
    """probs @ values of a recorded map is what the kernel computed: the baselines (window, SRA, MHSA) rebuilt from
    their maps through their output projection."""
    from visattn.explain import branch_output

    torch.manual_seed(0)
    for name in ("window", "sra", "mhsa"):
        block = visattn.create_block(name, 24, 6).double().eval()
        x = torch.randn(2, 11, 6, 24, dtype=torch.float64)
        out, maps = recorded(block, x)
        (m,) = maps
        heads = branch_output(m)  # (B, nh, H, W, hd)
        rebuilt = block.proj(heads.permute(0, 2, 3, 1, 4).reshape(2, 11, 6, 24))
        torch.testing.assert_close(rebuilt, out, msg=name)


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "autograd"])
def test_recording_never_changes_an_output(grad):
    """Exact equality, recorded or not: every registered block's fast path and every family (eager inference
    reuses buffers, which a forward hook would have changed: the recorder uses pre-hooks only)."""
    torch.manual_seed(0)
    x = torch.randn(2, 7, 9, 24)
    for name in visattn.list_blocks():
        block = visattn.create_block(name, 24, 6).eval()
        with torch.set_grad_enabled(grad):
            plain = block(x)
            with record_attention(block) as maps:
                again = block(x)
        assert len(maps) and torch.equal(plain, again), name
    images = torch.randn(1, 3, 67, 45)
    for name in SMALLEST:
        model = tiny(name).eval()
        with torch.set_grad_enabled(grad):
            plain = model(images)
            with record_attention(model) as maps:
                again = model(images)
        assert len(maps) and torch.equal(plain, again), name


def test_fast_path_builds_no_matrix_without_recording(monkeypatch):
    """Without a recording the fast kernels never call the reference probabilities (the recorder is asked once per
    kernel call and answers None)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a probability matrix was built on the fast path")

    for kernel in ("attention", "dilated", "outlook"):  # the modules (their names are shadowed by the functions)
        monkeypatch.setattr(importlib.import_module(f"visattn.functional.{kernel}"), "probabilities", forbidden)
    assert attention_recorder() is None
    x = torch.randn(1, 7, 9, 24)
    for name in visattn.list_blocks():
        block = visattn.create_block(name, 24, 6).eval()
        block(x).sum().backward()  # autograd on
        with torch.no_grad():
            block(x)  # eager inference
    for name in SMALLEST:
        with torch.no_grad():
            tiny(name).eval()(torch.randn(1, 3, 64, 64))


def test_families_record_every_attention_block_with_stage_and_stride():
    """Every attention module of every family appears, part by part, with its stage and the stage's reduction; the
    maps equal those of the same model built with impl="reference" (float64: the two paths agree to rounding)."""
    images = torch.randn(1, 3, 67, 45, dtype=torch.float64)
    for name in SMALLEST:
        fast, ref = tiny(name).double().eval(), tiny(name, impl="reference").double().eval()
        _, maps = recorded(fast, images)
        _, ref_maps = recorded(ref, images)
        blocks = visattn.explain.record.attention_blocks(fast)
        assert maps.blocks() == list(blocks), name
        for m, r in zip(maps, ref_maps, strict=True):
            assert m.part == r.part
            torch.testing.assert_close(m.probs, r.probs, msg=lambda s, m=m, n=name: f"{n} {m.block} {m.part.name}: {s}")
            stage = m.stage
            assert stage is not None and m.image_stride == (fast.stage_info[stage]["reduction"],) * 2, m
        assert maps.image_size == (67, 45)
    volo = recorded(tiny("volo_d1").double().eval(), images)[1]
    (cls_map, _) = volo.find(layout="class")
    assert cls_map.part.key_size == volo.find(block="network.4.0.attn")[0].part.size  # the class token's grid


def test_one_block_of_a_model_and_wrapped_blocks():
    """A single block of a backbone, and a block inside ChannelsFirst in another network (stride from the image)."""
    model = tiny("litv2_s").eval()
    block = model.layers[2].blocks[0].attn
    with torch.no_grad(), record_attention(block) as maps:
        model(torch.randn(1, 3, 64, 64))
    assert maps.blocks() == [""] and [m.part.name for m in maps] == ["hifi", "lofi"]
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 4, 4), visattn.ChannelsFirst(visattn.create_block("clo", 16, 4)))
    with torch.no_grad(), record_attention(net) as maps:
        net(torch.randn(2, 3, 36, 20))
    assert maps.blocks() == ["1.block"] and all(m.image_stride == (4.0, 4.0) and m.stage is None for m in maps)


def test_recording_errors_name_the_fix():
    with pytest.raises(ValueError, match="holds no visattn attention block"), record_attention(torch.nn.Linear(2, 2)):
        pass
    with pytest.raises(TypeError, match="nn.Module"), record_attention("litv2_s"):
        pass
    block = visattn.create_block("hilo", 16, 4)
    with pytest.raises(ValueError, match="already active"), record_attention(block), record_attention(block):
        pass
    assert attention_recorder() is None  # left clean after the error


@pytest.mark.filterwarnings("ignore")  # the TorchScript tracer's deprecation and constant warnings
def test_a_traced_forward_records_nothing_and_says_so():
    block = visattn.create_block("hilo", 16, 4).eval()
    x = torch.randn(1, 6, 6, 16)
    with pytest.raises(ValueError, match="record attention in eager mode"), record_attention(block):
        torch.jit.trace(block, x, check_trace=False)  # the kernels ask attention_recorder(): None while traced
